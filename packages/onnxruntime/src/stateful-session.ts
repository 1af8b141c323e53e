import {
  type AliasedLeafError,
  BackendError,
  BatchSizeMismatchError,
  BusyError,
  DTypeMismatchError,
  type Dim,
  DisposedError,
  type Init,
  type OptionError,
  type LeafContext,
  type RowsInput,
  ShapeMismatchError,
  type Snapshot,
  type SnapshotOptions,
  type SpecError,
  type StateBackend,
  type StateSaver,
  type StateTree,
  StructureMismatchError,
  createStateSaver,
  formatPath,
  HostTensor,
  type TensorCheckError,
} from "@statesaver/core"
import type * as common from "onnxruntime-common"
import type { InputRule, RuleCall } from "./input-rules.js"
import {
  type CachePlan,
  type KvCacheOptions,
  type RewindError,
  checkRestored,
  blockOffsets,
  notAdopted,
  noCache,
  refuseRewind,
  rewound,
} from "./kv-cache.js"
import {
  type BlockTarget,
  type BlockWrite,
  blockTargets,
  planWrites,
  writeBlocks,
} from "./internal/blocks.js"
import type { OrtRuntime, OrtTensor } from "./ort-backend.js"
import {
  type Rules,
  advance,
  advancesInPlace,
  deriveInputs,
  nextState,
  refuseDerivedFeeds,
} from "./internal/rules.js"
import { GuardedSaver } from "./internal/busy-guard.js"
import { type FixedStep, fixedStep } from "./internal/fixed-step.js"
import { type GrowingStep, growingStep } from "./internal/growing-step.js"
import { listedOutputs } from "./internal/lean-feeds.js"
import { copyFeed, emptyRows } from "./internal/held-input.js"
import { scratchArrays } from "./internal/scratch.js"
import * as E from "./internal/either.js"
import {
  copyFeeds,
  deriveSessionState,
  refuseFeedTypes,
  refuseStateFeeds,
  refuseUnknownFeeds,
  setKey,
} from "./internal/session-state.js"
import { checkFeedRecord, optionalRecord, own } from "./internal/validate.js"
import type { StatePair } from "./state-pairing.js"
import type { BusyGuarded, Feeds, OrtSession } from "./session-types.js"

/**
 * Options of `createStatefulSession`. `O` is the names of the outputs `run` hands back, inferred
 * from `outputs`.
 *
 * @category sessions
 * @since 0.1.0
 */
export interface StatefulSessionOptions<O extends string = string> {
  readonly session: OrtSession
  /** Holds the state: `ortBackend({ ort })`, or `ortBackend({ ort, location: "gpu-buffer", device })`. */
  readonly backend: StateBackend<OrtTensor>
  /** Rows in the batch; `select` may change it later. */
  readonly batchSize: number
  /** State pairs, output name → input name, that override the naming conventions. */
  readonly pairs?: Readonly<Record<string, string>>
  /**
   * Allows `pairs` to swap two pairs the naming conventions agree on (`{ hn: "c", cn: "h" }`),
   * refused otherwise with a `StructureMismatchError`: with two states of one shape such a swap
   * runs, silently wrong.
   */
  readonly crossedPairs?: boolean
  /** Name of the batch dim in the model's metadata. Default: the first of `batch`, `batch_size`, `N` found. */
  readonly batchDim?: string
  /** Starting sizes of other named dims of the state; absent ones start at 0 (an empty KV cache). */
  readonly dims?: Readonly<Record<string, number>>
  /** Init of state inputs, by input name; zeros otherwise. */
  readonly init?: Readonly<Record<string, Init>>
  /** Shapes that replace the metadata of state inputs, by input name (for models with unnamed dims). */
  readonly shapes?: Readonly<Record<string, readonly Dim[]>>
  /**
   * The non-state outputs `run` hands back (checked against `session.outputNames` at creation),
   * which types its result: `outputs: ["output"]` makes `out.output` an `OrtTensor`. Outputs not
   * listed are disposed after each run. Default: every non-state output, typed by `string`.
   */
  readonly outputs?: readonly O[]
  /**
   * Input rules: model inputs computed from per-row bookkeeping state and the call's feeds
   * (`sileroContext()` for Silero VAD). Their state leaves join the session's state.
   */
  readonly rules?: readonly InputRule[]
  /**
   * A decoder's KV cache with per-row lengths: `{ kind: "growing" }` or `{ kind: "fixed",
   * capacity }`. The session then derives `attention_mask`, `position_ids` and
   * `cache_position` (those the model takes) from each row's length.
   */
  readonly cache?: KvCacheOptions
}

