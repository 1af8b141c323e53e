/*
 * The input a streaming session holds per stream (`cache.encoder`: an encoder–decoder's
 * `encoder_hidden_states`): fed by the caller on the call that starts a stream's cache, held in
 * the store with the stream's other state after, and fed from there on every later call.
 */
import {
  BackendError,
  BatchSizeMismatchError,
  DTypeMismatchError,
  HostTensor,
  type LeafContext,
  type ResolvedLeaf,
  ShapeMismatchError,
  type StateBackend,
  type StreamKey,
  StructureMismatchError,
  formatPath,
} from "@statesaver/core"
import type { OrtTensor } from "../ort-backend.js"
import { dtypeOfOrt } from "./dtypes.js"
import * as E from "./either.js"
import { type FeedError, checkStacked, feedPath } from "./stream-feeds.js"

/**
 * Rows that hold no position, from a cache's bookkeeping leaf (host): a fixed cache's lengths
 * `[rows]`, or a growing cache's mask `[rows, past]`.
 */
export function emptyRows(bookkeeping: OrtTensor): number[] {
  const rows = bookkeeping.dims[0] as number
  const past = bookkeeping.dims.length === 1 ? 1 : (bookkeeping.dims[1] as number)
  const data = bookkeeping.data as Uint8Array | Int32Array
  const empty: number[] = []
  for (let r = 0; r < rows; r++) {
    let any = false
    for (let j = 0; j < past && !any; j++) any = data[r * past + j] !== 0
    if (!any) empty.push(r)
  }
  return empty
}

/**
 * Checks the held input's feeds of a call (`given[i]` of stream `keys[i]`) against the streams'
 * state (`empty`: the rows holding no position). A call whose streams all start feeds it in
 * every stream (same dtype as the leaf, its declared rank and fixed dims, one row each, the
 * same shape in every stream): `Right` of the feeds to stack. A call of streams under way feeds
 * none: `Right(undefined)`, the session feeds what it holds. A call mixing the two is refused.
 */
export function checkHeldFeeds(
  name: string,
  leaf: ResolvedLeaf,
  keys: readonly StreamKey[],
  given: readonly (OrtTensor | undefined)[],
  empty: readonly number[],
): E.Either<FeedError, OrtTensor[] | undefined> {
  const at = (row: number) => feedPath(keys[row] as StreamKey, name)
  const refused = refuseHeld(
    name,
    keys,
    empty,
    given.findIndex((t) => t !== undefined),
    given.findIndex((t) => t === undefined),
    at,
  )
  if (refused !== undefined) return E.left(refused)
  if (empty.length < keys.length) return E.right(undefined)
  for (const [i, t] of (given as OrtTensor[]).entries()) {
    const bad = heldMismatch(at(i), leaf, t, 1)
    if (bad !== undefined) return E.left(bad)
  }
  const list = keys.map((key, i) => ({ key, feeds: { [name]: given[i] as OrtTensor } }))
  return checkStacked(name, leaf.batchAxis, list)
}

/**
 * `checkHeldFeeds` for a batched call (`runBatch`): `given` holds a row per key along the
 * leaf's batch axis. `Right` of the feed when the call's streams all start, `Right(undefined)`
 * when none does (the session feeds what it holds).
 */
export function checkHeldBatch(
  name: string,
  leaf: ResolvedLeaf,
  keys: readonly StreamKey[],
  given: OrtTensor | undefined,
  empty: readonly number[],
): E.Either<FeedError, OrtTensor | undefined> {
  const path = formatPath([name])
  const fed = given === undefined ? -1 : 0
  const refused = refuseHeld(name, keys, empty, fed, -1 - fed, () => path)
  if (refused !== undefined) return E.left(refused)
  if (given === undefined) return E.right(undefined)
  const bad = heldMismatch(path, leaf, given, keys.length)
  if (bad !== undefined) return E.left(bad)
  const rows = given.dims[leaf.batchAxis]
  if (rows !== keys.length) {
    return E.left(
      new BatchSizeMismatchError({
        path,
        expected: keys.length,
        actual: rows as number,
        axis: leaf.batchAxis,
        detail: `one row per key, in the keys' order (${keys.length} keys)`,
      }),
    )
  }
  return E.right(given)
}

/**
 * The refusal of a call's held-input feeds, or undefined: streams under way feed none (`fed`, a
 * row that does, is -1), streams that start feed it (`missing`, a row that does not, is -1), and
 * a call does not mix the two. `at(row)` is the path of a row's feed.
 */
function refuseHeld(
  name: string,
  keys: readonly StreamKey[],
  empty: readonly number[],
  fed: number,
  missing: number,
  at: (row: number) => string,
): StructureMismatchError | undefined {
  if (empty.length === keys.length) {
    if (missing < 0) return undefined
    return new StructureMismatchError({
      path: at(missing),
      expected: `a feed for ${name} on the call that starts the stream's cache`,
      actual: "none",
      detail: "the session holds it per stream from then on",
    })
  }
  const r = empty[0]
  if (r !== undefined) {
    return new StructureMismatchError({
      path: feedPath(keys[r] as StreamKey, name),
      expected: `${name} held for every stream of a call under way (each fed when its cache started)`,
      actual: "none: the stream has not started",
      detail: "new or reset streams start in a call of their own, each feeding it",
    })
  }
  if (fed < 0) return undefined
  return new StructureMismatchError({
    path: at(fed),
    expected: `no feed for ${name}: the session holds it since the stream's cache started`,
    actual: "a feed",
    detail: "reset the stream to start it again with another",
  })
}

/**
 * A held-input feed's dtype or shape that does not fit its leaf (the batch axis aside: `rows`
 * expected there), or undefined.
 */
function heldMismatch(
  path: string,
  leaf: ResolvedLeaf,
  t: OrtTensor,
  rows: number,
): DTypeMismatchError | ShapeMismatchError | undefined {
  if (t.type !== leaf.dtype)
    return new DTypeMismatchError({ path, expected: leaf.dtype, actual: t.type })
  const declared = leaf.spec.shape
  const fits =
    t.dims.length === declared.length &&
    declared.every((d, a) => typeof d !== "number" || a === leaf.batchAxis || t.dims[a] === d)
  if (fits) return undefined
  return new ShapeMismatchError({
    path,
    expected: declared.map((d, a) => (a === leaf.batchAxis ? rows : d)),
    actual: t.dims,
  })
}

/**
 * The backend's own copy of `t` (a caller's feed of `rows` rows) for the state to hold: a CPU
 * feed goes through `fromHost` (uploaded where the backend keeps the leaf on a device), a device
 * feed is copied on the device by `gather`.
 */
export function copyFeed(
  backend: StateBackend<OrtTensor>,
  t: OrtTensor,
  leaf: LeafContext,
  rows: number,
): E.Either<BackendError, OrtTensor> {
  try {
    if (t.location === "cpu") {
      const host = new HostTensor(dtypeOfOrt(t.type), t.dims, t.data as HostTensor["data"])
      return E.right(backend.fromHost(host, leaf))
    }
    return E.right(
      backend.gather(
        t,
        Array.from({ length: rows }, (_, r) => r),
        leaf,
      ),
    )
  } catch (cause) {
    return E.left(
      new BackendError({ backend: backend.name, operation: "copy", path: leaf.path, cause }),
    )
  }
}
