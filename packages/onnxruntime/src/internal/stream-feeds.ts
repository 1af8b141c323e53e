// Checking the arguments of `StreamingSession.run` and the batch axes of a streaming session:
// pure functions over the call's values and the session's layout, run before anything is gathered.
import {
  BatchSizeMismatchError,
  DTypeMismatchError,
  type DisposedError,
  KeyError,
  OptionError,
  ShapeMismatchError,
  type StreamKey,
  StructureMismatchError,
  formatPath,
} from "@statesaver/core"
import type { OrtTensor } from "../ort-backend.js"
import type { Feeds, StreamFeeds } from "../session-types.js"
import * as E from "./either.js"
import { type Metadata, metadataBatchAxis } from "./metadata.js"
import { type TensorData, sameData } from "./rows.js"
import { type Rules, refuseDerivedFeeds } from "./rules.js"
import {
  refuseFeedTypes,
  refuseStateFeeds,
  refuseUnknownFeeds,
  setKey,
  wrongType,
} from "./session-state.js"
import { checkFeedRecord, isOrtTensor, isRecord, optionPath, own } from "./validate.js"

/** What a streaming session knows about its model's inputs. */
export interface FeedLayout {
  /** What the caller feeds: model inputs but the state inputs and those rules compute; rule feeds. */
  readonly inputs: readonly string[]
  readonly stateInputs: ReadonlySet<string>
  /** The session's input rules (a feed for an input they compute is refused). */
  readonly rules: Rules
  /** The element type the model declares for each input the caller feeds. */
  readonly types: ReadonlyMap<string, string>
  /** Batch axis of each non-state input and output; `null` for per-call values. */
  readonly batchAxes: Readonly<Record<string, number | null>>
  /**
   * The input the session holds per stream (`cache.encoder`): fed only when a stream's cache
   * starts, so checked by the session against its state, not stacked here.
   */
  readonly held?: string
}

/**
 * A checked call: keys in order, the feeds to stack by input, the per-call feeds, and each
 * stream's feed of the held input (`undefined` where not fed).
 */
export interface Call {
  readonly keys: StreamKey[]
  readonly batched: Map<string, OrtTensor[]>
  readonly shared: Record<string, OrtTensor>
  readonly held: readonly (OrtTensor | undefined)[]
}

/** Errors checking a call can return. */
export type FeedError =
  | KeyError
  | OptionError
  | StructureMismatchError
  | DisposedError
  | ShapeMismatchError
  | DTypeMismatchError
  | BatchSizeMismatchError

export const keyOk = (k: unknown): k is StreamKey =>
  typeof k === "string" || (typeof k === "number" && Number.isFinite(k))

/** Where a stream's feed is, in error paths: `alice.input`, `[3].X`. */
export const feedPath = (key: StreamKey, name: string): string => formatPath([key, name])

const STREAMS = "streams: an iterable of { key, feeds } or a Map from key to feeds"

/** The streams of a call as a list, each entry an object with a key (feeds checked later). */
export function listStreams(
  streams: unknown,
): E.Either<StructureMismatchError, { key: unknown; feeds: unknown }[]> {
  if (streams instanceof Map) {
    return E.right([...(streams as Map<unknown, unknown>)].map(([key, feeds]) => ({ key, feeds })))
  }
  const iterable =
    typeof streams === "object" &&
    streams !== null &&
    typeof (streams as { [Symbol.iterator]?: unknown })[Symbol.iterator] === "function"
  if (!iterable)
    return E.left(new StructureMismatchError({ path: "", expected: STREAMS, actual: streams }))
  let entries: unknown[]
  try {
    entries = [...(streams as Iterable<unknown>)]
  } catch (cause) {
    return E.left(
      new StructureMismatchError({
        path: "",
        expected: STREAMS,
        actual: streams,
        detail: `iterating it threw: ${cause instanceof Error ? cause.message : String(cause)}`,
        cause,
      }),
    )
  }
  const out: { key: unknown; feeds: unknown }[] = []
  for (let i = 0; i < entries.length; i++) {
    const entry = entries[i]
    if (typeof entry !== "object" || entry === null || !("key" in entry)) {
      return E.left(
        new StructureMismatchError({
          path: `streams[${i}]`,
          expected: "a stream: { key, feeds }",
          actual: entry,
        }),
      )
    }
    out.push({ key: entry.key, feeds: (entry as { feeds?: unknown }).feeds })
  }
  return E.right(out)
}