/**
 * The saver of a `StatefulSession`: a `StateSaver` whose calls that return an `Either` (`save`,
 * `saveLeaves`, `reset`, `select`, `snapshot`, `restore`) return `Left(BusyError)` while a run is
 * in flight. Reads (`state`, `leaves`, `dims`) are answered; `dispose` disposes the session.
 *
 * @category sessions
 * @since 0.2.0
 */
export type SessionSaver = BusyGuarded<StateSaver<OrtTensor>>

/**
 * Errors `createStatefulSession` can return: malformed options or session (`OptionError`),
 * unpairable state names (`StructureMismatchError`), metadata the spec cannot be derived from
 * (`SpecError`, `DTypeMismatchError`, `ShapeMismatchError`), an allocation that failed
 * (`BackendError`).
 *
 * @category sessions
 * @since 0.2.0
 */
export type CreateStatefulSessionError =
  | OptionError
  | StructureMismatchError
  | SpecError
  | DTypeMismatchError
  | ShapeMismatchError
  | BackendError

/**
 * Errors `StatefulSession.run` can return: another run in flight (`BusyError`), a disposed
 * session or feed (`DisposedError`), bad run options (`OptionError`), feeds that are not a record
 * of ORT tensors, miss an input, or name a state input or no input (`StructureMismatchError`), a
 * run that threw (`BackendError`), state outputs that do not fit the state (`ShapeMismatchError`,
 * `DTypeMismatchError`, `BatchSizeMismatchError`, `AliasedLeafError`).
 *
 * @category sessions
 * @since 0.2.0
 */
export type StatefulRunError =
  | BusyError
  | DisposedError
  | OptionError
  | StructureMismatchError
  | ShapeMismatchError
  | DTypeMismatchError
  | BatchSizeMismatchError
  | AliasedLeafError
  | BackendError

/**
 * An `InferenceSession` that carries its own state between runs. `run` is asynchronous and
 * resolves to an `Either`; every other call is synchronous (but `snapshot`). While a run is in
 * flight, every call that changes or reads out the state is refused with a `BusyError`, through
 * the session and through its `saver` alike: state operations never interleave with a run.
 *
 * @category sessions
 * @since 0.1.0
 */
export interface StatefulSession<O extends string = string> extends Disposable {
  readonly session: OrtSession
  /** The state pairs, in output order. */
  readonly pairs: readonly StatePair[]
  /**
   * The saver that holds the state, keyed by state input name, behind the session's busy guard:
   * its changing calls return `Left(BusyError)` while a run is in flight.
   */
  readonly saver: SessionSaver
  readonly batchSize: number
  /** True while a `run` has not resolved. */
  readonly busy: boolean
  /** True once `dispose` was called (a run in flight then frees the state when it settles). */
  readonly disposed: boolean
  /**
   * Runs the model with `feeds` and the saved state, saves the new state (freeing the old one)
   * and resolves to the other outputs (those named by the `outputs` option, if given), which the
   * caller owns. On `Left` the state is unchanged and the feeds are still the caller's.
   */
  run(
    feeds: Feeds,
    options?: common.InferenceSession.RunOptions,
  ): Promise<E.Either<StatefulRunError, Record<O, OrtTensor>>>
  /**
   * The current state by input name, borrowed: valid until the next call that changes it, and so
   * are their arrays (a growing cache's mask is written into the memory of the masks before it).
   * Copy what you keep, or take a `snapshot`.
   */
  state(): Readonly<Record<string, OrtTensor>>
  /** Current sizes of the growing dims (a KV cache's past sequence length). */
  dims(): Readonly<Record<string, number>>
  /** Replaces the state with tensors the session then owns. */
  save(next: Readonly<Record<string, OrtTensor>>): ReturnType<SessionSaver["save"]>
  /** All rows (and growing dims) back to init, or only the given rows, before the next run. */
  reset(rows?: RowsInput): ReturnType<SessionSaver["reset"]>
  /**
   * Gathers rows into a new batch: reorder beams, drop finished rows, `null` for a fresh row. At
   * the same batch size and without `null`, the rows move within the tensors held (in their
   * arrays on the CPU; on WebGPU through a scratch buffer the backend keeps, on the device).
   */
  select(rows: readonly (number | null)[]): ReturnType<SessionSaver["select"]>
  /**
   * Drops the last `n` positions of each of `rows` (or `n[i]` of `rows[i]`, one count per row)
   * from the KV cache (the `cache` option), all rows checked first, in one change:
   * speculative-decoding rollback, or editing the end of a conversation. The keys stay where
   * they are; the rows' lengths (fixed) or masks (growing) no longer count them, so the next
   * tokens overwrite them (fixed) or are appended after them, masked out (growing). A session
   * whose state holds more than the cache (a hybrid model's recurrent `past_ssm`/`past_conv`, a
   * rule's bookkeeping) has nothing a rewind can roll back there: it is refused with a
   * `StructureMismatchError` naming that leaf; snapshot before the tokens to drop and restore.
   */
  rewind(
    rows: readonly number[],
    n: number | readonly number[],
  ): E.Either<RewindError | BusyError | DisposedError | BackendError | TensorCheckError, void>
  /** Copies the state to host memory as snapshot bytes, with the caller's `metadata` strings. */
  snapshot(options?: SnapshotOptions): ReturnType<SessionSaver["snapshot"]>
  /** Replaces the state with a snapshot of the same spec and batch size; returns its metadata. */
  restore(bytes: Uint8Array | Snapshot): ReturnType<SessionSaver["restore"]>
  /**
   * Frees the state (once a run in flight has settled). The `InferenceSession` stays the
   * caller's. Idempotent.
   */
  dispose(): void
}

