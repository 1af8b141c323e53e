import {
  BackendError,
  BatchSizeMismatchError,
  BusyError,
  DTypeMismatchError,
  type Dim,
  DisposedError,
  type Init,
  KeyError,
  ShapeMismatchError,
  type Snapshot,
  type StateBackend,
  type StateError,
  type StateStore,
  type StateStoreOptions,
  type StateTree,
  type StreamKey,
  StructureMismatchError,
  createStateStore,
  disposeTree,
  formatPath,
} from "@statesaver/core"
import * as E from "fp-ts/lib/Either.js"
import type * as common from "onnxruntime-common"
import { metadataBatchAxis } from "./internal/metadata.js"
import { type TensorData, copyData, sameData, sliceRow, stackRows } from "./internal/rows.js"
import {
  copyFeeds,
  deriveSessionState,
  refuseStateFeeds,
  setKey,
} from "./internal/session-state.js"
import type { OrtRuntime, OrtTensor } from "./ort-backend.js"
import type { StatePair } from "./state-pairing.js"
import type { Feeds, OrtSession } from "./stateful-session.js"

/**
 * Options of `createStreamingSession`.
 *
 * @category sessions
 * @since 0.1.0
 */
export interface StreamingSessionOptions extends Pick<
  StateStoreOptions<OrtTensor>,
  "capacity" | "initialSlots" | "idleTtlMs" | "onEvict" | "clock"
> {
  readonly session: OrtSession
  /** The runtime module (the one given to `ortBackend`): stacked feeds and per-stream outputs are its tensors. */
  readonly ort: OrtRuntime
  /** Holds the streams' state: `ortBackend({ ort })`. */
  readonly backend: StateBackend<OrtTensor>
  /** State pairs, output name → input name, that override the naming conventions. */
  readonly pairs?: Readonly<Record<string, string>>
  /** Name of the batch dim in the model's metadata. Default: the first of `batch`, `batch_size`, `N` found. */
  readonly batchDim?: string
  /** Sizes of other named dims of the state (fixed in a store). Absent ones are 0. */
  readonly dims?: Readonly<Record<string, number>>
  /** Init of state inputs, by input name; zeros otherwise. */
  readonly init?: Readonly<Record<string, Init>>
  /** Shapes that replace the metadata of state inputs, by input name (for models with unnamed dims). */
  readonly shapes?: Readonly<Record<string, readonly Dim[]>>
  /**
   * Batch axis of non-state inputs and outputs, by name, overriding the metadata; `null` for a
   * per-call value (shared by every stream, not stacked).
   */
  readonly batchAxes?: Readonly<Record<string, number | null>>
}

/**
 * One stream's part of a batched run: its key and its feeds, each with one row along the
 * input's batch axis.
 *
 * @category sessions
 * @since 0.1.0
 */
export interface StreamFeeds {
  readonly key: StreamKey
  readonly feeds: Feeds
}

/**
 * Options of `StreamingSession.run`.
 *
 * @category sessions
 * @since 0.1.0
 */
export interface StreamingRunOptions {
  /** Per-call feeds (inputs without a batch axis, like Silero's `sr`), given once for all streams. */
  readonly shared?: Feeds
  readonly runOptions?: common.InferenceSession.RunOptions
}

/**
 * Many streams through one `InferenceSession`: each `run` stacks the given streams' feeds into
 * one batch, gathers their state from a `StateStore`, runs the model once, scatters the new
 * state back and splits the outputs per stream. Streams that skip a call keep their state;
 * a new key starts at init. While a run is in flight every other call is refused with a
 * `BusyError`.
 *
 * @category sessions
 * @since 0.1.0
 */
