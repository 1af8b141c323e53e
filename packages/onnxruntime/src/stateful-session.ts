import {
  BackendError,
  BusyError,
  type Dim,
  DisposedError,
  type Init,
  type RowsInput,
  type Snapshot,
  type StateBackend,
  type StateError,
  type StateSaver,
  type StateTree,
  createStateSaver,
} from "@statesaver/core"
import * as E from "fp-ts/lib/Either.js"
import type * as common from "onnxruntime-common"
import type { OrtTensor } from "./ort-backend.js"
import {
  copyFeeds,
  deriveSessionState,
  refuseStateFeeds,
  setKey,
} from "./internal/session-state.js"
import type { StatePair } from "./state-pairing.js"

/**
 * The parts of an `InferenceSession` a `StatefulSession` uses.
 *
 * @category sessions
 * @since 0.1.0
 */
export type OrtSession = Pick<
  common.InferenceSession,
  "run" | "inputNames" | "outputNames" | "inputMetadata" | "outputMetadata"
>

/**
 * Options of `createStatefulSession`.
 *
 * @category sessions
 * @since 0.1.0
 */
export interface StatefulSessionOptions {
  readonly session: OrtSession
  /** Holds the state: `ortBackend({ ort })`, or `ortBackend({ ort, location: "gpu-buffer", device })`. */
  readonly backend: StateBackend<OrtTensor>
  /** Rows in the batch; `select` may change it later. */
  readonly batchSize: number
  /** State pairs, output name → input name, that override the naming conventions. */
  readonly pairs?: Readonly<Record<string, string>>
  /** Name of the batch dim in the model's metadata. Default: the first of `batch`, `batch_size`, `N` found. */
  readonly batchDim?: string
  /** Starting sizes of other named dims of the state; absent ones start at 0 (an empty KV cache). */
  readonly dims?: Readonly<Record<string, number>>
  /** Init of state inputs, by input name; zeros otherwise. */
  readonly init?: Readonly<Record<string, Init>>
  /** Shapes that replace the metadata of state inputs, by input name (for models with unnamed dims). */
  readonly shapes?: Readonly<Record<string, readonly Dim[]>>
}

/**
 * Feeds by input name, without the state inputs (the session supplies them).
 *
 * @category sessions
 * @since 0.1.0
 */
export type Feeds = Readonly<Record<string, OrtTensor>>

/**
 * An `InferenceSession` that carries its own state between runs. `run` is asynchronous and
 * resolves to an `Either`; every other call is synchronous (but `snapshot`). While a run is in
 * flight, every other call on the session is refused with a `BusyError`: state operations
 * never interleave with a run.
 *
 * @category sessions
 * @since 0.1.0
 */
export interface StatefulSession extends Disposable {
  readonly session: OrtSession
  /** The state pairs, in output order. */
  readonly pairs: readonly StatePair[]
  /** The saver that holds the state, keyed by state input name. */
  readonly saver: StateSaver<OrtTensor>
  readonly batchSize: number
  /** True while a `run` has not resolved. */
  readonly busy: boolean
  readonly disposed: boolean
  /**
   * Runs the model with `feeds` and the saved state, saves the new state (freeing the old one)
   * and resolves to the other outputs, which the caller owns. On `Left` the state is unchanged.
   */
  run(
    feeds: Feeds,
    options?: common.InferenceSession.RunOptions,
  ): Promise<E.Either<StateError, Record<string, OrtTensor>>>
  /** The current state by input name, borrowed: valid until the next call that changes it. */
  state(): Readonly<Record<string, OrtTensor>>
  /** Current sizes of the growing dims (a KV cache's past sequence length). */
  dims(): Readonly<Record<string, number>>
  /** Replaces the state with tensors the session then owns. */
  save(next: Readonly<Record<string, OrtTensor>>): E.Either<StateError, void>
  /** All rows (and growing dims) back to init, or only the given rows, before the next run. */
  reset(rows?: RowsInput): E.Either<StateError, void>
  /** Gathers rows into a new batch: reorder beams, drop finished rows, `null` for a fresh row. */
  select(rows: readonly (number | null)[]): E.Either<StateError, void>
  /** Copies the state to host memory as snapshot bytes. */
  snapshot(): Promise<E.Either<StateError, Uint8Array>>
  /** Replaces the state with a snapshot of the same spec and batch size. */
  restore(bytes: Uint8Array | Snapshot): E.Either<StateError, void>
  /** Frees the state. The `InferenceSession` stays the caller's. Idempotent. */
  dispose(): void
}

/**
 * Wraps an `InferenceSession` whose state outputs feed its state inputs: pairs them by name,
 * derives the spec from the input metadata and allocates the initial state.
 *
 * @example
 * const session = await ort.InferenceSession.create("silero_vad_v5.onnx")
 * const vad = orThrow(createStatefulSession({ session, backend: ortBackend({ ort }), batchSize: 1 }))
 * const out = orThrow(await vad.run({ input: frame, sr }))
 * @category sessions
 * @since 0.1.0
 */
