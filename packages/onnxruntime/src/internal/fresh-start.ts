/*
 * New conversations joining a streaming session with a growing cache: a call whose streams all
 * hold no position runs as the store's first run did (every growing dim at 0, so the step runs
 * without the cache, and an encoder–decoder computes their cross-attention caches), and its state
 * outputs are then padded back to the store's sizes (positions first, masked after).
 */
import {
  BackendError,
  type ResolvedLeaf,
  ShapeMismatchError,
  type StateBackend,
  allocateData,
  formatPath,
} from "@statesaver/core"
import type { OrtRuntime, OrtTensor } from "../ort-backend.js"
import * as E from "./either.js"
import { leafContext, setKey } from "./session-state.js"

/** Whether a growing cache's mask leaf (host, `[rows, past]`) has a past but no position set. */
export function noPositions(mask: OrtTensor): boolean {
  if ((mask.dims[1] as number) === 0) return false
  const data = mask.data as Uint8Array
  for (let i = 0; i < data.length; i++) if (data[i] !== 0) return false
  return true
}

/**
 * The gathered state with every growing dim at 0: new empty CPU tensors in place of the leaves
 * that have one, pushed to `made` for the caller to free after the run.
 */
export function emptyGrowing(
  ort: OrtRuntime,
  leaves: readonly ResolvedLeaf[],
  state: Readonly<Record<string, OrtTensor>>,
  made: OrtTensor[],
): Record<string, OrtTensor> {
  const out: Record<string, OrtTensor> = {}
  for (const leaf of leaves) {
    const name = leaf.path[0] as string
    const t = state[name] as OrtTensor
    if (leaf.growing.size === 0) {
      setKey(out, name, t)
      continue
    }
    const dims = t.dims.map((d, a) => (leaf.growing.has(a) ? 0 : d))
    const empty = new ort.Tensor(
      leaf.dtype as "float32",
      allocateData(leaf.dtype, 0) as Float32Array,
      dims,
    )
    made.push(empty)
    setKey(out, name, empty)
  }
  return out
}

/**
 * `next` with each leaf shorter than the store along a growing dim padded to the store's size:
 * a new tensor (from the backend, at the leaf's init) holding the leaf's positions first. The
 * padded tensors are pushed to `made` (the caller frees them unless the store takes them); the
 * shorter ones are freed. A leaf of `sameLength` (a kept cross-attention cache, which no mask
 * covers) must have the store's length once the store holds one: a `ShapeMismatchError` naming
 * it, nothing padded or freed. A backend that throws is a `BackendError`; what this call padded
 * is in `made` then.
 */
export function padToStore(
  backend: StateBackend<OrtTensor>,
  leaves: readonly ResolvedLeaf[],
  next: Readonly<Record<string, OrtTensor>>,
  sizes: Readonly<Record<string, number>>,
  sameLength: ReadonlySet<string>,
  made: OrtTensor[],
): E.Either<ShapeMismatchError | BackendError, Record<string, OrtTensor>> {
  for (const leaf of leaves) {
    const name = leaf.path[0] as string
    if (!sameLength.has(name)) continue
    const t = next[name] as OrtTensor
    for (const [axis, dim] of leaf.growing) {
      const size = sizes[dim] ?? 0
      if (size > 0 && t.dims[axis] !== size) {
        return E.left(
          new ShapeMismatchError({
            path: formatPath([name]),
            expected: `${size} positions along ${dim}, the length of the streams this session holds`,
            actual: t.dims[axis] as number,
            detail:
              "a session holds one encoder length (no mask covers the cross-attention cache): give streams of another length a session of their own",
          }),
        )
      }
    }
  }
  const out: Record<string, OrtTensor> = {}
  for (const leaf of leaves) {
    const name = leaf.path[0] as string
    let t = next[name] as OrtTensor
    const context = leafContext(leaf)
    for (const [axis, dim] of leaf.growing) {
      const size = sizes[dim] ?? 0
      if ((t.dims[axis] as number) >= size) continue
      let padded: OrtTensor | undefined
      try {
        padded = backend.allocate(
          t.dims.map((d, a) => (a === axis ? size : d)),
          leaf.dtype,
          context,
        )
        ;(backend.writeAt as NonNullable<typeof backend.writeAt>)(
          padded,
          axis,
          new Array<number>(t.dims[leaf.batchAxis] as number).fill(0),
          t,
          context,
        )
      } catch (cause) {
        if (padded !== undefined) backend.dispose(padded)
        return E.left(
          new BackendError({
            backend: backend.name,
            operation: "writeAt",
            path: leaf.pathString,
            cause,
          }),
        )
      }
      const shorter = made.indexOf(t)
      if (shorter >= 0) {
        made.splice(shorter, 1)
        backend.dispose(t)
      } else t.dispose()
      made.push(padded)
      t = padded
    }
    setKey(out, name, t)
  }
  return E.right(out)
}
