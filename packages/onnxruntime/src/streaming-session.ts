import {
  type AliasedLeafError,
  BackendError,
  type BatchSizeMismatchError,
  BusyError,
  type DTypeMismatchError,
  type Dim,
  DisposedError,
  HostTensor,
  type Init,
  KeyError,
  OptionError,
  ShapeMismatchError,
  type ResolvedLeaf,
  type ScatterOptions,
  type Snapshot,
  type SnapshotOptions,
  type StateBackend,
  type StateStore,
  type StateStoreOptions,
  type StateTree,
  type StreamKey,
  type StructureMismatchError,
  type TensorCheckError,
  createStateStore,
  disposeTree,
  formatPath,
} from "@statesaver/core"
import type * as common from "onnxruntime-common"
import type { OrtRuntime, OrtTensor } from "./ort-backend.js"
import { GuardedStore } from "./internal/busy-guard.js"
import { scratchArrays } from "./internal/scratch.js"
import { type Rules, deriveInputs, nextState } from "./internal/rules.js"
import type { InputRule } from "./input-rules.js"
import {
  type CachePlan,
  type KvCacheOptions,
  blockOffsets,
  checkRestored,
  noEncoderCache,
  notAdopted,
  noCache,
  refuseRewind,
  rewound,
} from "./kv-cache.js"
import { type BlockTarget, blockTargets, planWrites, writeBlocks } from "./internal/blocks.js"
import * as E from "./internal/either.js"
import { emptyGrowing, noPositions, padToStore } from "./internal/fresh-start.js"
import { checkHeldBatch, checkHeldFeeds, copyFeed, emptyRows } from "./internal/held-input.js"
import { type FixedStreamStep, fixedStreamStep } from "./internal/fixed-stream-step.js"
import { deriveSessionState, leafContext, setKey } from "./internal/session-state.js"
import { readOutputs, splitOutputs, stackFeeds } from "./internal/stream-batch.js"
import { isRecord, own } from "./internal/validate.js"
import {
  type FeedLayout,
  checkBatchCall,
  checkBatchOptions,
  checkCall,
  checkRunOptions,
  keyOk,
  listStreams,
  resolveBatchAxes,
} from "./internal/stream-feeds.js"
import type { StatePair } from "./state-pairing.js"
import type { BusyGuarded, Feeds, OrtSession, StreamFeeds } from "./session-types.js"
import type { CreateStatefulSessionError } from "./stateful-session.js"

/**
 * The store of a `StreamingSession`: a `StateStore` whose calls that return an `Either`
 * (`gather`, `scatter`, `reset`, `fork`, `snapshot`, `restore`) return `Left(BusyError)` while a
 * run is in flight, and whose `delete` and `sweep` throw it then. Reads (`has`, `keys`, `size`)
 * are answered; `dispose` disposes the session.
 *
 * @category sessions
 * @since 0.2.0
 */
export type SessionStore = BusyGuarded<StateStore<OrtTensor>>

/**
 * Errors `createStreamingSession` can return: malformed options or session (`OptionError`, the
 * option's name as `path`), unpairable state names (`StructureMismatchError`), metadata the spec
 * cannot be derived from (`SpecError`, `DTypeMismatchError`, `ShapeMismatchError`), an
 * allocation that failed (`BackendError`).
 *
 * @category sessions
 * @since 0.2.0
 */
export type CreateStreamingSessionError = CreateStatefulSessionError

/**
 * Errors `StreamingSession.run` can return: another run in flight (`BusyError`), a disposed
 * session or feed (`DisposedError`), bad run options or a clock that misbehaved (`OptionError`),
 * bad, duplicate or too many keys (`KeyError`), streams or feeds that are malformed, missing,
 * unknown or of a state input (`StructureMismatchError`), feeds that differ between streams or
 * have more than one row (`ShapeMismatchError`, `DTypeMismatchError`, `BatchSizeMismatchError`),
 * a run that threw (`BackendError`), outputs that do not fit the state (`AliasedLeafError` and
 * the others above).
 *
 * @category sessions
 * @since 0.2.0
 */
export type StreamingRunError =
  | BusyError
  | DisposedError
  | OptionError
  | KeyError
  | StructureMismatchError
  | ShapeMismatchError
  | DTypeMismatchError
  | BatchSizeMismatchError
  | AliasedLeafError
  | BackendError

/**
 * Options of `createStreamingSession`. `O` is the names of the outputs `run` hands back per
 * stream, inferred from `outputs`.
 *
 * @category sessions
 * @since 0.1.0
 */