/**
 * Wraps an `InferenceSession` whose state outputs feed its state inputs: pairs them by name,
 * derives the spec from the input metadata and allocates the initial state.
 * Returns an Either: `Left(OptionError)` for a malformed option (the option's name is the error's
 * path: `session.inputNames`, `batchSize`, `pairs.hn`, `init.h`, `outputs[0]`...), and the errors
 * of `CreateStatefulSessionError` for a model whose state cannot be paired or derived.
 *
 * @example
 * const session = await ort.InferenceSession.create("silero_vad_v5.onnx")
 * const vad = orThrow(
 *   createStatefulSession({
 *     session, backend: ortBackend({ ort }), batchSize: 1, outputs: ["output"],
 *     rules: [sileroContext()], // Silero reads each frame after the previous one's last 64 samples
 *   }),
 * )
 * const out = orThrow(await vad.run({ frame, sr })) // frame: [1, 512] float32
 * const speech: number = orThrow(tensorScalar(out.output, "float32"))
 * out.output.dispose()
 * @category sessions
 * @since 0.1.0
 */
export function createStatefulSession<const O extends string = string>(
  options: StatefulSessionOptions<O>,
): E.Either<CreateStatefulSessionError, StatefulSession<O>> {
  const derived = deriveSessionState(options)
  if (derived._tag === "Left") return derived
  const { session, pairs, spec, batchDim, outputs, rules, callerInputs, cache, dims, inputTypes } =
    derived.right
  const saver = createStateSaver({
    spec,
    backend: options.backend,
    batchSize: options.batchSize,
    batchDim,
    ...(dims === undefined ? {} : { dims }),
  })
  if (saver._tag === "Left") return saver
  return E.right(
    new Session<O>(session, pairs, saver.right, outputs, rules, callerInputs, cache, inputTypes),
  )
}

/** The leaf of the input held per row, its context, and the index of the cache's bookkeeping leaf. */
interface HeldLeaf {
  readonly index: number
  readonly leaf: LeafContext
  readonly book: number
}

/** No output names (a session without a cache, or nothing kept). */
const NO_NAMES: ReadonlySet<string> = new Set()