/** Checks the options of a run: a record whose `shared` is a record and `runOptions` one too. */
export function checkRunOptions(
  options: unknown,
  what = "run options ({ shared?, runOptions? })",
): E.Either<
  OptionError | StructureMismatchError | DisposedError,
  { shared: Feeds; runOptions: unknown }
> {
  if (options === undefined) return E.right({ shared: {}, runOptions: undefined })
  if (!isRecord(options)) {
    return E.left(new OptionError({ path: "options", expected: what, actual: options }))
  }
  const { shared, runOptions } = options
  if (shared !== undefined && !isRecord(shared)) {
    return E.left(
      new OptionError({
        path: "shared",
        expected: "a record of ORT tensors by input name",
        actual: shared,
      }),
    )
  }
  const feeds = checkFeedRecord(shared ?? {}, "shared", (name) => formatPath([name]))
  if (feeds._tag === "Left") return feeds
  if (runOptions !== undefined && !isRecord(runOptions)) {
    return E.left(
      new OptionError({
        path: "runOptions",
        expected: "ONNX Runtime run options (a record)",
        actual: runOptions,
      }),
    )
  }
  return E.right({ shared: feeds.right, runOptions })
}

const NOT_HELD: readonly (OrtTensor | undefined)[] = []

/** Checks keys and feeds of a call against the layout; nothing is gathered or run. */
export function checkCall(
  entries: readonly { key: unknown; feeds: unknown }[],
  sharedFeeds: Feeds,
  layout: FeedLayout,
): E.Either<FeedError, Call> {
  if (entries.length === 0)
    return E.left(new KeyError({ expected: "at least one stream", actual: [] }))
  const keys = entries.map(({ key }) => key) as StreamKey[]
  const bad = checkKeys(keys)
  if (bad !== undefined) return E.left(bad)
  // Each stream's feeds checked with no allocation; the error built only for a bad one (a call
  // checks all its streams, and most calls are good).
  for (const { key, feeds } of entries) {
    if (tensorRecord(feeds)) continue
    const k = key as StreamKey
    const checked = checkFeedRecord(
      feeds,
      () => formatPath([k]),
      (n) => feedPath(k, n),
    )
    if (checked._tag === "Left") return checked
  }
  // Checked: each entry is a key and a record of tensors.
  const list = entries as readonly StreamFeeds[]
  const sharedNames = Object.keys(sharedFeeds)
  const refused = refuseFeeds(sharedNames, layout)
  if (refused._tag === "Left") return refused
  for (const name of sharedNames) {
    if (layout.batchAxes[name] !== null) {
      return E.left(
        new StructureMismatchError({
          path: formatPath([name]),
          expected: `a feed in each stream (batch axis ${layout.batchAxes[name]})`,
          actual: "a shared feed",
        }),
      )
    }
  }
  for (const { key, feeds } of list) {
    if (feedsKnown(feeds, layout)) continue
    const refusedFeed = refuseFeeds(Object.keys(feeds), layout, (n) => feedPath(key, n))
    if (refusedFeed._tag === "Left") return refusedFeed
  }
  const batched = new Map<string, OrtTensor[]>()
  const shared: Record<string, OrtTensor> = {}
  const heldName = layout.held
  const held =
    heldName === undefined
      ? NOT_HELD
      : list.map(({ feeds }) => (own(feeds, heldName) ? feeds[heldName] : undefined))
  for (const name of layout.inputs) {
    if (name === layout.held) continue
    const axis = layout.batchAxes[name] ?? null
    if (axis === null) {
      const found = checkShared(name, list, sharedFeeds)
      if (found._tag === "Left") return found
      const wrong = wrongType(name, found.right, layout.types, () => formatPath([name]))
      if (wrong !== undefined) return E.left(wrong)
      setKey(shared, name, found.right)
      continue
    }
    const parts = checkStacked(name, axis, list)
    if (parts._tag === "Left") return parts
    // Every stream's feed has the first one's type (checkStacked).
    const first = list[0] as StreamFeeds
    const wrong = wrongType(name, parts.right[0] as OrtTensor, layout.types, () =>
      feedPath(first.key, name),
    )
    if (wrong !== undefined) return E.left(wrong)
    batched.set(name, parts.right)
  }
  return E.right({ keys, batched, shared, held })
}

