/*
 * Input rules: per-row bookkeeping state that is not a model input/output pair (an audio
 * context window, per-row lengths), and model inputs computed from it and from the call's feeds.
 */
import {
  type DType,
  type DTypeMismatchError,
  type Dim,
  HostTensor,
  OptionError,
  type Init,
  ShapeMismatchError,
  type StructureMismatchError,
  allocateData,
} from "@statesaver/core"
import { type Lend, SCRATCH } from "./internal/scratch.js"
import { isRecord } from "./internal/validate.js"

/**
 * A bookkeeping leaf of an input rule: one row's shape (the session adds its batch dim in
 * front), its dtype and init. Held in host memory by every backend (`LeafSpec.host`), so a
 * rule reads and writes it on the CPU with no read-back of the model's device state.
 *
 * @category sessions
 * @since 0.3.0
 */
export interface RuleLeaf {
  /** The shape of one row; a named dim (`"past_sequence_length"`) grows like a KV cache's. */
  readonly row: readonly Dim[]
  readonly dtype: DType
  /** Zeros when absent. */
  readonly init?: Init
}

/**
 * What an input rule sees of a call. Every tensor is a host view: read it, never write it, and
 * do not keep it past the call.
 *
 * @category sessions
 * @since 0.3.0
 */
export interface RuleCall {
  /** Rows in this run. */
  readonly batchSize: number
  /** The rule's `feeds` as the caller gave them (stacked across streams in a `StreamingSession`). */
  readonly feeds: Readonly<Record<string, HostTensor>>
  /** The rule's bookkeeping leaves by name, rows in the run's order. */
  readonly state: Readonly<Record<string, HostTensor>>
  /** Current sizes of the state's named dims (a KV cache's length or capacity). */
  readonly dims: Readonly<Record<string, number>>
}

/**
 * The errors an input rule's `derive` may return for feeds it cannot use.
 *
 * @category sessions
 * @since 0.3.0
 */
export type RuleError = ShapeMismatchError | DTypeMismatchError | StructureMismatchError

/**
 * A rule that computes model inputs from per-row bookkeeping state and the call's feeds, and
 * updates that state after each run. A session holds the rule's `state` leaves in the same
 * state tree as the model's: `reset`, `select`, snapshots and a `StateStore`'s gather, scatter
 * and eviction treat them like every other leaf. `sileroContext()` is one; write your own for
 * other conventions.
 *
 * @example
 * // A running count of the frames each row has seen, fed to the model as `step`.
 * const counter: InputRule = {
 *   name: "counter",
 *   inputs: ["step"],
 *   state: { count: { row: [], dtype: "int32" } },
 *   derive: ({ state }) => ({ step: state["count"] as HostTensor }),
 *   next: ({ state }) => ({
 *     count: new HostTensor("int32", (state["count"] as HostTensor).shape,
 *       Int32Array.from(state["count"]?.data as Int32Array, (c) => c + 1)),
 *   }),
 * }
 * @category sessions
 * @since 0.3.0
 */
export interface InputRule {
  /** Shown in errors. */
  readonly name: string
  /** Model inputs the rule computes. The caller must not feed them. */
  readonly inputs: readonly string[]
  /**
   * Feeds the caller gives the rule instead (not model inputs), with their batch axis: Silero's
   * 512-sample `frame`, batched along axis 0. CPU tensors only.
   */
  readonly feeds?: Readonly<Record<string, number>>
  /**
   * Model inputs the caller feeds that the rule reads too (they still reach the model), in
   * `RuleCall.feeds`: a KV cache reads `input_ids` to count the new tokens. CPU tensors only.
   */
  readonly reads?: readonly string[]
  /**
   * Model outputs `next` reads, as host views in its `outputs` (CPU outputs only; a device
   * output reads as `undefined`). Default none.
   */
  readonly outputs?: readonly string[]
  /** Bookkeeping leaves by name; the names must differ from the model's state inputs. */
  readonly state?: Readonly<Record<string, RuleLeaf>>
  /**
   * The rule's model inputs for this call, as host tensors (the session wraps them for the
   * runtime and frees them after the run). Return a `RuleError` (do not throw) for feeds the
   * rule cannot use: the run is refused with it and nothing changes. A throw is reported as a
   * `BackendError` naming the rule.
   */
  derive(call: RuleCall): Readonly<Record<string, HostTensor>> | RuleError
  /**
   * The bookkeeping leaves after a successful run, as new host tensors (never the ones in
   * `call.state`). `outputs` holds host views of the outputs the rule lists in `outputs`.
   */
  next(
    call: RuleCall & { readonly outputs: Readonly<Record<string, HostTensor | undefined>> },
  ): Readonly<Record<string, HostTensor>>
}