class Session<O extends string> implements StatefulSession<O> {
  #inFlight = false
  #disposed = false
  readonly #saver: StateSaver<OrtTensor>
  readonly #stateInputs: ReadonlySet<string>
  /** The outputs a run hands back; the others (state outputs aside) are disposed. */
  readonly #outputs: ReadonlySet<string>
  /** What the caller feeds: model inputs but the state inputs and those rules compute; rule feeds. */
  readonly #inputs: readonly string[]
  /** The element type the model declares for each input the caller feeds. */
  readonly #inputTypes: ReadonlyMap<string, string>
  /**
   * The saver's leaves in order (one per state input or bookkeeping leaf, keyed by its name):
   * the pair, or the name of a rule's bookkeeping leaf.
   */
  readonly #byLeaf: readonly (StatePair | string)[]
  readonly #rules: Rules
  /** Whether the rules update the bookkeeping leaves in place after a run (the built-in ones). */
  readonly #inPlace: boolean
  readonly #ort: OrtRuntime
  readonly #cache: CachePlan | undefined
  /** A fixed cache's block outputs and the leaves they are written into. */
  readonly #blockTargets: readonly BlockTarget[]
  /** The leaf of the input held per row (`cache.encoder`), and of the cache's bookkeeping. */
  readonly #held: HeldLeaf | undefined
  /** Arrays for the built-in rules' inputs, written over call after call. */
  readonly #lend = scratchArrays()
  /** A cache's rule alone: the lean step for calls as expected (others take `#prepare`). */
  readonly #lean: FixedStep | GrowingStep | undefined
  readonly saver: SessionSaver