/** Checks the options of `runBatch`: `checkRunOptions` without `shared` (its feeds hold them). */
export function checkBatchOptions(
  options: unknown,
): E.Either<OptionError | StructureMismatchError | DisposedError, unknown> {
  if (isRecord(options) && own(options, "shared")) {
    return E.left(
      new OptionError({
        path: "shared",
        expected: "no shared feeds: runBatch takes per-call inputs in its feeds",
        actual: options["shared"],
      }),
    )
  }
  const checked = checkRunOptions(options, "batch run options ({ runOptions? })")
  return checked._tag === "Left" ? checked : E.right(checked.right.runOptions)
}

/**
 * The refusal of feeds named `names` that are for a state input, an input a rule computes, or
 * no model input (`path(name)` in errors), or `Right`.
 */
function refuseFeeds(
  names: readonly string[],
  layout: FeedLayout,
  path?: (name: string) => string,
): E.Either<StructureMismatchError, void> {
  const refused = refuseStateFeeds(names, layout.stateInputs, path)
  if (refused._tag === "Left") return refused
  const computed = refuseDerivedFeeds(names, layout.rules, path)
  if (computed._tag === "Left") return computed
  return refuseUnknownFeeds(names, layout.inputs, path)
}

/** Up to this many keys are checked for repeats pairwise, without a Set. */
const FEW_KEYS = 32

/**
 * The error refusing a malformed or repeated key of `keys`, or undefined: a few keys are checked
 * for repeats pairwise, more through a Set.
 */
function checkKeys(keys: readonly unknown[]): KeyError | undefined {
  const seen = keys.length > FEW_KEYS ? new Set<unknown>() : undefined
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i]
    if (!keyOk(key)) return new KeyError({ expected: "string or finite number keys", actual: key })
    const repeated = seen === undefined ? i > 0 && keys.lastIndexOf(key, i - 1) >= 0 : seen.has(key)
    if (repeated) {
      return new KeyError({
        expected: "distinct keys",
        actual: key,
        detail: `${JSON.stringify(key)} twice`,
      })
    }
    seen?.add(key)
  }
  return undefined
}

/**
 * A checked batched call (`StreamingSession.runBatch`): the keys in order, the caller's feeds,
 * and its feed of the held input (`undefined` where not fed).
 */
export interface BatchCall {
  readonly keys: StreamKey[]
  readonly feeds: Feeds
  readonly held: OrtTensor | undefined
}

/**
 * Checks the keys and feeds of a batched call against the layout: distinct keys; a record of
 * live tensors for every input the caller feeds, none for state or derived inputs; each batched
 * input with one row per key along its batch axis. Nothing is gathered or run.
 */