/**
 * Options of `sileroContext`.
 *
 * @category sessions
 * @since 0.3.0
 */
export interface SileroContextOptions {
  /**
   * Samples of the previous frame prepended to each frame: 64 at 16 kHz (the default), 32 at
   * 8 kHz, as Silero's own wrapper does.
   */
  readonly context?: number
  /** Samples per frame: 512 at 16 kHz (the default), 256 at 8 kHz. */
  readonly frame?: number
  /** The model input the rule computes. Default `"input"`. */
  readonly input?: string
  /** The feed the caller gives the frame as. Default `"frame"`. */
  readonly feed?: string
}

/**
 * Silero VAD v5/v6 as its authors feed it: each call's model input is the last `context`
 * samples of the stream's previous frame followed by the new frame (64 + 512 = 576 samples at
 * 16 kHz), and the context is per-stream state, carried, reset, selected, stored, evicted and
 * snapshotted with the model's `state`. The caller feeds `frame` ([rows, 512] float32) instead
 * of `input`; a fresh or reset stream's context is zeros. Throws an `OptionError` naming a bad
 * option (sizes that are not positive integers, a context longer than the frame, empty names).
 *
 * @example
 * const vad = orThrow(createStreamingSession({
 *   session, ort, backend: ortBackend({ ort }), capacity: 1000, outputs: ["output"],
 *   rules: [sileroContext()],
 * }))
 * const sr = new ort.Tensor("int64", BigInt64Array.from([16000n]), [])
 * const outs = orThrow(await vad.run([{ key: "call-1", feeds: { frame: frame1 } }], { shared: { sr } }))
 * @category sessions
 * @since 0.3.0
 */
export function sileroContext(options: SileroContextOptions = {}): InputRule {
  if (!isRecord(options as unknown)) {
    throw new OptionError({ path: "options", expected: "sileroContext options", actual: options })
  }
  const given = options as Partial<Record<keyof SileroContextOptions, unknown>>
  const sizes = { context: given.context ?? 64, frame: given.frame ?? 512 }
  const names = { input: given.input ?? "input", feed: given.feed ?? "frame" }
  for (const [path, n] of Object.entries(sizes)) {
    if (!Number.isSafeInteger(n) || (n as number) < 1) {
      throw new OptionError({ path, expected: "a positive integer number of samples", actual: n })
    }
  }
  for (const [path, name] of Object.entries(names)) {
    if (typeof name !== "string" || name === "") {
      throw new OptionError({ path, expected: "a non-empty name", actual: name })
    }
  }
  const context = sizes.context as number
  const frame = sizes.frame as number
  const input = names.input as string
  const feed = names.feed as string
  if (frame < context) {
    throw new OptionError({
      path: "context",
      expected: `at most the frame's ${frame} samples`,
      actual: context,
    })
  }
  const width = context + frame
  return {
    name: "sileroContext",
    inputs: [input],
    feeds: { [feed]: 0 },
    state: { context: { row: [context], dtype: "float32" } },
    derive(call) {
      const { batchSize, feeds, state } = call
      const f = feeds[feed] as HostTensor
      if (f.dtype !== "float32" || f.shape.length !== 2 || f.shape[1] !== frame) {
        return new ShapeMismatchError({
          path: feed,
          expected: `float32 [${batchSize}, ${frame}] frames`,
          actual: f.shape,
          detail: `a ${f.dtype} tensor; the model input is ${context} context samples ⧺ ${frame}`,
        })
      }
      const ctx = (state["context"] as HostTensor).data as Float32Array
      const samples = f.data as Float32Array
      // Every element is written below: an array the session lends (reused call after call) will do.
      const lend = (call as { [SCRATCH]?: Lend })[SCRATCH]
      const out = (lend?.(input, "float32", batchSize * width) ??
        allocateData("float32", batchSize * width)) as Float32Array
      for (let r = 0; r < batchSize; r++) {
        out.set(ctx.subarray(r * context, (r + 1) * context), r * width)
        out.set(samples.subarray(r * frame, (r + 1) * frame), r * width + context)
      }
      return { [input]: new HostTensor("float32", [batchSize, width], out) }
    },
    next(call) {
      const { batchSize, feeds } = call
      const samples = (feeds[feed] as HostTensor).data as Float32Array
      // Every element is written below: a lent array will do (a streaming session copies it).
      const lend = (call as { [SCRATCH]?: Lend })[SCRATCH]
      const out = (lend?.("next context", "float32", batchSize * context) ??
        allocateData("float32", batchSize * context)) as Float32Array
      for (let r = 0; r < batchSize; r++) {
        out.set(samples.subarray((r + 1) * frame - context, (r + 1) * frame), r * context)
      }
      return { context: new HostTensor("float32", [batchSize, context], out) }
    },
  }
}