  constructor(
    readonly session: OrtSession,
    readonly pairs: readonly StatePair[],
    saver: StateSaver<OrtTensor>,
    outputs: ReadonlySet<string>,
    rules: Rules,
    inputs: readonly string[],
    cache: CachePlan | undefined,
    inputTypes: ReadonlyMap<string, string>,
  ) {
    this.#inputTypes = inputTypes
    this.#cache = cache
    this.#blockTargets = cache === undefined ? [] : blockTargets(cache, saver.spec.leaves)
    this.#saver = saver
    this.#stateInputs = new Set(pairs.map((p) => p.input))
    this.#outputs = outputs
    this.#inputs = inputs
    this.#rules = rules
    this.#inPlace = advancesInPlace(rules)
    // The runtime of the state's tensors, to wrap the rules' inputs for it.
    const leaf = saver.leaves()[0] as OrtTensor
    this.#ort = { Tensor: leaf.constructor as OrtRuntime["Tensor"] }
    this.#byLeaf = saver.spec.leaves.map(
      (leaf) => pairs.find((p) => p.input === leaf.path[0]) ?? String(leaf.path[0]),
    )
    const encoder = cache?.encoder
    const index = encoder === undefined ? -1 : this.#byLeaf.indexOf(encoder)
    const leafOf = saver.spec.leaves[index]
    this.#held =
      leafOf === undefined || cache === undefined
        ? undefined
        : {
            index,
            leaf: { path: leafOf.pathString, batchAxis: leafOf.batchAxis, init: leafOf.init },
            book: this.#byLeaf.indexOf(cache.leaf),
          }
    const lean = {
      cache,
      rules,
      inputs,
      types: inputTypes,
      byLeaf: this.#byLeaf,
      blocks: this.#blockTargets,
      outputs,
      backend: saver.backend,
      ort: this.#ort,
      lend: this.#lend,
    }
    this.#lean = fixedStep(lean) ?? growingStep(lean, (next) => saver.saveLeaves(next))
    this.saver = new GuardedSaver(saver, {
      kind: "StatefulSession",
      busy: () => this.#inFlight,
      disposed: () => this.#disposed,
      dispose: () => this.dispose(),
    })
  }

  get batchSize(): number {
    return this.#saver.batchSize
  }

  get busy(): boolean {
    return this.#inFlight
  }

  get disposed(): boolean {
    return this.#disposed
  }

  /** `Left` when the session refuses `operation` now: disposed, or a run in flight. */
  #idle(operation: string): E.Either<BusyError | DisposedError, never> | undefined {
    if (this.#disposed) return E.left(new DisposedError({ what: "StatefulSession" }))
    if (this.#inFlight) return E.left(new BusyError({ operation, inFlight: "a run" }))
    return undefined
  }

  async run(
    feeds: Feeds,
    options?: common.InferenceSession.RunOptions,
  ): Promise<E.Either<StatefulRunError, Record<O, OrtTensor>>> {
    const idle = this.#idle("run")
    if (idle !== undefined) return idle
    const held = this.#saver.leaves()
    const rules = this.#rules
    const fast = this.#lean?.prepare(feeds, options, held, this.#saver.batchSize)
    let merged: Record<string, OrtTensor>
    let ruleCall: RuleCall | undefined
    let fedHeld: OrtTensor | undefined
    if (fast !== undefined) merged = fast.merged
    else {
      const prepared = this.#prepare(feeds, options, held)
      if (prepared._tag === "Left") return prepared
      ;({ merged, ruleCall, fedHeld } = prepared.right)
    }
    this.#inFlight = true
    let outputs: Record<string, OrtTensor>
    try {
      const result =
        options === undefined ? this.session.run(merged) : this.session.run(merged, options)
      outputs = (await result) as Record<string, OrtTensor>
    } catch (e) {
      this.#inFlight = false
      this.#settleDispose()
      return E.left(
        new BackendError({ backend: this.#saver.backend.name, operation: "run", cause: e }),
      )
    }
    this.#inFlight = false
    if (this.#disposed) {
      for (const t of Object.values(outputs)) t.dispose()
      this.#settleDispose()
      return E.left(new DisposedError({ what: "StatefulSession" }))
    }
    if (fast !== undefined) {
      const done = (this.#lean as FixedStep | GrowingStep).finish(fast, outputs, held)
      return done as E.Either<StatefulRunError, Record<O, OrtTensor>>
    }
    // The new bookkeeping leaves; rules that advance in place keep theirs (written once
    // everything else is done).
    let book: Record<string, OrtTensor> | undefined
    if (ruleCall !== undefined && !this.#inPlace) {
      const made = nextState(rules, this.#ort, ruleCall, outputs, this.#saver.backend.name)
      if (made._tag === "Left") {
        for (const t of Object.values(outputs)) t.dispose()
        return made
      }
      book = made.right
    }
    // A fixed cache keeps its tensors and takes the step's blocks at each row's length; a merged
    // encoder–decoder keeps its cross-attention caches once the cache is in use.
    const cache = this.#cache
    const skipped =
      cache === undefined || ruleCall === undefined ? NO_NAMES : notAdopted(cache, ruleCall)
    let writes: BlockWrite[] = []
    if (cache !== undefined && cache.blocks.length > 0) {
      const planned = planWrites(
        this.#blockTargets,
        (target) => held[target.index] as OrtTensor,
        outputs,
        (ruleCall?.feeds[cache.tokens]?.shape[1] ?? 0) as number,
      )
      if (planned._tag === "Left") {
        for (const t of Object.values(outputs)) t.dispose()
        return planned
      }
      writes = planned.right
    }
    // The session keeps its own copy of a held input the caller fed (the feed stays theirs).
    let heldCopy: OrtTensor | undefined
    if (fedHeld !== undefined && this.#held !== undefined) {
      const copied = copyFeed(this.#saver.backend, fedHeld, this.#held.leaf, this.#saver.batchSize)
      if (copied._tag === "Left") {
        for (const t of Object.values(outputs)) t.dispose()
        return copied
      }
      heldCopy = copied.right
    }
    const next = this.#byLeaf.map((leaf, i) =>
      i === this.#held?.index
        ? (heldCopy ?? (held[i] as OrtTensor))
        : typeof leaf === "string"
          ? ((book?.[leaf] ?? held[i]) as OrtTensor)
          : skipped.has(leaf.output)
            ? (held[i] as OrtTensor)
            : (outputs[leaf.output] as OrtTensor),
    )
    const offsets =
      cache === undefined || ruleCall === undefined ? [] : blockOffsets(cache, ruleCall)
    // Nothing to check or adopt when every leaf stays (a fixed cache advanced in place).
    const saved = next.every((t, i) => t === held[i])
      ? E.right(undefined)
      : this.#saver.saveLeaves(next)
    if (saved._tag === "Left") {
      // Nothing of a failed run reaches the caller: every output is freed.
      for (const t of Object.values(outputs)) t.dispose()
      if (heldCopy !== undefined) this.#saver.backend.dispose(heldCopy)
      return saved
    }
    const written = writeBlocks(this.#saver.backend, writes, offsets)
    if (written._tag === "Left") {
      for (const t of Object.values(outputs)) if (!next.includes(t)) t.dispose()
      return written
    }
    if (ruleCall !== undefined && this.#inPlace) advance(rules, ruleCall)
    // The saver owns the state outputs now; the listed outputs are the caller's, the rest freed.
    return E.right(listedOutputs(outputs, this.#outputs, next) as Record<O, OrtTensor>)
  }

  /**
   * The feeds of a run and the rules' call, every feed checked (any session, any call): the
   * general path, which also refuses a bad call.
   */
  #prepare(
    feeds: Feeds,
    options: common.InferenceSession.RunOptions | undefined,
    held: readonly OrtTensor[],
  ): E.Either<
    StatefulRunError,
    {
      merged: Record<string, OrtTensor>
      ruleCall: RuleCall | undefined
      fedHeld: OrtTensor | undefined
    }
  > {
    const checked = checkFeedRecord(feeds, "", (name) => formatName(name))
    if (checked._tag === "Left") return checked
    const names = Object.keys(checked.right)
    const refused = refuseStateFeeds(names, this.#stateInputs)
    if (refused._tag === "Left") return refused
    const computed = refuseDerivedFeeds(names, this.#rules)
    if (computed._tag === "Left") return computed
    const unknown = refuseUnknownFeeds(names, this.#inputs)
    if (unknown._tag === "Left") return unknown
    const typed = refuseFeedTypes(checked.right, this.#inputTypes)
    if (typed._tag === "Left") return typed
    const heldInput = this.#cache?.encoder
    const missing = this.#inputs.find((name) => name !== heldInput && !own(checked.right, name))
    if (missing !== undefined) {
      return E.left(
        new StructureMismatchError({
          path: formatName(missing),
          expected: `a feed for input ${missing}`,
          actual: "none",
        }),
      )
    }
    const opts = optionalRecord(options, "options", "ONNX Runtime run options (a record)")
    if (opts._tag === "Left") return opts
    const rules = this.#rules
    // The input held per row: the caller's when the cache starts, the session's after.
    let fedHeld: OrtTensor | undefined
    if (this.#held !== undefined) {
      const given = this.#checkHeld(checked.right, held)
      if (given._tag === "Left") return given
      fedHeld = given.right
    }
    // The rules' own feeds are not the model's.
    const merged: Record<string, OrtTensor> = copyFeeds(checked.right, rules.feeds)
    const book: Record<string, OrtTensor> = {}
    this.#byLeaf.forEach((leaf, i) => {
      if (i === this.#held?.index) {
        if (fedHeld === undefined) setKey(merged, leaf as string, held[i] as OrtTensor)
      } else if (typeof leaf === "string") book[leaf] = held[i] as OrtTensor
      else setKey(merged, leaf.input, held[i] as OrtTensor)
    })
    let ruleCall: RuleCall | undefined
    if (rules.list.length > 0) {
      // Sizes of the named dims, read off the held leaves (`dims()` would check each again).
      const dims: Record<string, number> = {}
      this.#saver.spec.leaves.forEach((leaf, i) => {
        for (const [axis, name] of leaf.growing)
          dims[name] = (held[i] as OrtTensor).dims[axis] as number
      })
      const derived = deriveInputs(
        rules,
        this.#ort,
        checked.right,
        book,
        this.#saver.batchSize,
        dims,
        this.#saver.backend.name,
        this.#lend,
      )
      if (derived._tag === "Left") return derived
      ruleCall = derived.right.call
      for (const name in derived.right.inputs)
        setKey(merged, name, derived.right.inputs[name] as OrtTensor)
    }
    return E.right({ merged, ruleCall, fedHeld })
  }

  /**
   * The feed of the input held per row on a run that starts the cache (no row holds a
   * position: the caller must feed it, rows and dims as declared), or `undefined` on a later
   * run (the caller must not).
   */
  #checkHeld(
    feeds: Readonly<Record<string, OrtTensor>>,
    held: readonly OrtTensor[],
  ): E.Either<
    StructureMismatchError | DTypeMismatchError | ShapeMismatchError | BatchSizeMismatchError,
    OrtTensor | undefined
  > {
    const { index, leaf, book } = this.#held as HeldLeaf
    const name = String(this.#byLeaf[index])
    const path = formatName(name)
    // Rows that hold no position (fresh or reset): all of them when the cache starts.
    const empty = emptyRows(held[book] as OrtTensor)
    const starting = empty.length === this.#saver.batchSize
    const t = own(feeds, name) ? feeds[name] : undefined
    if (starting && t === undefined) {
      return E.left(
        new StructureMismatchError({
          path,
          expected: `a feed for ${name} on a run that starts the cache (no row holds a position)`,
          actual: "none",
          detail: "the session holds it per row from then on",
        }),
      )
    }
    if (!starting && empty.length > 0) {
      return E.left(
        new StructureMismatchError({
          path,
          expected: `${name} in every row (each fed when the cache started)`,
          actual: `none in row ${empty[0]}`,
          detail:
            "a fresh or reset row cannot join rows under way: reset every row, or run it in a session of its own",
        }),
      )
    }
    if (!starting) {
      if (t === undefined) return E.right(undefined)
      return E.left(
        new StructureMismatchError({
          path,
          expected: `no feed for ${name}: the session holds it per row since the cache started`,
          actual: "a feed",
          detail: "reset every row to start again with new ones",
        }),
      )
    }
    const spec = this.#saver.spec.leaves[index]
    const fed = t as OrtTensor
    if (spec !== undefined && fed.type !== spec.dtype) {
      return E.left(new DTypeMismatchError({ path, expected: spec.dtype, actual: fed.type }))
    }
    // As declared: named dims (the encoder's length) take any size.
    const shape = spec?.spec.shape ?? []
    if (
      fed.dims.length !== shape.length ||
      shape.some((d, a) => typeof d === "number" && a !== leaf.batchAxis && fed.dims[a] !== d)
    ) {
      return E.left(
        new ShapeMismatchError({
          path,
          expected: shape.map((d, a) => (a === leaf.batchAxis ? this.#saver.batchSize : d)),
          actual: fed.dims,
        }),
      )
    }
    if (fed.dims[leaf.batchAxis] !== this.#saver.batchSize) {
      return E.left(
        new BatchSizeMismatchError({
          path,
          expected: this.#saver.batchSize,
          actual: fed.dims[leaf.batchAxis] as number,
          axis: leaf.batchAxis,
        }),
      )
    }
    return E.right(fed)
  }

  state(): Readonly<Record<string, OrtTensor>> {
    return this.saver.state() as Readonly<Record<string, OrtTensor>>
  }

  dims(): Readonly<Record<string, number>> {
    return this.saver.dims()
  }

  save(next: Readonly<Record<string, OrtTensor>>): ReturnType<SessionSaver["save"]> {
    return this.#idle("save") ?? this.#saver.save(next as StateTree<OrtTensor>)
  }

  reset(rows?: RowsInput): ReturnType<SessionSaver["reset"]> {
    return this.#idle("reset") ?? this.#saver.reset(rows)
  }

  select(rows: readonly (number | null)[]): ReturnType<SessionSaver["select"]> {
    return this.#idle("select") ?? this.#saver.select(rows)
  }

  rewind(
    rows: readonly number[],
    n: number | readonly number[],
  ): E.Either<RewindError | BusyError | DisposedError | BackendError | TensorCheckError, void> {
    const idle = this.#idle("rewind")
    if (idle !== undefined) return idle
    const cache = this.#cache
    if (cache === undefined) return E.left(noCache())
    const refused = refuseRewind(cache, this.#rules)
    if (refused !== undefined) return E.left(refused)
    const held = this.#saver.leaves()
    const i = this.#byLeaf.indexOf(cache.leaf)
    const t = held[i] as OrtTensor
    const view = new HostTensor(t.type as "int32", t.dims, t.data as Int32Array)
    const made = rewound(cache, view, rows, n)
    if (made._tag === "Left") return made
    const next = [...held]
    const { next: host } = made.right
    next[i] = new this.#ort.Tensor(host.dtype as "int32", host.data as Int32Array, host.shape)
    return this.#saver.saveLeaves(next)
  }

  async snapshot(options?: SnapshotOptions): ReturnType<SessionSaver["snapshot"]> {
    return this.#idle("snapshot") ?? this.#saver.snapshot(options)
  }

  restore(bytes: Uint8Array | Snapshot): ReturnType<SessionSaver["restore"]> {
    const idle = this.#idle("restore")
    if (idle !== undefined) return idle
    const cache = this.#cache
    const checked = cache === undefined ? E.right(bytes) : checkRestored(cache, bytes)
    return checked._tag === "Left" ? checked : this.#saver.restore(checked.right)
  }

  dispose(): void {
    this.#disposed = true
    // The state is an input of a run in flight: it is freed when that run settles.
    if (!this.#inFlight) this.#saver.dispose()
  }

  /** Frees the state of a session disposed while its run was in flight. */
  #settleDispose(): void {
    if (this.#disposed) this.#saver.dispose()
  }

  [Symbol.dispose](): void {
    this.dispose()
  }
}

/** A feed's path: its input name. */
const formatName = (name: string): string => formatPath([name])