export function checkBatchCall(
  keys: unknown,
  feeds: unknown,
  layout: FeedLayout,
): E.Either<FeedError, BatchCall> {
  if (!Array.isArray(keys) || keys.length === 0) {
    return E.left(
      new KeyError({
        expected: "an array of at least one stream key",
        actual: keys,
      }),
    )
  }
  const bad = checkKeys(keys)
  if (bad !== undefined) return E.left(bad)
  const record = checkFeedRecord(feeds, "feeds", (name) => formatPath([name]))
  if (record._tag === "Left") return record
  const given = record.right
  if (!feedsKnown(given, layout)) {
    const refused = refuseFeeds(Object.keys(given), layout)
    if (refused._tag === "Left") return refused
  }
  const typed = refuseFeedTypes(given, layout.types)
  if (typed._tag === "Left") return typed
  const rows = keys.length
  for (const name of layout.inputs) {
    if (name === layout.held) continue
    const t = own(given, name) ? given[name] : undefined
    const axis = layout.batchAxes[name] ?? null
    if (t === undefined) {
      return E.left(
        new StructureMismatchError({
          path: formatPath([name]),
          expected:
            axis === null
              ? `a feed for per-call input ${name}`
              : `a feed for input ${name}, one row per stream along axis ${axis}`,
          actual: "none",
        }),
      )
    }
    if (axis === null) continue
    if (t.dims.length <= axis) {
      return E.left(
        new ShapeMismatchError({
          path: formatPath([name]),
          expected: `rank > ${axis}`,
          actual: t.dims,
          detail: `batch axis ${axis}`,
        }),
      )
    }
    if (t.dims[axis] !== rows) {
      return E.left(
        new BatchSizeMismatchError({
          path: formatPath([name]),
          expected: rows,
          actual: t.dims[axis] as number,
          axis,
          detail: `one row per key, in the keys' order (${rows} keys)`,
        }),
      )
    }
  }
  const heldName = layout.held
  const held = heldName !== undefined && own(given, heldName) ? given[heldName] : undefined
  return E.right({ keys: keys as StreamKey[], feeds: given, held })
}

/** Whether `feeds` passes `checkFeedRecord`: a plain record of live tensors. */
function tensorRecord(feeds: unknown): boolean {
  if (!isRecord(feeds)) return false
  for (const name in feeds) {
    if (!own(feeds, name)) continue
    const t = feeds[name]
    if (!isOrtTensor(t) || t.location === "none") return false
  }
  return true
}

/** Whether every feed is for a model input the caller feeds (not state, not a rule's). */
function feedsKnown(feeds: Feeds, layout: FeedLayout): boolean {
  for (const name in feeds) {
    if (!own(feeds, name)) continue
    if (layout.stateInputs.has(name) || layout.rules.derived.has(name)) return false
    if (!layout.inputs.includes(name)) return false
  }
  return true
}

/** The feeds of a stacked input, one per stream: one row each, same dtype and shape. */
export function checkStacked(
  name: string,
  axis: number,
  list: readonly StreamFeeds[],
): E.Either<FeedError, OrtTensor[]> {
  const parts: OrtTensor[] = []
  let first: { key: StreamKey; t: OrtTensor } | undefined
  for (const { key, feeds } of list) {
    const t = own(feeds, name) ? feeds[name] : undefined
    const bad = checkPart(name, axis, key, t, list.length, first)
    if (bad !== undefined) return E.left(bad)
    if (first === undefined) first = { key, t: t as OrtTensor }
    parts.push(t as OrtTensor)
  }
  return E.right(parts)
}

/** The error refusing stream `key`'s feed `t` of a stacked input, or undefined. */
function checkPart(
  name: string,
  axis: number,
  key: StreamKey,
  t: OrtTensor | undefined,
  streams: number,
  first: { key: StreamKey; t: OrtTensor } | undefined,
): FeedError | undefined {
  {
    // Named only for an error: a path per stream and call would cost every run.
    const path = (): string => feedPath(key, name)
    if (t === undefined) {
      return new StructureMismatchError({
        path: path(),
        expected: `a feed for input ${name}`,
        actual: "none",
      })
    }
    if (t.dims.length <= axis) {
      return new ShapeMismatchError({
        path: path(),
        expected: `rank > ${axis}`,
        actual: t.dims,
        detail: `batch axis ${axis}`,
      })
    }
    if (t.dims[axis] !== 1) {
      return new BatchSizeMismatchError({
        path: path(),
        expected: 1,
        actual: t.dims[axis] as number,
        axis,
      })
    }
    if (streams > 1 && t.location !== "cpu") {
      return new StructureMismatchError({
        path: path(),
        expected: "a CPU tensor to stack",
        actual: t.location,
      })
    }
    if (first !== undefined) {
      if (t.type !== first.t.type)
        return new DTypeMismatchError({ path: path(), expected: first.t.type, actual: t.type })
      const dims = first.t.dims
      if (t.dims.length !== dims.length || t.dims.some((d, i) => d !== dims[i])) {
        return new ShapeMismatchError({
          path: path(),
          expected: dims,
          actual: t.dims,
          detail: `every stream's ${name} must have the shape of stream ${JSON.stringify(first.key)}'s`,
        })
      }
    }
  }
  return undefined
}