export function createStatefulSession(
  options: StatefulSessionOptions,
): E.Either<StateError, StatefulSession> {
  const { session, backend } = options
  const derived = deriveSessionState(session, options)
  if (derived._tag === "Left") return derived
  const saver = createStateSaver({
    spec: derived.right.spec,
    backend,
    batchSize: options.batchSize,
    batchDim: derived.right.batchDim,
    ...(options.dims === undefined ? {} : { dims: options.dims }),
  })
  if (saver._tag === "Left") return saver
  return E.right(new Session(session, derived.right.pairs, saver.right))
}

class Session implements StatefulSession {
  #inFlight = false
  readonly #stateInputs: ReadonlySet<string>
  readonly #stateOutputs: ReadonlySet<string>
  /** The pairs in the saver's leaf order (one leaf per state input, keyed by its name). */
  readonly #byLeaf: readonly StatePair[]

  constructor(
    readonly session: OrtSession,
    readonly pairs: readonly StatePair[],
    readonly saver: StateSaver<OrtTensor>,
  ) {
    this.#stateInputs = new Set(pairs.map((p) => p.input))
    this.#stateOutputs = new Set(pairs.map((p) => p.output))
    this.#byLeaf = saver.spec.leaves.map(
      (leaf) => pairs.find((p) => p.input === leaf.path[0]) as StatePair,
    )
  }

  get batchSize(): number {
    return this.saver.batchSize
  }

  get busy(): boolean {
    return this.#inFlight
  }

  get disposed(): boolean {
    return this.saver.disposed
  }

  #idle(operation: string): E.Either<StateError, void> {
    if (this.saver.disposed) return E.left(new DisposedError("StatefulSession"))
    if (this.#inFlight) return E.left(new BusyError(operation, "a run"))
    return E.right(undefined)
  }

  async run(
    feeds: Feeds,
    options?: common.InferenceSession.RunOptions,
  ): Promise<E.Either<StateError, Record<string, OrtTensor>>> {
    const idle = this.#idle("run")
    if (idle._tag === "Left") return idle
    const refused = refuseStateFeeds(Object.keys(feeds), this.#stateInputs)
    if (refused._tag === "Left") return refused
    const held = this.saver.leaves()
    const merged: Record<string, OrtTensor> = copyFeeds(feeds)
    this.#byLeaf.forEach(({ input }, i) => setKey(merged, input, held[i] as OrtTensor))
    this.#inFlight = true
    let outputs: Record<string, OrtTensor>
    try {
      const result =
        options === undefined ? this.session.run(merged) : this.session.run(merged, options)
      outputs = (await result) as Record<string, OrtTensor>
    } catch (e) {
      return E.left(new BackendError(this.saver.backend.name, "run", "", e))
    } finally {
      this.#inFlight = false
    }
    const next = this.#byLeaf.map(({ output }) => outputs[output] as OrtTensor)
    const saved = this.saver.disposed
      ? E.left(new DisposedError("StatefulSession"))
      : this.saver.saveLeaves(next)
    if (saved._tag === "Left") {
      for (const { output } of this.pairs) outputs[output]?.dispose()
      return saved
    }
    const out: Record<string, OrtTensor> = {}
    for (const name in outputs) {
      if (!this.#stateOutputs.has(name)) setKey(out, name, outputs[name] as OrtTensor)
    }
    return E.right(out)
  }

  state(): Readonly<Record<string, OrtTensor>> {
    return this.saver.state() as Readonly<Record<string, OrtTensor>>
  }

  dims(): Readonly<Record<string, number>> {
    return this.saver.dims()
  }

  save(next: Readonly<Record<string, OrtTensor>>): E.Either<StateError, void> {
    const idle = this.#idle("save")
    if (idle._tag === "Left") return idle
    return this.saver.save(next as StateTree<OrtTensor>)
  }

  reset(rows?: RowsInput): E.Either<StateError, void> {
    const idle = this.#idle("reset")
    if (idle._tag === "Left") return idle
    return this.saver.reset(rows)
  }

  select(rows: readonly (number | null)[]): E.Either<StateError, void> {
    const idle = this.#idle("select")
    if (idle._tag === "Left") return idle
    return this.saver.select(rows)
  }

  async snapshot(): Promise<E.Either<StateError, Uint8Array>> {
    const idle = this.#idle("snapshot")
    if (idle._tag === "Left") return idle
    return this.saver.snapshot()
  }

  restore(bytes: Uint8Array | Snapshot): E.Either<StateError, void> {
    const idle = this.#idle("restore")
    if (idle._tag === "Left") return idle
    return this.saver.restore(bytes)
  }

  dispose(): void {
    this.saver.dispose()
  }

  [Symbol.dispose](): void {
    this.dispose()
  }
}