export interface StreamingSession extends Disposable {
  readonly session: OrtSession
  /** The state pairs, in output order. */
  readonly pairs: readonly StatePair[]
  /** The store that holds every stream's state, keyed by state input name. */
  readonly store: StateStore<OrtTensor>
  /** Batch axis of each non-state input and output; `null` for per-call values. */
  readonly batchAxes: Readonly<Record<string, number | null>>
  /** Number of streams held. */
  readonly size: number
  /** True while a `run` has not resolved. */
  readonly busy: boolean
  readonly disposed: boolean
  has(key: StreamKey): boolean
  /** Keys held, least recently used first. */
  keys(): StreamKey[]
  /**
   * Runs the model once for every stream given and resolves to each stream's outputs, in the
   * order given, with size 1 along their batch axis (as a `StatefulSession` of batch 1 returns
   * them); the caller owns them. The feeds stay the caller's. On `Left` no stream's state changed.
   */
  run(
    streams: Iterable<StreamFeeds> | ReadonlyMap<StreamKey, Feeds>,
    options?: StreamingRunOptions,
  ): Promise<E.Either<StateError, Map<StreamKey, Record<string, OrtTensor>>>>
  /** Sets the streams' state back to init before their next run (the keys must be held). */
  reset(keys: readonly StreamKey[]): E.Either<StateError, void>
  /** Forgets a stream (it ended); `onEvict` is not called. Resolves whether it was held. */
  delete(key: StreamKey): E.Either<StateError, boolean>
  /** One stream's state as snapshot bytes of batch size 1. */
  snapshot(key: StreamKey): Promise<E.Either<StateError, Uint8Array>>
  /** Sets a stream's state from a snapshot of batch size 1 (from this or another process). */
  restore(key: StreamKey, bytes: Uint8Array | Snapshot): E.Either<StateError, void>
  /** Waits until every `onEvict` call has settled; rejects with the first error one raised. */
  flush(): Promise<void>
  /** Frees every stream's state. The `InferenceSession` stays the caller's. Idempotent. */
  dispose(): void
}

/**
 * Wraps an `InferenceSession` whose state outputs feed its state inputs so that many
 * independent streams run through it in batches, each stream's state kept in a `StateStore`.
 *
 * @example
 * const session = await ort.InferenceSession.create("silero_vad_v5.onnx")
 * const vad = orThrow(createStreamingSession({ session, ort, backend: ortBackend({ ort }), capacity: 10_000 }))
 * const sr = new ort.Tensor("int64", BigInt64Array.from([16000n]), [])
 * const outs = orThrow(await vad.run([
 *   { key: "call-1", feeds: { input: frame1 } },
 *   { key: "call-2", feeds: { input: frame2 } },
 * ], { shared: { sr } }))
 * outs.get("call-1")?.output // [1, 1]: call-1's speech probability
 * @category sessions
 * @since 0.1.0
 */
export function createStreamingSession(
  options: StreamingSessionOptions,
): E.Either<StateError, StreamingSession> {
  const { session } = options
  const derived = deriveSessionState(session, options)
  if (derived._tag === "Left") return derived
  const { pairs, spec, batchDim } = derived.right
  const stateInputs = new Set(pairs.map((p) => p.input))
  const stateOutputs = new Set(pairs.map((p) => p.output))
  const axes: Record<string, number | null> = {}
  const given = options.batchAxes ?? {}
  const metadata = [...session.inputMetadata, ...session.outputMetadata]
  const names = [
    ...session.inputNames.filter((n) => !stateInputs.has(n)),
    ...session.outputNames.filter((n) => !stateOutputs.has(n)),
  ]
  for (const name of Object.keys(given)) {
    if (!names.includes(name)) {
      return E.left(
        new StructureMismatchError(
          formatPath([name]),
          "a non-state input or output of the model",
          "no such name",
        ),
      )
    }
  }
  for (const name of names) {
    const meta = metadata.find((m) => m.name === name)
    const axis = Object.prototype.hasOwnProperty.call(given, name)
      ? (given[name] as number | null)
      : metadataBatchAxis(meta, batchDim)
    const rank = meta !== undefined && meta.isTensor ? meta.shape.length : undefined
    if (
      axis !== null &&
      (!Number.isSafeInteger(axis) || axis < 0 || (rank !== undefined && axis >= rank))
    ) {
      return E.left(
        new ShapeMismatchError(
          formatPath([name]),
          `a batch axis in [0, ${rank ?? "rank"})`,
          axis,
          "batchAxes",
        ),
      )
    }
    Object.defineProperty(axes, name, {
      value: axis,
      enumerable: true,
      writable: true,
      configurable: true,
    })
  }
  const store = createStateStore({
    spec,
    backend: options.backend,
    batchDim,
    ...pick(options, ["capacity", "initialSlots", "idleTtlMs", "onEvict", "clock", "dims"]),
  })
  if (store._tag === "Left") return store
  return E.right(new Streaming(options, pairs, store.right, axes))
}

function pick<O extends object, K extends keyof O>(o: O, keys: readonly K[]): Partial<Pick<O, K>> {
  const out: Partial<Pick<O, K>> = {}
  for (const k of keys) if (o[k] !== undefined) out[k] = o[k]
  return out
}

const keyOk = (k: unknown): k is StreamKey =>
  typeof k === "string" || (typeof k === "number" && Number.isFinite(k))

/** Where a stream's feed is, in error paths: `alice.input`, `[3].X`. */
const feedPath = (key: StreamKey, name: string): string => formatPath([key, name])