/** The one value of a per-call input: given once, or equal in every stream that gives it. */
function checkShared(
  name: string,
  list: readonly StreamFeeds[],
  sharedFeeds: Feeds,
): E.Either<FeedError, OrtTensor> {
  const given: [string, OrtTensor][] = []
  if (own(sharedFeeds, name)) given.push([formatPath([name]), sharedFeeds[name] as OrtTensor])
  for (const { key, feeds } of list) {
    if (own(feeds, name)) given.push([feedPath(key, name), feeds[name] as OrtTensor])
  }
  const [head, ...rest] = given
  if (head === undefined) {
    return E.left(
      new StructureMismatchError({
        path: formatPath([name]),
        expected: `a feed for per-call input ${name} (in options.shared or in the streams' feeds)`,
        actual: "none",
      }),
    )
  }
  const [, value] = head
  for (const [path, t] of rest) {
    if (t === value) continue
    if (t.type !== value.type)
      return E.left(new DTypeMismatchError({ path, expected: value.type, actual: t.type }))
    if (t.dims.length !== value.dims.length || t.dims.some((d, i) => d !== value.dims[i])) {
      return E.left(
        new ShapeMismatchError({
          path,
          expected: value.dims,
          actual: t.dims,
          detail: `per-call input ${name}`,
        }),
      )
    }
    const equal =
      t.location === "cpu" &&
      value.location === "cpu" &&
      sameData(t.data as TensorData, value.data as TensorData)
    if (!equal) {
      return E.left(
        new StructureMismatchError({
          path,
          expected: `the same value of per-call input ${name} in every stream`,
          actual: "a different value",
        }),
      )
    }
  }
  return E.right(value)
}

/**
 * The batch axis of every non-state input and output: `given` (the `batchAxes` option) first,
 * else the metadata (see `metadataBatchAxis`). `Left(OptionError)` for a name that is not a
 * non-state input or output, or an axis that is not an integer in [0, rank) or `null`.
 */
export function resolveBatchAxes(
  names: readonly string[],
  metadata: readonly Metadata[],
  batchDim: string,
  given: unknown,
): E.Either<OptionError, Record<string, number | null>> {
  if (given !== undefined && !isRecord(given)) {
    return E.left(
      new OptionError({
        path: "batchAxes",
        expected: "a record of batch axes (or null) by input or output name",
        actual: given,
      }),
    )
  }
  const overrides = given ?? {}
  for (const name of Object.keys(overrides)) {
    if (!names.includes(name)) {
      return E.left(
        new OptionError({
          path: optionPath("batchAxes", name),
          expected: "the name of a non-state input or output of the model",
          actual: name,
          detail: `names: ${names.join(", ")}`,
        }),
      )
    }
  }
  const axes: Record<string, number | null> = {}
  for (const name of names) {
    const meta = metadata.find((m) => m.name === name)
    const axis = own(overrides, name) ? overrides[name] : metadataBatchAxis(meta, batchDim)
    const rank = meta !== undefined && meta.isTensor ? meta.shape.length : undefined
    if (
      axis !== null &&
      (typeof axis !== "number" ||
        !Number.isSafeInteger(axis) ||
        axis < 0 ||
        (rank !== undefined && axis >= rank))
    ) {
      return E.left(
        new OptionError({
          path: optionPath("batchAxes", name),
          expected: `a batch axis in [0, ${rank ?? "rank"}), or null for a per-call value`,
          actual: axis,
        }),
      )
    }
    Object.defineProperty(axes, name, {
      value: axis,
      enumerable: true,
      writable: true,
      configurable: true,
    })
  }
  return E.right(axes)
}