export interface StreamingSessionOptions<O extends string = string> extends Pick<
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
  /**
   * Allows `pairs` to swap two pairs the naming conventions agree on (`{ hn: "c", cn: "h" }`),
   * refused otherwise with a `StructureMismatchError`: with two states of one shape such a swap
   * runs, silently wrong.
   */
  readonly crossedPairs?: boolean
  /**
   * Input rules: model inputs computed from per-stream bookkeeping state and the call's feeds
   * (`sileroContext()` for Silero VAD). Their state leaves are stored, evicted and snapshotted
   * with each stream's model state.
   */
  readonly rules?: readonly InputRule[]
  /**
   * A decoder's KV cache with per-row lengths (`{ kind: "growing" }` or `{ kind: "fixed",
   * capacity }`): each stream's cache and lengths are stored, evicted and snapshotted together.
   * Fixed: every stream's rows are `capacity` long, and each run writes its new positions at
   * each row's length. Growing: every stream's rows are as long as the store's (the model
   * appends a run's positions after all of them), padded with masked positions (its
   * `cache_mask` keeps a stream's own); each run lengthens every stream's rows by its new
   * tokens, streams not in the run included, copied on the backend with `writeAt` (required).
   * The store never shrinks by itself (see `StateStore.resizeDim`), so memory and attention
   * grow with all the tokens run since the store was empty: a long-lived server is better off
   * with a fixed cache. A snapshot restores into a store that grew since (padded), or into a
   * shorter one (which grows to it).
   */
  readonly cache?: KvCacheOptions
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
  /**
   * The non-state outputs `run` hands back per stream (checked against `session.outputNames` at
   * creation), which types its result: `outputs: ["output"]` makes each stream's `output` an
   * `OrtTensor`. Outputs not listed are disposed after each run, never split or read back.
   * Default: every non-state output, typed by `string`. A stream's output whose batch axis comes
   * first is a view of the run's output (no copy): the streams' outputs of one run share memory,
   * each its own rows.
   */
  readonly outputs?: readonly O[]
  /**
   * Calls `sweep()` every this many milliseconds (a positive number; needs `idleTtlMs`), so idle
   * streams are evicted on a quiet server too. The timer does not keep Node alive (`unref`), skips
   * a tick while a run is in flight, and stops on `dispose`. Default: no timer.
   */
  readonly sweepEveryMs?: number
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
 * Options of `StreamingSession.runBatch` (per-call inputs such as Silero's `sr` go in its feeds).
 *
 * @category sessions
 * @since 0.3.0
 */
export interface StreamingBatchOptions {
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
export interface StreamingSession<O extends string = string> extends Disposable {
  readonly session: OrtSession
  /** The state pairs, in output order. */
  readonly pairs: readonly StatePair[]
  /**
   * The store that holds every stream's state, keyed by state input name, behind the session's
   * busy guard: its changing calls are refused with a `BusyError` while a run is in flight.
   */
  readonly store: SessionStore
  /** Batch axis of each non-state input and output; `null` for per-call values. */
  readonly batchAxes: Readonly<Record<string, number | null>>
  /** Number of streams held. */
  readonly size: number
  /** True while a `run` has not resolved. */
  readonly busy: boolean
  /** True once `dispose` was called (a run in flight then frees the streams when it settles). */
  readonly disposed: boolean
  has(key: StreamKey): boolean
  /** Keys held, least recently used first. */
  keys(): StreamKey[]
  /**
   * Runs the model once for every stream given and resolves to each stream's outputs, in the
   * order given, with size 1 along their batch axis (as a `StatefulSession` of batch 1 returns
   * them); the caller owns them. The feeds stay the caller's. On `Left` no stream's state changed.
   * With a growing cache, a call whose streams all hold no position (new or reset) runs without
   * the cache, as the session's first did, and their caches are then padded to the other
   * streams' length. An encoder–decoder's new streams must start that way: a call mixing them
   * with streams under way is a `StructureMismatchError` naming the encoder cache, and a stream
   * whose cross-attention cache has another length than the streams held a `ShapeMismatchError`.
   */
  run(
    streams: Iterable<StreamFeeds> | ReadonlyMap<StreamKey, Feeds>,
    options?: StreamingRunOptions,
  ): Promise<E.Either<StreamingRunError, Map<StreamKey, Record<O, OrtTensor>>>>
  /**
   * `run` for a caller whose feeds are already batched: row `i` of every batched feed (along
   * the input's batch axis) is stream `keys[i]`'s, per-call inputs are fed as they are, and the
   * result is the run's outputs as the model gave them, row `i` stream `keys[i]`'s, on the
   * device the model put them (the caller owns them). Nothing is stacked, split or read back: a
   * decoding loop that samples every row of the logits at once, then feeds the tokens as one
   * tensor, pays for no per-stream tensors. Streams, state, rules, caches, eviction and errors
   * are those of `run`, but for the paths of errors on feeds, which name the batched feed
   * (`input_ids`, not `alice.input_ids`). A feed without one row per key is a
   * `BatchSizeMismatchError`; bad keys (not an array, empty, malformed, repeated) a `KeyError`.
   *
   * @example
   * declare const chats: StreamingSession<"logits">
   * declare const next: (logits: OrtTensor) => BigInt64Array // one token per row
   * const keys = ["alice", "bob", "carol"]
   * let tokens = new ort.Tensor("int64", BigInt64Array.of(5n, 9n, 2n), [3, 1])
   * for (let step = 0; step < 16; step++) {
   *   const { logits } = orThrow(await chats.runBatch(keys, { input_ids: tokens }))
   *   tokens = new ort.Tensor("int64", next(logits), [3, 1])
   *   logits.dispose()
   * }
   * @since 0.3.0
   */
  runBatch(
    keys: readonly StreamKey[],
    feeds: Feeds,
    options?: StreamingBatchOptions,
  ): Promise<E.Either<StreamingRunError, Record<O, OrtTensor>>>
  /** Sets the streams' state back to init before their next run (the keys must be held). */
  reset(keys: readonly StreamKey[]): ReturnType<SessionStore["reset"]>
  /**
   * Gives each stream of `to` a copy of the whole state of stream `from` (model state, cache,
   * cache lengths, rule state), copied row by row on the backend with nothing read to the host:
   * a prompt run once and continued by many conversations, or beams spread over streams. New
   * keys are added (which may evict the least recently used streams, never `from`), held ones
   * are overwritten, and `from` in `to` stays as it is. Atomic: an unknown `from`, a malformed
   * or repeated key of `to`, or more keys than `capacity` is a `KeyError` whose `detail` names
   * `from` or `to[i]`, and no stream changed.
   *
   * @example
   * const chats = orThrow(
   *   createStreamingSession({
   *     session, ort, backend: ortBackend({ ort }), cache: { kind: "fixed", capacity: 512 },
   *     outputs: ["logits"],
   *   }),
   * )
   * const ids = new ort.Tensor("int64", BigInt64Array.from([5n, 9n, 2n]), [1, 3])
   * const outs = orThrow(await chats.run([{ key: "system", feeds: { input_ids: ids } }]))
   * for (const out of outs.values()) out.logits.dispose()
   * // The system prompt's cache, computed once, starts four conversations.
   * orThrow(chats.fork("system", ["alice", "bob", "carol", "dave"]))
   * @category sessions
   * @since 0.3.0
   */
  fork(from: StreamKey, to: readonly StreamKey[]): ReturnType<SessionStore["fork"]>
  /**
   * Drops the last `n` positions of the cache of each stream of `keys` (or `n[i]` of `keys[i]`),
   * every stream checked first, in one change, as `StatefulSession.rewind` does for rows:
   * speculative-decoding rollback, or editing the end of a conversation. The keys must be held
   * (`KeyError`, its `detail` naming `keys[i]`); a stream holding fewer than its `n` positions
   * is a `ShapeMismatchError` whose path names the stream (`alice.cache_length`); a bad `n` an
   * `OptionError` at `n`; a session without the `cache` option an `OptionError` at `cache`; a
   * session whose state holds more than the cache (a hybrid model's recurrent `past_ssm`, a
   * rule's bookkeeping), which a rewind cannot roll back, a `StructureMismatchError` naming that
   * leaf (snapshot before the tokens to drop and restore instead). On `Left` no stream changed.
   *
   * @example
   * declare const chats: StreamingSession<"logits">
   * // The draft's last 3 tokens in "alice" were rejected, 1 in "bob".
   * orThrow(chats.rewind(["alice", "bob"], [3, 1]))
   * @category sessions
   * @since 0.3.0
   */
  rewind(
    keys: readonly StreamKey[],
    n: number | readonly number[],
  ): E.Either<
    | OptionError
    | KeyError
    | ShapeMismatchError
    | StructureMismatchError
    | BusyError
    | DisposedError
    | BackendError
    | TensorCheckError,
    void
  >
  /**
   * Forgets a stream (it ended); `onEvict` is not called. Synchronous: returns `Right` of whether
   * it was held.
   */
  delete(key: StreamKey): E.Either<BusyError | DisposedError | KeyError, boolean>
  /**
   * Evicts the streams idle past `idleTtlMs` now (each through `onEvict`) and returns `Right` of
   * how many. Store calls evict idle streams too, but a quiet server makes none: call this from a
   * timer, or set `sweepEveryMs`. `Left(BusyError)` while a run is in flight (the store's clock
   * stands still then, so there is nothing to evict), `Left(DisposedError)` after `dispose`. A
   * stream that cannot be copied for `onEvict` stays held, and `flush()` reports the failure.
   */
  sweep(): E.Either<BusyError | DisposedError, number>
  /** One stream's state as snapshot bytes of batch size 1, with the caller's `metadata` strings. */
  snapshot(key: StreamKey, options?: SnapshotOptions): ReturnType<SessionStore["snapshot"]>
  /**
   * Sets a stream's state from a snapshot of batch size 1 (from this or another process);
   * returns the snapshot's metadata.
   */
  restore(key: StreamKey, bytes: Uint8Array | Snapshot): ReturnType<SessionStore["restore"]>
  /** Waits until every `onEvict` call has settled; rejects with the first error one raised. */
  flush(): Promise<void>
  /**
   * Frees every stream's state (once a run in flight has settled). The `InferenceSession` stays
   * the caller's. Idempotent.
   */
  dispose(): void
}

/**
 * Wraps an `InferenceSession` whose state outputs feed its state inputs so that many
 * independent streams run through it in batches, each stream's state kept in a `StateStore`.
 * Returns an Either: `Left(OptionError)` for a malformed option (the option's name is the error's
 * path: `ort`, `capacity`, `batchAxes.input`, `clock`, `outputs[0]`, `sweepEveryMs`...), and the
 * errors of `CreateStreamingSessionError` for a model whose state cannot be paired or derived.
 *
 * @example
 * const session = await ort.InferenceSession.create("silero_vad_v5.onnx")
 * const vad = orThrow(
 *   createStreamingSession({
 *     session, ort, backend: ortBackend({ ort }), capacity: 10_000, outputs: ["output"],
 *     rules: [sileroContext()], // each stream's 64-sample context is stored beside its state
 *   }),
 * )
 * const sr = new ort.Tensor("int64", BigInt64Array.from([16000n]), [])
 * const outs = orThrow(await vad.run([
 *   { key: "call-1", feeds: { frame: frame1 } },
 *   { key: "call-2", feeds: { frame: frame2 } },
 * ], { shared: { sr } }))
 * for (const [key, out] of outs) {
 *   console.log(key, orThrow(tensorScalar(out.output, "float32"))) // the stream's speech probability
 *   out.output.dispose()
 * }
 * @category sessions
 * @since 0.1.0
 */
export function createStreamingSession<const O extends string = string>(
  options: StreamingSessionOptions<O>,
): E.Either<CreateStreamingSessionError, StreamingSession<O>> {
  const derived = deriveSessionState(options)
  if (derived._tag === "Left") return derived
  const { session, pairs, spec, batchDim, outputs, rules, callerInputs, cache, dims, inputTypes } =
    derived.right
  const { ort, clock, sweepEveryMs } = options
  if (typeof ort !== "object" || ort === null || typeof ort.Tensor !== "function") {
    return E.left(
      new OptionError({
        path: "ort",
        expected: "the ONNX Runtime module (with its Tensor class)",
        actual: ort,
      }),
    )
  }
  if (clock !== undefined && typeof clock !== "function") {
    return E.left(
      new OptionError({
        path: "clock",
        expected: "a function returning milliseconds",
        actual: clock,
      }),
    )
  }
  if (
    sweepEveryMs !== undefined &&
    (typeof sweepEveryMs !== "number" || !(sweepEveryMs > 0) || !Number.isFinite(sweepEveryMs))
  ) {
    return E.left(
      new OptionError({
        path: "sweepEveryMs",
        expected: "a positive finite number of milliseconds",
        actual: sweepEveryMs,
      }),
    )
  }
  if (sweepEveryMs !== undefined && options.idleTtlMs === undefined) {
    return E.left(
      new OptionError({
        path: "idleTtlMs",
        expected: "a TTL in milliseconds when sweepEveryMs is set",
        actual: options.idleTtlMs,
        detail: "a sweep evicts only streams idle past idleTtlMs",
      }),
    )
  }
  if (cache !== undefined && cache.lengthLeaf === undefined) {
    // A growing cache: each run's outputs are longer than the store's rows, which grow on the
    // backend (every stream's, padded and masked) before the scatter.
    if (typeof options.backend?.writeAt !== "function") {
      return E.left(
        new OptionError({
          path: "backend",
          expected: "a backend with writeAt, to grow every stream's cache on the backend",
          actual: options.backend,
          detail: `backend ${String(options.backend?.name)} has no writeAt (a StatefulSession holds a growing cache without it)`,
        }),
      )
    }
    if (dims !== undefined && own(dims, cache.dim)) {
      return E.left(
        new OptionError({
          path: `dims.${cache.dim}`,
          expected: "no size for a growing cache's dim (it grows with the longest row)",
          actual: dims[cache.dim],
        }),
      )
    }
  }
  const stateOutputs = new Set(pairs.map((p) => p.output))
  const names = [...callerInputs, ...session.outputNames.filter((n) => !stateOutputs.has(n))]
  const axes = resolveBatchAxes(
    names,
    [...session.inputMetadata, ...session.outputMetadata],
    batchDim,
    // The rules' feeds carry their own batch axes; an option may override them.
    Object.keys(rules.feeds).length === 0 || (options.batchAxes as unknown) !== undefined
      ? isRecord(options.batchAxes)
        ? { ...rules.feeds, ...options.batchAxes }
        : options.batchAxes
      : rules.feeds,
  )
  if (axes._tag === "Left") return axes
  const time = new RunClock(clock ?? Date.now)
  const store = createStateStore({
    spec,
    backend: options.backend,
    batchDim,
    ...pick(options, ["capacity", "initialSlots", "idleTtlMs", "onEvict"]),
    ...(dims === undefined ? {} : { dims }),
    clock: () => time.now(),
  })
  if (store._tag === "Left") return store
  const streaming = new Streaming<O>(session, ort, pairs, store.right, axes.right, time, outputs, {
    rules,
    inputs: callerInputs,
    types: inputTypes,
    cache,
    capacity: options.capacity,
    expires: options.idleTtlMs !== undefined,
  })
  if (sweepEveryMs !== undefined) streaming.sweepEvery(sweepEveryMs)
  return E.right(streaming)
}

/** The positions row `row` of a cache's bookkeeping leaf holds: its length, or its mask's ones. */
function positions(plan: CachePlan, leaf: HostTensor, row: number): number {
  if (plan.lengthLeaf !== undefined) return (leaf.data as Int32Array)[row] as number
  const past = leaf.shape[1] as number
  let count = 0
  for (let j = 0; j < past; j++) count += (leaf.data as Uint8Array)[row * past + j] as number
  return count
}

/** The caller's feeds of a run: each stream's (`run`), or the batch's (`runBatch`). */
type Source =
  | {
      readonly kind: "streams"
      readonly batched: ReadonlyMap<string, readonly OrtTensor[]>
      readonly shared: Readonly<Record<string, OrtTensor>>
      readonly held: readonly (OrtTensor | undefined)[]
    }
  | { readonly kind: "batch"; readonly feeds: Feeds; readonly held: OrtTensor | undefined }

/**
 * A batched call's feeds for the model: the caller's, in an object of the session's own (the
 * held input left out: the session feeds it); nothing stacked.
 */
function ownFeeds(
  given: Feeds,
  heldLeaf: ResolvedLeaf | undefined,
): { feeds: Record<string, OrtTensor>; stacked: OrtTensor[] } {
  const feeds: Record<string, OrtTensor> = {}
  const held = heldLeaf?.path[0]
  for (const name in given)
    if (own(given, name) && name !== held) setKey(feeds, name, given[name] as OrtTensor)
  return { feeds, stacked: [] }
}

/** The block outputs of a session without a cache: none. */
const VIEWS = { views: true } as const

const GROW: ScatterOptions = { grow: true }

const NO_NAMES: ReadonlySet<string> = new Set()

function pick<O extends object, K extends keyof O>(o: O, keys: readonly K[]): Partial<Pick<O, K>> {
  const out: Partial<Pick<O, K>> = {}
  for (const k of keys) if (o[k] !== undefined) out[k] = o[k]
  return out
}

/**
 * The store's clock. While a run is in flight it stands still at the time of the run's gather:
 * every stream still held was used within the TTL then, so no read of the store (`has`, `keys`)
 * can evict a stream, and the run's own streams in particular, before the run's scatter.
 */
class RunClock {
  #frozen: number | undefined
  #last: number | undefined

  constructor(readonly read: () => number) {}

  now(): number {
    if (this.#frozen !== undefined) return this.#frozen
    const t = this.read()
    this.#last = t
    return t
  }

  freeze(): void {
    this.#frozen = this.#last ?? this.read()
  }

  /**
   * Runs `f` with the clock at the store's last reading: a read of the store inside `f` evicts
   * nothing that the store's last call kept.
   */
  still<A>(f: () => A): A {
    const before = this.#frozen
    this.#frozen = this.#last ?? before
    try {
      return f()
    } finally {
      this.#frozen = before
    }
  }

  thaw(): void {
    this.#frozen = undefined
  }
}

class Streaming<O extends string> implements StreamingSession<O> {
  #inFlight = false
  #disposed = false
  #timer: ReturnType<typeof setInterval> | undefined
  readonly #ort: OrtRuntime
  readonly #store: StateStore<OrtTensor>
  readonly #clock: RunClock
  readonly #stateOutputs: ReadonlySet<string>
  /** The outputs a run hands back. */
  readonly #outputs: ReadonlySet<string>
  /** The outputs a run does not hand back: state outputs and those not listed in `outputs`. */
  readonly #kept: ReadonlySet<string>
  readonly #layout: FeedLayout
  readonly #cache: CachePlan | undefined
  /** The scatter options of a run: `{ grow: true }` for a growing cache. */
  readonly #grow: ScatterOptions | undefined
  /** A fixed cache's block outputs and the leaves they are written into. */
  readonly #blockTargets: readonly BlockTarget[]
  /**
   * The inputs of a cache's kept pairs (an encoder–decoder's cross-attention caches) and the
   * held input: leaves every stream holds at one length.
   */
  readonly #keptInputs: ReadonlySet<string>
  /** Most streams the store holds (`capacity`). */
  readonly #capacity: number | undefined
  /** Whether streams expire (`idleTtlMs`): a store's gather then may evict and count a use. */
  readonly #expires: boolean
  /** The leaf of the input held per stream (`cache.encoder`). */
  readonly #heldLeaf: ResolvedLeaf | undefined
  /** Arrays for stacked feeds and the built-in rules' inputs, written over call after call. */
  readonly #lend = scratchArrays()
  /** The step of a fixed cache whose rule is the session's only one (no rule machinery). */
  readonly #fixedStep: FixedStreamStep | undefined
  readonly store: SessionStore

  constructor(
    readonly session: OrtSession,
    ort: OrtRuntime,
    readonly pairs: readonly StatePair[],
    store: StateStore<OrtTensor>,
    readonly batchAxes: Readonly<Record<string, number | null>>,
    clock: RunClock,
    outputs: ReadonlySet<string>,
    caller: {
      readonly rules: Rules
      readonly inputs: readonly string[]
      readonly types: ReadonlyMap<string, string>
      readonly cache: CachePlan | undefined
      readonly capacity: number | undefined
      readonly expires: boolean
    },
  ) {
    this.#capacity = caller.capacity
    this.#expires = caller.expires
    this.#cache = caller.cache
    this.#grow =
      caller.cache !== undefined && caller.cache.lengthLeaf === undefined ? GROW : undefined
    this.#blockTargets =
      caller.cache === undefined ? [] : blockTargets(caller.cache, store.spec.leaves)
    // Kept cross-attention caches, and the held encoder input: one length for every stream.
    this.#keptInputs = new Set([
      ...(caller.cache?.keep.map((p) => p.input) ?? []),
      ...(caller.cache?.encoder === undefined ? [] : [caller.cache.encoder]),
    ])
    this.#ort = ort
    this.#store = store
    this.#clock = clock
    const stateInputs = new Set(pairs.map((p) => p.input))
    this.#stateOutputs = new Set(pairs.map((p) => p.output))
    this.#outputs = outputs
    this.#kept = new Set(session.outputNames.filter((n) => !outputs.has(n)))
    const heldName = caller.cache?.encoder
    this.#layout = {
      inputs: caller.inputs,
      types: caller.types,
      stateInputs,
      batchAxes,
      rules: caller.rules,
      ...(heldName === undefined ? {} : { held: heldName }),
    }
    this.#heldLeaf = store.spec.leaves.find((l) => l.path[0] === heldName)
    this.#fixedStep = fixedStreamStep(
      caller,
      this.#blockTargets,
      heldName !== undefined,
      ort,
      this.#lend,
    )
    this.store = new GuardedStore(store, {
      kind: "StreamingSession",
      busy: () => this.#inFlight,
      disposed: () => this.#disposed,
      dispose: () => this.dispose(),
    })
  }

  get size(): number {
    return this.store.size
  }

  get busy(): boolean {
    return this.#inFlight
  }

  get disposed(): boolean {
    return this.#disposed
  }

  has(key: StreamKey): boolean {
    return this.store.has(key)
  }

  keys(): StreamKey[] {
    return this.store.keys()
  }

  /** `Left` when the session refuses `operation` now: disposed, or a run in flight. */
  #idle(operation: string): E.Either<BusyError | DisposedError, never> | undefined {
    if (this.#disposed) return E.left(new DisposedError({ what: "StreamingSession" }))
    if (this.#inFlight) return E.left(new BusyError({ operation, inFlight: "a run" }))
    return undefined
  }

  async run(
    streams: Iterable<StreamFeeds> | ReadonlyMap<StreamKey, Feeds>,
    options?: StreamingRunOptions,
  ): Promise<E.Either<StreamingRunError, Map<StreamKey, Record<O, OrtTensor>>>> {
    const idle = this.#idle("run")
    if (idle !== undefined) return idle
    const entries = listStreams(streams)
    if (entries._tag === "Left") return entries
    const opts = checkRunOptions(options)
    if (opts._tag === "Left") return opts
    const call = checkCall(entries.right, opts.right.shared, this.#layout)
    if (call._tag === "Left") return call
    const runOptions = opts.right.runOptions as common.InferenceSession.RunOptions | undefined
    const { keys, batched, shared, held } = call.right
    const ran = await this.#step(keys, { kind: "streams", batched, shared, held }, runOptions)
    return ran as E.Either<StreamingRunError, Map<StreamKey, Record<O, OrtTensor>>>
  }

  async runBatch(
    keys: readonly StreamKey[],
    feeds: Feeds,
    options?: StreamingBatchOptions,
  ): Promise<E.Either<StreamingRunError, Record<O, OrtTensor>>> {
    const idle = this.#idle("runBatch")
    if (idle !== undefined) return idle
    const opts = checkBatchOptions(options)
    if (opts._tag === "Left") return opts
    const call = checkBatchCall(keys, feeds, this.#layout)
    if (call._tag === "Left") return call
    const { held } = call.right
    const ran = await this.#step(
      call.right.keys,
      { kind: "batch", feeds: call.right.feeds, held },
      opts.right as common.InferenceSession.RunOptions | undefined,
    )
    return ran as E.Either<StreamingRunError, Record<O, OrtTensor>>
  }

  /**
   * A run of the streams `keys` with the caller's feeds (`source`): gather, derive, run, write
   * blocks, scatter. Resolves to each stream's outputs (`streams`) or the batched outputs
   * (`batch`).
   */
  async #step(
    keys: readonly StreamKey[],
    source: Source,
    runOptions: common.InferenceSession.RunOptions | undefined,
  ): Promise<
    E.Either<
      StreamingRunError,
      Map<StreamKey, Record<string, OrtTensor>> | Record<string, OrtTensor>
    >
  > {
    const store = this.#store
    // Keys new to the store are forgotten again if the run fails. (`has` would evict a returning
    // idle stream of this very call, which `gather` keeps: `holds` evicts nothing.)
    const fresh = keys.filter((k) => !store.holds(k))
    // An encoder–decoder's new streams joining streams under way are refused before the gather,
    // which could evict a stream to make room for them.
    const cache = this.#cache
    const heldLeaf = this.#heldLeaf
    // The held input (an encoder's states): fed on the call that starts the streams, held after.
    const checkHeld =
      heldLeaf === undefined
        ? undefined
        : (empty: readonly number[]) => {
            const name = heldLeaf.path[0] as string
            return source.kind === "streams"
              ? checkHeldFeeds(name, heldLeaf, keys, source.held, empty)
              : checkHeldBatch(name, heldLeaf, keys, source.held, empty)
          }
    if (fresh.length > 0 && fresh.length < keys.length && cache !== undefined) {
      const mixed = this.#refuseMixedStart(keys, fresh, checkHeld)
      if (mixed !== undefined) return mixed
    }
    // Streams held side by side are fed as views of the store's rows: nothing copied out and
    // back (a fixed cache's blocks are written straight into the store). A call adding streams
    // to a full store gathers copies instead, adding nothing, and adds the new streams (evicting
    // others) only once its run succeeded: a refused run leaves every stream held.
    const capacity = this.#capacity
    const admitLater =
      fresh.length > 0 && capacity !== undefined && store.size + fresh.length > capacity
    const gathered = admitLater ? this.#detached(keys, fresh) : store.gather(keys, VIEWS)
    if (gathered._tag === "Left") return gathered
    const held = gathered.right as Readonly<Record<string, OrtTensor>>
    let heldGiven: OrtTensor[] | OrtTensor | undefined
    if (checkHeld !== undefined && cache !== undefined) {
      const checked = checkHeld(emptyRows(held[cache.leaf] as OrtTensor))
      if (checked._tag === "Left") {
        disposeTree(store.backend, gathered.right)
        for (const k of fresh) store.delete(k)
        return checked
      }
      heldGiven = checked.right
    }
    const stackedFeeds =
      source.kind === "streams"
        ? stackFeeds(this.#ort, source.shared, source.batched, this.batchAxes, this.#lend)
        : ownFeeds(source.feeds, heldLeaf)
    const { stacked } = stackedFeeds
    // Streams of a growing cache that all hold no position yet start as the store's first run
    // did: every growing dim at 0, so the step runs without the cache (a prompt does not attend
    // over the other streams' padding) and an encoder–decoder computes their cross-attention
    // caches (rows padded to the store's length would read as a cache in use).
    const starting =
      cache !== undefined &&
      cache.lengthLeaf === undefined &&
      noPositions(held[cache.leaf] as OrtTensor)
    const state = starting ? emptyGrowing(this.#ort, store.spec.leaves, held, stacked) : held
    let feeds = stackedFeeds.feeds
    const rules = this.#layout.rules
    let ruleCall: Parameters<typeof nextState>[2] | undefined
    const fixedStep = this.#fixedStep
    const fixedCall = fixedStep?.derive(feeds, state, keys.length, stacked)
    if (fixedCall === undefined && rules.list.length > 0) {
      const dims: Record<string, number> = {}
      for (const leaf of store.spec.leaves) {
        const t = state[leaf.path[0] as string] as OrtTensor
        for (const [axis, name] of leaf.growing) dims[name] = t.dims[axis] as number
      }
      const derived = deriveInputs(
        rules,
        this.#ort,
        feeds,
        state,
        keys.length,
        dims,
        store.backend.name,
        this.#lend,
      )
      if (derived._tag === "Left") {
        disposeTree(store.backend, gathered.right)
        for (const t of stacked) t.dispose()
        for (const k of fresh) store.delete(k)
        return derived
      }
      ruleCall = derived.right.call
      // The model's feeds: the rules' own feeds left out (a fresh object, not `delete`, which
      // would slow every later lookup in it), their inputs put in.
      const modelFeeds: Record<string, OrtTensor> = {}
      for (const name in feeds)
        if (!own(rules.feeds, name)) setKey(modelFeeds, name, feeds[name] as OrtTensor)
      feeds = modelFeeds
      for (const name in derived.right.inputs) {
        const t = derived.right.inputs[name] as OrtTensor
        setKey(feeds, name, t)
        stacked.push(t)
      }
    }
    for (const { input } of this.pairs) setKey(feeds, input, state[input] as OrtTensor)
    // The held input: the streams' own feeds stacked when they start, the held rows after.
    let heldFed: OrtTensor | undefined
    if (heldLeaf !== undefined) {
      const name = heldLeaf.path[0] as string
      if (Array.isArray(heldGiven)) {
        const made = stackFeeds(this.#ort, {}, new Map([[name, heldGiven]]), this.batchAxes)
        stacked.push(...made.stacked)
        heldFed = made.feeds[name] as OrtTensor
      } else heldFed = heldGiven
      setKey(feeds, name, heldFed ?? (state[name] as OrtTensor))
    }
    // Gathered leaves handed to a successful scatter (a fixed cache's) are the store's to free.
    // (An array, not a Set: tensors fed to a run are never hashed; see ortBackend.)
    const handed: OrtTensor[] = []
    const cleanup = (outputs?: Record<string, OrtTensor>): void => {
      for (const name in held) {
        const t = held[name] as OrtTensor
        if (!handed.includes(t)) store.backend.dispose(t)
      }
      for (const t of stacked) t.dispose()
      if (outputs !== undefined) for (const t of Object.values(outputs)) t.dispose()
    }
    const forget = (): void => {
      for (const k of fresh) store.delete(k)
    }
    this.#inFlight = true
    this.#clock.freeze()
    try {
      let outputs: Record<string, OrtTensor>
      try {
        const pending =
          runOptions === undefined ? this.session.run(feeds) : this.session.run(feeds, runOptions)
        outputs = (await pending) as Record<string, OrtTensor>
      } catch (cause) {
        cleanup()
        if (this.#disposed) return E.left(new DisposedError({ what: "StreamingSession" }))
        this.#clock.thaw()
        forget()
        return E.left(new BackendError({ backend: store.backend.name, operation: "run", cause }))
      }
      if (this.#disposed) {
        cleanup(outputs)
        return E.left(new DisposedError({ what: "StreamingSession" }))
      }
      const reading = readOutputs(
        outputs,
        this.#kept,
        this.batchAxes,
        keys.length,
        store.backend.name,
        source.kind === "streams",
      )
      const split = reading instanceof Promise ? await reading : reading
      if (this.#disposed) {
        cleanup(outputs)
        return E.left(new DisposedError({ what: "StreamingSession" }))
      }
      this.#clock.thaw()
      if (split._tag === "Left") {
        cleanup(outputs)
        forget()
        return split
      }
      const next: Record<string, OrtTensor> = {}
      if (ruleCall !== undefined) {
        const made = nextState(rules, this.#ort, ruleCall, outputs, store.backend.name, this.#lend)
        if (made._tag === "Left") {
          cleanup(outputs)
          forget()
          return made
        }
        for (const name in made.right)
          if (own(made.right, name)) setKey(next, name, made.right[name] as OrtTensor)
      }
      // A fixed cache takes the step's blocks into the gathered rows, which go back whole.
      if (fixedStep !== undefined && fixedCall !== undefined) {
        const done = fixedStep.finish(fixedCall, outputs, state, store.backend)
        if (done._tag === "Left") {
          cleanup(outputs)
          forget()
          return done
        }
        setKey(next, cache?.lengthLeaf as string, fixedCall.lengths)
      }
      // The lengths advanced in place go back where they were if the step fails from here.
      const undo = (): void => {
        if (fixedCall !== undefined) fixedStep?.undo(fixedCall)
      }
      const skipped =
        fixedCall !== undefined
          ? (cache as CachePlan).blockOutputs
          : cache === undefined || ruleCall === undefined
            ? NO_NAMES
            : notAdopted(cache, ruleCall)
      if (cache !== undefined && ruleCall !== undefined && cache.blocks.length > 0) {
        const planned = planWrites(
          this.#blockTargets,
          (target) => state[target.input] as OrtTensor,
          outputs,
          (ruleCall?.feeds[cache.tokens]?.shape[1] ?? 0) as number,
        )
        if (planned._tag === "Left") {
          cleanup(outputs)
          forget()
          return planned
        }
        const written = writeBlocks(store.backend, planned.right, blockOffsets(cache, ruleCall))
        if (written._tag === "Left") {
          cleanup(outputs)
          forget()
          return written
        }
      }
      for (const { input, output } of this.pairs) {
        setKey(
          next,
          input,
          skipped.has(output) ? (state[input] as OrtTensor) : (outputs[output] as OrtTensor),
        )
      }
      // The held input: a copy of what the starting streams fed (the feeds stay the caller's),
      // or the held rows given back.
      const padded: OrtTensor[] = []
      if (heldLeaf !== undefined) {
        const name = heldLeaf.path[0] as string
        if (heldFed === undefined) setKey(next, name, state[name] as OrtTensor)
        else {
          const copied = copyFeed(store.backend, heldFed, leafContext(heldLeaf), keys.length)
          if (copied._tag === "Left") {
            cleanup(outputs)
            forget()
            return copied
          }
          padded.push(copied.right)
          setKey(next, name, copied.right)
        }
      }
      // Streams that started are shorter than the store's other rows: padded to them.
      let given = next
      if (starting) {
        const made = padToStore(
          store.backend,
          store.spec.leaves,
          next,
          store.dims(),
          this.#keptInputs,
          padded,
        )
        if (made._tag === "Left") {
          for (const t of padded) store.backend.dispose(t)
          cleanup(outputs)
          forget()
          return made
        }
        given = made.right
      }
      if (admitLater) {
        // The run succeeded: the new streams join now (the store evicts to make room).
        const admitted = store.gather(keys, VIEWS)
        if (admitted._tag === "Left") {
          undo()
          for (const t of padded) store.backend.dispose(t)
          cleanup(outputs)
          return admitted
        }
        disposeTree(store.backend, admitted.right)
      }
      // A growing cache's outputs are longer than the store's rows: every stream's rows grow
      // first (padded, masked), in the scatter's one atomic change.
      const scattered = store.scatter(keys, given as StateTree<OrtTensor>, this.#grow)
      if (scattered._tag === "Left") {
        undo()
        for (const t of padded) store.backend.dispose(t)
        cleanup(outputs)
        forget()
        return scattered
      }
      if (fixedCall !== undefined) handed.push(fixedCall.lengths)
      for (const { input, output } of this.pairs) {
        if (!skipped.has(output)) continue
        handed.push(state[input] as OrtTensor)
        ;(outputs[output] as OrtTensor).dispose()
      }
      if (heldLeaf !== undefined && heldFed === undefined)
        handed.push(state[heldLeaf.path[0] as string] as OrtTensor)
      // The store owns (and has freed) the state outputs; the listed ones are split or handed
      // over, the others freed.
      const rest: Record<string, OrtTensor> = {}
      for (const name in outputs) {
        const t = outputs[name] as OrtTensor
        if (this.#outputs.has(name)) setKey(rest, name, t)
        else if (!this.#stateOutputs.has(name)) t.dispose()
      }
      const result =
        source.kind === "batch"
          ? rest
          : splitOutputs(this.#ort, keys, rest, split.right, this.batchAxes)
      cleanup()
      return E.right(result)
    } finally {
      this.#clock.thaw()
      this.#inFlight = false
      if (this.#disposed) store.dispose()
    }
  }

  /**
   * The call's rows without adding its `fresh` streams to the store: copies of the held
   * streams' rows (`peek`: nothing added, evicted or reordered), init rows for the new ones.
   */
  #detached(
    keys: readonly StreamKey[],
    fresh: readonly StreamKey[],
  ): E.Either<StreamingRunError, StateTree<OrtTensor>> {
    const store = this.#store
    const backend = store.backend
    const old = keys.filter((k) => !fresh.includes(k))
    let peeked: Record<string, OrtTensor> | undefined
    if (old.length > 0) {
      const read = store.peek(old)
      if (read._tag === "Left") return read
      peeked = read.right as Record<string, OrtTensor>
    }
    const order = keys.map((k) => (fresh.includes(k) ? null : old.indexOf(k)))
    const dims = store.dims()
    const out: Record<string, OrtTensor> = {}
    const made: OrtTensor[] = []
    for (const leaf of store.spec.leaves) {
      const name = leaf.path[0] as string
      const context = leafContext(leaf)
      try {
        const t =
          peeked === undefined
            ? backend.allocate(
                leaf.shape.map((d, a) => {
                  const named = leaf.growing.get(a)
                  if (a === leaf.batchAxis) return keys.length
                  return named === undefined ? (d as number) : (dims[named] ?? 0)
                }),
                leaf.dtype,
                context,
              )
            : backend.gather(peeked[name] as OrtTensor, order, context)
        made.push(t)
        setKey(out, name, t)
      } catch (cause) {
        for (const t of made) backend.dispose(t)
        if (peeked !== undefined) disposeTree(backend, peeked as StateTree<OrtTensor>)
        return E.left(
          new BackendError({
            backend: backend.name,
            operation: peeked === undefined ? "allocate" : "gather",
            path: leaf.pathString,
            cause,
          }),
        )
      }
    }
    if (peeked !== undefined) disposeTree(backend, peeked as StateTree<OrtTensor>)
    return E.right(out as StateTree<OrtTensor>)
  }

  /**
   * `Left` for a call of an encoder–decoder (cross-attention caches kept, or the encoder input
   * held) that adds `fresh` streams to streams holding positions: the error its run would give,
   * found by reading the held streams' bookkeeping (`peek`: nothing added, evicted or reordered).
   */
  #refuseMixedStart(
    keys: readonly StreamKey[],
    fresh: readonly StreamKey[],
    checkHeld: ((empty: readonly number[]) => E.Either<StreamingRunError, unknown>) | undefined,
  ): E.Either<StreamingRunError, never> | undefined {
    const cache = this.#cache as CachePlan
    const kept = cache.keep[0]?.input
    if (checkHeld === undefined && kept === undefined) return undefined
    const store = this.#store
    const old = keys.filter((k) => !fresh.includes(k))
    const peeked = store.peek(old)
    if (peeked._tag === "Left") return peeked
    const bookkeeping = (peeked.right as Record<string, OrtTensor>)[cache.leaf] as OrtTensor
    const started = emptyRows(bookkeeping).length < old.length
    disposeTree(store.backend, peeked.right)
    if (!started) return undefined
    const empty = keys.flatMap((k, i) => (fresh.includes(k) ? [i] : []))
    if (checkHeld !== undefined) {
      const refused = checkHeld(empty)
      if (refused._tag === "Left") return refused
    }
    return kept === undefined ? undefined : E.left(noEncoderCache(kept, empty[0] as number))
  }

  reset(keys: readonly StreamKey[]): ReturnType<SessionStore["reset"]> {
    return this.#idle("reset") ?? this.#store.reset(keys)
  }

  fork(from: StreamKey, to: readonly StreamKey[]): ReturnType<SessionStore["fork"]> {
    return this.#idle("fork") ?? this.#store.fork(from, to)
  }

  rewind(
    keys: readonly StreamKey[],
    n: number | readonly number[],
  ): ReturnType<StreamingSession["rewind"]> {
    const idle = this.#idle("rewind")
    if (idle !== undefined) return idle
    const cache = this.#cache
    if (cache === undefined) return E.left(noCache())
    const refused = refuseRewind(cache, this.#layout.rules)
    if (refused !== undefined) return E.left(refused)
    const isCount = (x: unknown) => Number.isSafeInteger(x) && (x as number) >= 0
    const perKey = Array.isArray(n)
    if (
      perKey
        ? n.length !== (Array.isArray(keys) ? keys.length : -1) || !n.every(isCount)
        : !isCount(n)
    ) {
      return E.left(
        new OptionError({
          path: "n",
          expected: "a non-negative integer, or one per key of keys",
          actual: n,
        }),
      )
    }
    if (keys.length === 0) return E.right(undefined)
    const store = this.#store
    // Read without counting as a use: a refused rewind leaves even the streams' recency as it was.
    // Held streams side by side come as views of the store's rows, so only the lengths change
    // hands: a rewind costs its rows, not their caches (`peek` copies every leaf). Not when
    // streams expire: such a gather could evict idle streams and count as a use.
    const gathered =
      !this.#expires && keys.every((k) => store.holds(k))
        ? store.gather(keys, VIEWS)
        : store.peek(keys)
    if (gathered._tag === "Left") return gathered
    const counts = keys.map((_, i) => (perKey ? (n[i] as number) : (n as number)))
    if (counts.every((k) => k === 0)) {
      disposeTree(store.backend, gathered.right)
      return E.right(undefined)
    }
    const state = gathered.right as Record<string, OrtTensor>
    const leaf = state[cache.leaf] as OrtTensor
    const view = new HostTensor(leaf.type as "int32", leaf.dims, leaf.data as Int32Array)
    for (const [i, key] of keys.entries()) {
      const holds = positions(cache, view, i)
      const k = counts[i] as number
      if (holds < k) {
        disposeTree(store.backend, gathered.right)
        return E.left(
          new ShapeMismatchError({
            path: formatPath([key, cache.leaf]),
            expected: `at least ${k} positions to rewind`,
            actual: holds,
            detail: `keys[${i}]`,
          }),
        )
      }
    }
    const made = rewound(
      cache,
      view,
      keys.map((_, i) => i),
      counts,
    )
    if (made._tag === "Left") {
      // Not reached: the rows are 0..k-1, `n` and each stream's positions were checked above.
      disposeTree(store.backend, gathered.right)
      return E.left(made.left as OptionError | ShapeMismatchError)
    }
    const host = made.right.next
    const replaced = new this.#ort.Tensor(
      host.dtype as "int32",
      host.data as Int32Array,
      host.shape,
    )
    const next: Record<string, OrtTensor> = {}
    for (const name in state)
      setKey(next, name, name === cache.leaf ? replaced : (state[name] as OrtTensor))
    const scattered = store.scatter(keys, next as StateTree<OrtTensor>)
    if (scattered._tag === "Left") {
      replaced.dispose()
      disposeTree(store.backend, gathered.right)
      return scattered
    }
    store.backend.dispose(leaf)
    return E.right(undefined)
  }

  delete(key: StreamKey): E.Either<BusyError | DisposedError | KeyError, boolean> {
    const idle = this.#idle("delete")
    if (idle !== undefined) return idle
    if (!keyOk(key))
      return E.left(new KeyError({ expected: "a string or finite number key", actual: key }))
    return E.right(this.#store.delete(key))
  }

  sweep(): E.Either<BusyError | DisposedError, number> {
    return this.#idle("sweep") ?? E.right(this.#store.sweep())
  }

  /** Starts the `sweepEveryMs` timer; a tick during a run is skipped (the sweep is refused). */
  sweepEvery(ms: number): void {
    const timer = setInterval(() => this.sweep(), ms)
    // Node's timers keep the process alive unless unref'd; a browser's interval id is a number.
    const handle: unknown = timer
    if (typeof handle === "object" && handle !== null && "unref" in handle) {
      if (typeof handle.unref === "function") handle.unref()
    }
    this.#timer = timer
  }

  async snapshot(key: StreamKey, options?: SnapshotOptions): ReturnType<SessionStore["snapshot"]> {
    return this.#idle("snapshot") ?? this.#store.snapshot(key, options)
  }

  restore(key: StreamKey, bytes: Uint8Array | Snapshot): ReturnType<SessionStore["restore"]> {
    const idle = this.#idle("restore")
    if (idle !== undefined) return idle
    const cache = this.#cache
    const checked = cache === undefined ? E.right(bytes) : checkRestored(cache, bytes)
    return checked._tag === "Left" ? checked : this.#store.restore(key, checked.right)
  }

  flush(): Promise<void> {
    return this.#store.flush()
  }

  dispose(): void {
    this.#disposed = true
    if (this.#timer !== undefined) clearInterval(this.#timer)
    this.#timer = undefined
    // A run in flight frees the store when it settles (its gathered batch is the run's input).
    if (!this.#inFlight) this.#store.dispose()
  }

  [Symbol.dispose](): void {
    this.dispose()
  }
}