/** A checked call: keys in order, the feeds to stack, the per-call feeds. */
interface Call {
  readonly keys: StreamKey[]
  readonly batched: Map<string, OrtTensor[]>
  readonly shared: Record<string, OrtTensor>
}

class Streaming implements StreamingSession {
  #inFlight = false
  readonly session: OrtSession
  readonly #ort: OrtRuntime
  readonly #stateInputs: ReadonlySet<string>
  readonly #stateOutputs: ReadonlySet<string>
  readonly #inputs: readonly string[]

  constructor(
    options: StreamingSessionOptions,
    readonly pairs: readonly StatePair[],
    readonly store: StateStore<OrtTensor>,
    readonly batchAxes: Readonly<Record<string, number | null>>,
  ) {
    this.session = options.session
    this.#ort = options.ort
    this.#stateInputs = new Set(pairs.map((p) => p.input))
    this.#stateOutputs = new Set(pairs.map((p) => p.output))
    this.#inputs = this.session.inputNames.filter((n) => !this.#stateInputs.has(n))
  }

  get size(): number {
    return this.store.size
  }

  get busy(): boolean {
    return this.#inFlight
  }

  get disposed(): boolean {
    return this.store.disposed
  }

  has(key: StreamKey): boolean {
    return this.store.has(key)
  }

  keys(): StreamKey[] {
    return this.store.keys()
  }

  #idle(operation: string): E.Either<StateError, void> {
    if (this.store.disposed) return E.left(new DisposedError("StreamingSession"))
    if (this.#inFlight) return E.left(new BusyError(operation, "a run"))
    return E.right(undefined)
  }

  /** Checks keys and feeds before anything is gathered or run. */
  #check(
    streams: Iterable<StreamFeeds> | ReadonlyMap<StreamKey, Feeds>,
    sharedFeeds: Feeds,
  ): E.Either<StateError, Call> {
    const list: StreamFeeds[] =
      streams instanceof Map
        ? [...(streams as ReadonlyMap<StreamKey, Feeds>)].map(([key, feeds]) => ({ key, feeds }))
        : [...(streams as Iterable<StreamFeeds>)]
    if (list.length === 0) return E.left(new KeyError("at least one stream", "none"))
    const keys: StreamKey[] = []
    const seen = new Set<StreamKey>()
    for (const { key } of list) {
      if (!keyOk(key)) return E.left(new KeyError("string or finite number keys", key))
      if (seen.has(key))
        return E.left(new KeyError("distinct keys", `${JSON.stringify(key)} twice`))
      seen.add(key)
      keys.push(key)
    }
    const refused = refuseStateFeeds(Object.keys(sharedFeeds), this.#stateInputs)
    if (refused._tag === "Left") return refused
    for (const name of Object.keys(sharedFeeds)) {
      if (!this.#inputs.includes(name)) {
        return E.left(
          new StructureMismatchError(formatPath([name]), "a model input", "no such input"),
        )
      }
      if (this.batchAxes[name] !== null) {
        return E.left(
          new StructureMismatchError(
            formatPath([name]),
            `a feed in each stream (batch axis ${this.batchAxes[name]})`,
            "a shared feed",
          ),
        )
      }
    }
    for (const { key, feeds } of list) {
      const r = refuseStateFeeds(Object.keys(feeds), this.#stateInputs, (n) => feedPath(key, n))
      if (r._tag === "Left") return r
      for (const name of Object.keys(feeds)) {
        if (!this.#inputs.includes(name)) {
          return E.left(
            new StructureMismatchError(feedPath(key, name), "a model input", "no such input"),
          )
        }
      }
    }
    const batched = new Map<string, OrtTensor[]>()
    const shared: Record<string, OrtTensor> = {}
    for (const name of this.#inputs) {
      const axis = this.batchAxes[name] ?? null
      if (axis === null) {
        const found = this.#checkShared(name, list, sharedFeeds)
        if (found._tag === "Left") return found
        setKey(shared, name, found.right)
        continue
      }
      const parts: OrtTensor[] = []
      let first: { key: StreamKey; t: OrtTensor } | undefined
      for (const { key, feeds } of list) {
        const t = Object.prototype.hasOwnProperty.call(feeds, name) ? feeds[name] : undefined
        const path = feedPath(key, name)
        if (t === undefined) {
          return E.left(new StructureMismatchError(path, `a feed for input ${name}`, "none"))
        }
        if (t.dims.length <= axis) {
          return E.left(
            new ShapeMismatchError(path, `rank > ${axis}`, t.dims, `batch axis ${axis}`),
          )
        }
        if (t.dims[axis] !== 1) {
          return E.left(new BatchSizeMismatchError(path, 1, t.dims[axis] as number, axis))
        }
        if (list.length > 1 && t.location !== "cpu") {
          return E.left(new StructureMismatchError(path, "a CPU tensor to stack", t.location))
        }
        if (first === undefined) first = { key, t }
        else {
          if (t.type !== first.t.type)
            return E.left(new DTypeMismatchError(path, first.t.type, t.type))
          if (
            t.dims.length !== first.t.dims.length ||
            t.dims.some((d, i) => d !== first?.t.dims[i])
          ) {
            return E.left(
              new ShapeMismatchError(
                path,
                first.t.dims,
                t.dims,
                `every stream's ${name} must have the shape of stream ${JSON.stringify(first.key)}'s`,
              ),
            )
          }
        }
        parts.push(t)
      }
      batched.set(name, parts)
    }
    return E.right({ keys, batched, shared })
  }

  /** The one value of a per-call input: given once, or equal in every stream that gives it. */
  #checkShared(
    name: string,
    list: readonly StreamFeeds[],
    sharedFeeds: Feeds,
  ): E.Either<StateError, OrtTensor> {
    const given: [string, OrtTensor][] = []
    if (Object.prototype.hasOwnProperty.call(sharedFeeds, name))
      given.push([formatPath([name]), sharedFeeds[name] as OrtTensor])
    for (const { key, feeds } of list) {
      if (Object.prototype.hasOwnProperty.call(feeds, name))
        given.push([feedPath(key, name), feeds[name] as OrtTensor])
    }
    const [head, ...rest] = given
    if (head === undefined) {
      return E.left(
        new StructureMismatchError(
          formatPath([name]),
          `a feed for per-call input ${name} (in options.shared or in the streams' feeds)`,
          "none",
        ),
      )
    }
    const [, value] = head
    for (const [path, t] of rest) {
      if (t === value) continue
      if (t.type !== value.type) return E.left(new DTypeMismatchError(path, value.type, t.type))
      if (t.dims.length !== value.dims.length || t.dims.some((d, i) => d !== value.dims[i])) {
        return E.left(new ShapeMismatchError(path, value.dims, t.dims, `per-call input ${name}`))
      }
      const equal =
        t.location === "cpu" &&
        value.location === "cpu" &&
        sameData(t.data as TensorData, value.data as TensorData)
      if (!equal) {
        return E.left(
          new StructureMismatchError(
            path,
            `the same value of per-call input ${name} in every stream`,
            "a different value",
          ),
        )
      }
    }
    return E.right(value)
  }

  async run(
    streams: Iterable<StreamFeeds> | ReadonlyMap<StreamKey, Feeds>,
    options: StreamingRunOptions = {},
  ): Promise<E.Either<StateError, Map<StreamKey, Record<string, OrtTensor>>>> {
    const idle = this.#idle("run")
    if (idle._tag === "Left") return idle
    const call = this.#check(streams, options.shared ?? {})
    if (call._tag === "Left") return call
    const { keys, batched, shared } = call.right
    // Keys new to the store are forgotten again if the run fails.
    const fresh = keys.filter((k) => !this.store.has(k))
    const gathered = this.store.gather(keys)
    if (gathered._tag === "Left") return gathered
    const state = gathered.right as Readonly<Record<string, OrtTensor>>
    const stacked: OrtTensor[] = []
    const feeds: Record<string, OrtTensor> = copyFeeds(shared)
    for (const [name, parts] of batched) {
      if (parts.length === 1) {
        setKey(feeds, name, parts[0] as OrtTensor)
        continue
      }
      const first = parts[0] as OrtTensor
      const axis = this.batchAxes[name] as number
      const dims = [...first.dims]
      dims[axis] = parts.length
      const data = stackRows(
        parts.map((p) => p.data as TensorData),
        first.dims,
        axis,
      )
      const t = new this.#ort.Tensor(first.type as "float32", data as Float32Array, dims)
      stacked.push(t)
      setKey(feeds, name, t)
    }
    for (const { input } of this.pairs) setKey(feeds, input, state[input] as OrtTensor)
    const cleanup = (outputs?: Record<string, OrtTensor>): void => {
      disposeTree(this.store.backend, gathered.right)
      for (const t of stacked) t.dispose()
      if (outputs !== undefined) for (const t of Object.values(outputs)) t.dispose()
    }
    const forget = (): void => {
      for (const k of fresh) this.store.delete(k)
    }
    this.#inFlight = true
    try {
      let outputs: Record<string, OrtTensor>
      try {
        const pending =
          options.runOptions === undefined
            ? this.session.run(feeds)
            : this.session.run(feeds, options.runOptions)
        outputs = (await pending) as Record<string, OrtTensor>
      } catch (e) {
        cleanup()
        forget()
        return E.left(new BackendError(this.store.backend.name, "run", "", e))
      }
      if (this.store.disposed) {
        cleanup(outputs)
        return E.left(new DisposedError("StreamingSession"))
      }
      const split = await this.#readOutputs(outputs, keys.length)
      if (split._tag === "Left") {
        cleanup(outputs)
        forget()
        return split
      }
      const next: Record<string, OrtTensor> = {}
      for (const { input, output } of this.pairs) setKey(next, input, outputs[output] as OrtTensor)
      const scattered = this.store.scatter(keys, next as StateTree<OrtTensor>)
      if (scattered._tag === "Left") {
        cleanup(outputs)
        forget()
        return scattered
      }
      // The store owns (and has freed) the state outputs; the others are split or handed over.
      const rest: Record<string, OrtTensor> = {}
      for (const [name, t] of Object.entries(outputs))
        if (!this.#stateOutputs.has(name)) setKey(rest, name, t)
      const result = this.#split(keys, rest, split.right)
      cleanup()
      return E.right(result)
    } finally {
      this.#inFlight = false
    }
  }

  /** Host data of each non-state output, after checking its batch size. */
  async #readOutputs(
    outputs: Record<string, OrtTensor>,
    batchSize: number,
  ): Promise<E.Either<StateError, Map<string, TensorData>>> {
    const data = new Map<string, TensorData>()
    for (const [name, t] of Object.entries(outputs)) {
      if (this.#stateOutputs.has(name)) continue
      const axis = this.batchAxes[name] ?? null
      if (axis !== null && t.dims[axis] !== batchSize) {
        return E.left(
          new BatchSizeMismatchError(formatPath([name]), batchSize, t.dims[axis] ?? 0, axis),
        )
      }
      if (batchSize === 1) continue
      try {
        data.set(name, (t.location === "cpu" ? t.data : await t.getData()) as TensorData)
      } catch (e) {
        return E.left(new BackendError(this.store.backend.name, "getData", formatPath([name]), e))
      }
    }
    return E.right(data)
  }

  /** Each stream's row of every output; outputs without a batch axis are copied to each stream. */
  #split(
    keys: readonly StreamKey[],
    outputs: Record<string, OrtTensor>,
    data: ReadonlyMap<string, TensorData>,
  ): Map<StreamKey, Record<string, OrtTensor>> {
    const result = new Map<StreamKey, Record<string, OrtTensor>>()
    if (keys.length === 1) {
      result.set(keys[0] as StreamKey, outputs)
      return result
    }
    for (const k of keys) result.set(k, {})
    for (const [name, t] of Object.entries(outputs)) {
      const axis = this.batchAxes[name] ?? null
      const all = data.get(name) as TensorData
      const dims = [...t.dims]
      if (axis !== null) dims[axis] = 1
      keys.forEach((k, row) => {
        const rowData = axis === null ? copyData(all) : sliceRow(all, t.dims, axis, row)
        const out = new this.#ort.Tensor(t.type as "float32", rowData as Float32Array, dims)
        setKey(result.get(k) as Record<string, OrtTensor>, name, out)
      })
      t.dispose()
    }
    return result
  }

  reset(keys: readonly StreamKey[]): E.Either<StateError, void> {
    const idle = this.#idle("reset")
    if (idle._tag === "Left") return idle
    return this.store.reset(keys)
  }

  delete(key: StreamKey): E.Either<StateError, boolean> {
    const idle = this.#idle("delete")
    if (idle._tag === "Left") return idle
    return E.right(this.store.delete(key))
  }

  async snapshot(key: StreamKey): Promise<E.Either<StateError, Uint8Array>> {
    const idle = this.#idle("snapshot")
    if (idle._tag === "Left") return idle
    return this.store.snapshot(key)
  }

  restore(key: StreamKey, bytes: Uint8Array | Snapshot): E.Either<StateError, void> {
    const idle = this.#idle("restore")
    if (idle._tag === "Left") return idle
    return this.store.restore(key, bytes)
  }

  flush(): Promise<void> {
    return this.store.flush()
  }

  dispose(): void {
    this.store.dispose()
  }

  [Symbol.dispose](): void {
    this.dispose()
  }
}
