import * as tf from "@tensorflow/tfjs"
import {
  AliasedLeafError,
  type AnyStateError,
  BackendError,
  BatchSizeMismatchError,
  DisposedError,
  OptionError,
  type ResolvedSpec,
  ShapeMismatchError,
  StateError,
  type StateSaver,
  type StateTree,
  StructureMismatchError,
  createStateSaver,
  flatten,
} from "@statesaver/core"
import { checkStateTree, checkTensor, isPlainRecord, isResolvedSpec } from "./internal/checks.js"
import * as E from "./internal/either.js"
import { type BatchPlan, type WindowPlan, planBatch } from "./internal/window-plan.js"
import { type RowMask, type StepMask, resetWhere, selectRows } from "./training-state.js"

/**
 * What the model step of a truncated-BPTT trainer receives: one window of the batch (or the part
 * of it up to the next sequence start) and the state carried from the previous window (constant:
 * the gradient stops there).
 *
 * @category training
 * @since 0.1.0
 */
export interface TbpttWindow {
  readonly inputs: tf.Tensor
  readonly targets: tf.Tensor
  readonly state: StateTree<tf.Tensor>
  /** Index of the window within the batch. */
  readonly window: number
  /**
   * Time step of the window at which `inputs` begins: 0, unless a sequence start inside the
   * window (`starts` as a `[batch, time]` mask) splits the window into several calls.
   *
   * @since 0.2.0
   */
  readonly offset: number
  /**
   * True in `trainBatch`, false in `evaluate` / `evaluateTbptt`: pass it to the layers (dropout).
   *
   * @since 0.2.0
   */
  readonly training: boolean
}

/**
 * What the model step returns: the window's scalar loss and the final state to carry. The loss is
 * taken as a mean over the rows × time steps the step was given (as `tf.losses.*` compute it by
 * default): a window split by a sequence start weighs each part by its steps, and `evaluate`
 * weighs each window by its rows × steps.
 *
 * @category training
 * @since 0.1.0
 */
export interface TbpttStepResult {
  readonly loss: tf.Scalar
  readonly state: StateTree<tf.Tensor>
}

/**
 * One batch of sequences for `TbpttTrainer.trainBatch` (and `evaluate`). Row `i` continues row
 * `i` of the previous batch (or the held row `rows[i]`) unless a sequence start resets it.
 *
 * @example
 * // Row 1's next document begins at step 2: its state is reset right before that step.
 * const batch: TbpttBatch = {
 *   inputs, targets, // [2, 4, ...]
 *   starts: [[false, false, false, false], [false, false, true, false]],
 * }
 * @category training
 * @since 0.1.0
 */
export interface TbpttBatch {
  /** `[batch, time, ...]` (time on `timeAxis`). */
  readonly inputs: tf.Tensor
  /** Split along the same time axis as `inputs`. */
  readonly targets: tf.Tensor
  /**
   * Where sequences start. A `[batch]` `RowMask`: the rows whose sequence starts with this batch
   * read their init in the first window. A `[batch, time]` `StepMask`: row `r`'s state is reset to
   * its init right before time step `t` where `starts[r][t]` is set — inside a window too, where
   * the reset also cuts that row's gradient (`tf.where(mask, init, state)`, as Haiku's
   * `ResetCore`); other rows carry on, their gradient flowing through the whole window.
   */
  readonly starts?: RowMask | StepMask | undefined
  /**
   * A `[batch, windows]` `StepMask`: row `r` starts a sequence at the first step of window `w`
   * where `windowStarts[r][w]` is set. Combined with `starts` (either resets the row).
   *
   * @since 0.2.0
   */
  readonly windowStarts?: StepMask | undefined
  /**
   * Which held rows the batch's rows continue, as `saver.select(rows)`: entry `i` is the row of
   * the saver that row `i` continues, or `null` for a fresh row at init; one entry per row of
   * `inputs`. Default: row `i` continues row `i`, rows beyond the saver's start at init (a
   * smaller batch keeps rows `0..b-1`).
   *
   * @since 0.2.0
   */
  readonly rows?: readonly (number | null)[] | undefined
}

/**
 * Progress of one trained window.
 *
 * @category training
 * @since 0.1.0
 */
export interface WindowReport {
  /** Number of batches trained before this one. */
  readonly batch: number
  readonly window: number
  readonly windows: number
  readonly rows: number
  readonly loss: number
}

/**
 * Options of `createTbpttTrainer`.
 *
 * @category training
 * @since 0.1.0
 */
export interface TbpttOptions {
  readonly saver: StateSaver<tf.Variable, tf.Tensor>
  readonly optimizer: tf.Optimizer
  /**
   * Runs the model on one window from the carried state; called inside the optimizer's gradient
   * tape. Returns the window's scalar loss and final state.
   */
  readonly step: (window: TbpttWindow) => TbpttStepResult
  /** Time steps per window (a positive integer); the last window of a batch may be shorter. */
  readonly windowSize: number
  /** Axis of time in inputs and targets: an integer from 1 (axis 0 holds the rows). Default 1. */
  readonly timeAxis?: number
  /** Variables to train. Default: every trainable variable (state variables are not trainable). */
  readonly varList?: tf.Variable[]
  /** Called after each window with its loss (read back from the device only when this is set). */
  readonly onWindow?: (report: WindowReport) => void
  /**
   * Every window starts from init (all rows), in `trainBatch` and `evaluate`: the "reset" side
   * of a carried-vs-reset comparison, with the same batches. Default false.
   *
   * @since 0.2.0
   */
  readonly resetEveryWindow?: boolean
}

/**
 * Options of `TbpttTrainer.evaluate`.
 *
 * @category training
 * @since 0.2.0
 */
export interface TbpttEvaluateOptions {
  /**
   * The saver that carries the evaluation state across windows and batches (another saver than
   * the trainer's, of the same spec, on a tfjs backend). Default: a fresh saver at init, disposed
   * when the call returns.
   */
  readonly saver?: StateSaver<tf.Variable, tf.Tensor>
  /**
   * The step's loss is the mean per-token cross-entropy in nats (`tf.losses.softmaxCrossEntropy`
   * of one-hot targets, default reduction, no label smoothing): the result then has
   * `perplexity = exp(loss)`. Default false (`perplexity` is undefined).
   */
  readonly crossEntropy?: boolean
}

/**
 * Options of `evaluateTbptt`: the trainer's windowing (`step`, `windowSize`, `timeAxis`,
 * `resetEveryWindow`) with a saver of its own.
 *
 * @category training
 * @since 0.2.0
 */
export interface EvaluateTbpttOptions extends TbpttEvaluateOptions {
  readonly saver: StateSaver<tf.Variable, tf.Tensor>
  readonly step: (window: TbpttWindow) => TbpttStepResult
  readonly windowSize: number
  readonly timeAxis?: number
  readonly resetEveryWindow?: boolean
}

/**
 * What an evaluation reports.
 *
 * @category training
 * @since 0.2.0
 */
export interface TbpttEvaluation {
  /** Mean loss per token: each window's loss weighted by its rows × time steps. */
  readonly loss: number
  /** `exp(loss)` when `crossEntropy` is set, else undefined. */
  readonly perplexity: number | undefined
  /** Rows × time steps evaluated. */
  readonly tokens: number
  readonly windows: number
  readonly batches: number
}

/**
 * A truncated-BPTT trainer: state carried across windows and batches in a `StateSaver`.
 *
 * @category training
 * @since 0.1.0
 */
export interface TbpttTrainer {
  /** Batches trained so far. */
  readonly batches: number
  /**
   * Trains on one batch: one optimizer step per window, rows reset where `starts` /
   * `windowStarts` say (or every window with `resetEveryWindow`), and saves the final state of
   * each window for the next. A batch with fewer (or more) rows than the saver keeps the held rows
   * `rows` names (default the first ones; new rows start at init). Returns the window losses when
   * `onWindow` is set (reading a loss waits for the device), else an empty list.
   *
   * A `Left` from checking the batch (or the saver) leaves weights and state unchanged. A failure
   * inside a window (the step throws or returns what the saver refuses) leaves weights and state
   * as the previous window left them: unchanged when it is the first window, batch size
   * included. A `StateError` the step throws (say from `orThrow(rnn.run(...))`) is returned as
   * is; anything else it throws becomes a `BackendError` whose `cause` is the thrown value.
   */
  trainBatch(batch: TbpttBatch): E.Either<TrainBatchError, number[]>
  /**
   * Runs the step over `batches` with the trainer's windowing (window size, time axis, resets,
   * `rows`, `resetEveryWindow`) and no gradients, carrying state in another saver: the training
   * state and weights are not touched. Reports the mean loss per token (and perplexity).
   *
   * @since 0.2.0
   */
  evaluate(
    batches: Iterable<TbpttBatch>,
    options?: TbpttEvaluateOptions,
  ): E.Either<EvaluateTbpttError, TbpttEvaluation>
}

/**
 * Errors of `createTbpttTrainer`: an option that is missing or of the wrong kind (`OptionError`
 * naming it), or a disposed saver.
 *
 * @category training
 * @since 0.2.0
 */
export type CreateTbpttTrainerError = OptionError | DisposedError

/**
 * Errors of `TbpttTrainer.trainBatch`. Checking the batch gives `StructureMismatchError`
 * (`inputs` / `targets` not live tensors), `ShapeMismatchError`, `BatchSizeMismatchError`,
 * `RowIndexError` (`starts`, `windowStarts`, `rows`) or `DisposedError` (the saver); a window
 * gives the saver's errors, `OptionError` (`step` returned no `{ loss, state }`), `BackendError`,
 * or any `StateError` the step threw.
 *
 * @category training
 * @since 0.2.0
 */
export type TrainBatchError = AnyStateError

/**
 * Errors of `evaluateTbptt` and `TbpttTrainer.evaluate`: a bad option (`OptionError` naming it:
 * `saver`, `step`, `windowSize`, `timeAxis`, `resetEveryWindow`, `crossEntropy`, `batches`), a
 * disposed saver, and those of `trainBatch` for each batch.
 *
 * @category training
 * @since 0.2.0
 */
export type EvaluateTbpttError = AnyStateError

class StepFailed {
  constructor(readonly error: AnyStateError) {}
}

const backendName = (): string => `tfjs(${tf.getBackend()})`

/** What a window returns for a throw: the StateError as is, anything else as a BackendError. */
const asStateError = (e: unknown): AnyStateError =>
  e instanceof StepFailed
    ? e.error
    : e instanceof StateError
      ? (e as AnyStateError)
      : new BackendError({ backend: backendName(), operation: "train window", cause: e })

/** The step's result, or a throw of why it cannot be used (caught inside the tape). */
function stepResult(out: unknown): TbpttStepResult {
  if (
    !isPlainRecord(out) ||
    !(out["loss"] instanceof tf.Tensor) ||
    out["loss"].isDisposed ||
    !("state" in out)
  ) {
    throw new StepFailed(
      new OptionError({
        path: "step",
        expected: "a step returning { loss: a scalar tf.Tensor, state }",
        actual: out,
      }),
    )
  }
  const loss = out["loss"]
  if (loss.rank !== 0) {
    throw new StepFailed(
      new ShapeMismatchError({
        path: "loss",
        expected: [],
        actual: loss.shape,
        detail: "a scalar loss",
      }),
    )
  }
  return out as unknown as TbpttStepResult
}

/** The first leaf whose tensor is also given at an earlier leaf, as `save` would refuse it. */
function aliased(spec: ResolvedSpec, tensors: readonly tf.Tensor[]): AliasedLeafError | undefined {
  for (let i = 1; i < tensors.length; i++) {
    const first = tensors.indexOf(tensors[i] as tf.Tensor)
    if (first < i) {
      return new AliasedLeafError({
        path: spec.leaves[i]?.pathString ?? "",
        otherPath: spec.leaves[first]?.pathString ?? "",
      })
    }
  }
  return undefined
}

/** The tf tensors of a tree (arrays and plain records), each once. */
function collectTensors(tree: unknown, out: tf.Tensor[] = []): tf.Tensor[] {
  if (tree instanceof tf.Tensor) {
    if (!out.includes(tree)) out.push(tree)
  } else if (Array.isArray(tree)) {
    for (const x of tree) collectTensors(x, out)
  } else if (isPlainRecord(tree)) {
    for (const x of Object.values(tree)) collectTensors(x, out)
  }
  return out
}

const isFunction = (x: unknown): x is (...args: never[]) => unknown => typeof x === "function"

const optionError = (path: string, expected: string, actual: unknown) =>
  E.left(new OptionError({ path, expected, actual }))

type Saver = StateSaver<tf.Variable, tf.Tensor>

/** A live `StateSaver` holding tf tensors, named `path` in errors. */
function checkSaver(saver: unknown, path = "saver"): E.Either<OptionError | DisposedError, Saver> {
  if (
    typeof saver !== "object" ||
    saver === null ||
    !isFunction((saver as Partial<StateSaver<unknown>>).state) ||
    !isFunction((saver as Partial<StateSaver<unknown>>).save) ||
    !isFunction((saver as Partial<StateSaver<unknown>>).select) ||
    !isResolvedSpec((saver as Partial<StateSaver<unknown>>).spec)
  ) {
    return optionError(path, "a StateSaver", saver)
  }
  const s = saver as StateSaver<unknown>
  if (s.disposed) return E.left(new DisposedError({ what: "StateSaver" }))
  if (!flatten<unknown>(s.state()).leaves.every((t) => t instanceof tf.Tensor))
    return optionError(path, "a StateSaver on a tfjs backend", saver)
  return E.right(saver as Saver)
}

/** What the trainer and the evaluation share: how batches are cut into windows and run. */
interface Windowing {
  readonly step: (window: TbpttWindow) => TbpttStepResult
  readonly windowSize: number
  readonly timeAxis: number
  readonly resetEveryWindow: boolean
}

const checkFlag = (
  o: Partial<Record<string, unknown>>,
  path: string,
): E.Either<OptionError, void> =>
  o[path] === undefined || typeof o[path] === "boolean"
    ? E.right(undefined)
    : optionError(path, "a boolean or nothing", o[path])

/** Checks `step`, `windowSize`, `timeAxis` and `resetEveryWindow`. */
function checkWindowing(o: Partial<Record<string, unknown>>): E.Either<OptionError, Windowing> {
  const { step, windowSize, timeAxis } = o
  if (!isFunction(step)) return optionError("step", "a function of a window", step)
  if (typeof windowSize !== "number" || !Number.isSafeInteger(windowSize) || windowSize < 1)
    return optionError("windowSize", "a positive integer", windowSize)
  if (
    timeAxis !== undefined &&
    (typeof timeAxis !== "number" || !Number.isSafeInteger(timeAxis) || timeAxis < 1)
  ) {
    return optionError("timeAxis", "an integer of at least 1 (axis 0 holds the rows)", timeAxis)
  }
  const reset = checkFlag(o, "resetEveryWindow")
  if (reset._tag === "Left") return reset
  return E.right({
    step: step as Windowing["step"],
    windowSize,
    timeAxis: timeAxis ?? 1,
    resetEveryWindow: o["resetEveryWindow"] === true,
  })
}

/** Checks the options; the saver must be a live `StateSaver` holding tf tensors. */
function checkOptions(
  options: unknown,
): E.Either<CreateTbpttTrainerError, { options: TbpttOptions; windowing: Windowing }> {
  if (!isPlainRecord(options)) return optionError("options", "an options object", options)
  const o = options as Partial<Record<keyof TbpttOptions, unknown>>
  const saver = checkSaver(o.saver)
  if (saver._tag === "Left") return saver
  if (!(o.optimizer instanceof tf.Optimizer))
    return optionError("optimizer", "a tf.Optimizer (tf.train.adam(), sgd(), ...)", o.optimizer)
  const windowing = checkWindowing(o)
  if (windowing._tag === "Left") return windowing
  const { varList, onWindow } = o
  if (
    varList !== undefined &&
    (!Array.isArray(varList) ||
      !varList.every((v) => v instanceof tf.Variable && !v.isDisposed && v.trainable))
  ) {
    return optionError("varList", "an array of live trainable tf.Variables", varList)
  }
  if (onWindow !== undefined && !isFunction(onWindow))
    return optionError("onWindow", "a function of a window report", onWindow)
  return E.right({ options: options as unknown as TbpttOptions, windowing: windowing.right })
}

/** `[batch, *, time]`-like pattern of the dims a tensor needs, for error messages. */
const timePattern = (rows: number | "batch", timeAxis: number, time: number | "time") =>
  Array.from({ length: timeAxis + 1 }, (_, i) => (i === 0 ? rows : i === timeAxis ? time : "*"))

interface CheckedBatch {
  readonly inputs: tf.Tensor
  readonly targets: tf.Tensor
  readonly rows: number
  readonly plan: BatchPlan
}

/** Checks a batch against the windowing and the saver; plans its windows and resets. */
function checkBatch(
  batch: unknown,
  saver: Saver,
  windowing: Windowing,
): E.Either<TrainBatchError, CheckedBatch> {
  const { timeAxis } = windowing
  if (!isPlainRecord(batch)) {
    return E.left(
      new StructureMismatchError({
        path: "batch",
        expected: "a batch { inputs, targets, starts?, windowStarts?, rows? }",
        actual: batch,
      }),
    )
  }
  const x = checkTensor(batch["inputs"], "inputs")
  if (x._tag === "Left") return x
  const y = checkTensor(batch["targets"], "targets")
  if (y._tag === "Left") return y
  const inputs = x.right
  const targets = y.right
  if (inputs.rank <= timeAxis) {
    return E.left(
      new ShapeMismatchError({
        path: "inputs",
        expected: timePattern("batch", timeAxis, "time"),
        actual: inputs.shape,
        detail: `time on axis ${timeAxis} needs rank ${timeAxis + 1} or more, got ${inputs.rank}`,
      }),
    )
  }
  const rows = inputs.shape[0] as number
  const time = inputs.shape[timeAxis] as number
  if (rows < 1 || time < 1) {
    return E.left(
      new ShapeMismatchError({
        path: "inputs",
        expected: timePattern("batch", timeAxis, "time"),
        actual: inputs.shape,
        detail: `at least one row and one time step (axis ${timeAxis})`,
      }),
    )
  }
  if (targets.shape[0] !== rows) {
    return E.left(
      new BatchSizeMismatchError({
        path: "targets",
        expected: rows,
        actual: targets.shape[0],
        axis: 0,
        detail: "the rows of inputs",
      }),
    )
  }
  if (targets.shape[timeAxis] !== time) {
    return E.left(
      new ShapeMismatchError({
        path: "targets",
        expected: timePattern(rows, timeAxis, time),
        actual: targets.shape,
        detail: `${time} steps on axis ${timeAxis}, as inputs`,
      }),
    )
  }
  if (saver.disposed) return E.left(new DisposedError({ what: "StateSaver" }))
  const plan = planBatch(batch, {
    rows,
    time,
    held: saver.batchSize,
    windowSize: windowing.windowSize,
    resetEveryWindow: windowing.resetEveryWindow,
  })
  if (plan._tag === "Left") return plan
  return E.right({ inputs, targets, rows, plan: plan.right })
}

/**
 * Runs batches window by window on one saver; `run` computes a window's loss and final state
 * (with or without a gradient tape) and the runner saves that state. A window that fails leaves
 * the saver as the previous window left it.
 */
function windowRunner(saver: Saver, windowing: Windowing) {
  const spec = saver.spec
  const { step, timeAxis } = windowing
  /** The step's final state, kept past the tape's `tidy` until it is saved or freed. */
  let kept: tf.Tensor[] = []
  const keepState = (state: unknown): void => {
    kept = collectTensors(state)
    for (const t of kept) tf.keep(t)
  }
  /** Frees what the step returned unless the saver holds it (a leaf it returned unchanged). */
  const releaseKept = (): void => {
    const mine = saver.disposed ? new Set<tf.Tensor>() : new Set(collectTensors(saver.state()))
    tf.dispose(kept.filter((t) => !mine.has(t)))
    kept = []
  }

  /**
   * The state a window starts from: the saver's, its rows picked by `resize` (as tf ops) for the
   * first window of a batch of other rows.
   */
  const startState = (resize: (number | null)[] | undefined) => (): StateTree<tf.Tensor> => {
    const state = saver.state() as StateTree<tf.Tensor>
    if (resize === undefined) return state
    const picked = selectRows(spec, state, resize)
    if (picked._tag === "Left") throw new StepFailed(picked.left)
    return picked.right
  }

  /**
   * The step over a window's segments: rows reset (a masked `tf.where` against init, which also
   * cuts their gradient) before each segment that needs it; the loss is the segments' losses
   * weighted by their steps. Call inside a tape or `tidy`; throws only `StepFailed`.
   */
  const forward = (
    win: WindowPlan,
    xs: tf.Tensor,
    ys: tf.Tensor,
    initial: StateTree<tf.Tensor>,
    training: boolean,
  ): TbpttStepResult => {
    let state = initial
    let loss: tf.Tensor | undefined
    const whole = win.segments.length === 1
    for (const seg of win.segments) {
      for (const mask of seg.resets) {
        const reset = resetWhere(spec, state, mask)
        if (reset._tag === "Left") throw new StepFailed(reset.left)
        state = reset.right
      }
      const out = stepResult(
        step({
          inputs: whole ? xs : sliceTime(xs, timeAxis, seg.begin, seg.size),
          targets: whole ? ys : sliceTime(ys, timeAxis, seg.begin, seg.size),
          state,
          window: win.index,
          offset: seg.begin,
          training,
        }),
      )
      const part = whole ? out.loss : tf.mul(out.loss, seg.size / win.size)
      loss = loss === undefined ? part : tf.add(loss, part)
      state = out.state
    }
    return { loss: loss as tf.Scalar, state }
  }

  /** Saves a window's final state, resizing the saver first; the error when refused. */
  const commit = (
    state: StateTree<tf.Tensor>,
    resize: (number | null)[] | undefined,
  ): AnyStateError | undefined => {
    if (resize !== undefined) {
      // Check before resizing, so a refused state leaves the saver as it was.
      const ok = checkStateTree(spec, state, { size: resize.length, path: "inputs" })
      if (ok._tag === "Left") return ok.left
      const alias = aliased(spec, ok.right.tensors)
      if (alias !== undefined) return alias
      const resized = saver.select(resize)
      if (resized._tag === "Left") return resized.left
    }
    const saved = saver.save(state)
    if (saved._tag === "Left") return saved.left
    kept = []
    return undefined
  }

  /**
   * Runs each window of a checked batch: `run` returns its loss and final state (or a failure),
   * which is saved before `after` sees the loss. `after` owns the loss tensor.
   */
  const runBatch = (
    checked: CheckedBatch,
    run: (
      win: WindowPlan,
      xs: tf.Tensor,
      ys: tf.Tensor,
      initial: () => StateTree<tf.Tensor>,
    ) => E.Either<AnyStateError, { loss: tf.Scalar; state: StateTree<tf.Tensor> }>,
    commitFailed: (loss: tf.Scalar) => void,
    after: (win: WindowPlan, loss: tf.Scalar) => void,
  ): E.Either<AnyStateError, void> => {
    const { inputs, targets, plan } = checked
    for (const win of plan.windows) {
      const [xs, ys] = tf.tidy(() => [
        sliceTime(inputs, timeAxis, win.begin, win.size),
        sliceTime(targets, timeAxis, win.begin, win.size),
      ])
      try {
        const resize = win.index === 0 ? plan.resize : undefined
        kept = []
        const done = run(win, xs as tf.Tensor, ys as tf.Tensor, startState(resize))
        if (done._tag === "Left") {
          releaseKept()
          return done
        }
        const refused = commit(done.right.state, resize)
        if (refused !== undefined) {
          releaseKept()
          commitFailed(done.right.loss)
          return E.left(refused)
        }
        after(win, done.right.loss)
      } catch (e) {
        // `after` threw (the window itself completed).
        return E.left(asStateError(e))
      } finally {
        tf.dispose([xs as tf.Tensor, ys as tf.Tensor])
      }
    }
    return E.right(undefined)
  }

  return { keepState, forward, runBatch }
}

/**
 * Creates a truncated-BPTT trainer: each window is one optimizer step (`computeGradients` of
 * the step's loss, then `applyGradients`) whose final state is saved and fed to the next window
 * as a constant, so the gradient stops at the boundary.
 *
 * Factories named `create*` validate and return an `Either`: a missing or ill-typed option is a
 * `Left(OptionError)` naming it (`saver`, `optimizer`, `step`, `windowSize`, `timeAxis`,
 * `varList`, `onWindow`, `resetEveryWindow`); nothing throws.
 *
 * @example
 * const trainer = orThrow(createTbpttTrainer({
 *   saver, optimizer: tf.train.adam(0.01), windowSize: 20,
 *   step: ({ inputs, targets, state, training }) => {
 *     const { output, state: next } = orThrow(rnn.run(inputs, state, { training }))
 *     return { loss: tf.losses.softmaxCrossEntropy(targets, head.apply(output) as tf.Tensor), state: next }
 *   },
 * }))
 * orThrow(trainer.trainBatch({ inputs, targets, starts }))
 * @category training
 * @since 0.1.0
 */
export function createTbpttTrainer(
  options: TbpttOptions,
): E.Either<CreateTbpttTrainerError, TbpttTrainer> {
  const valid = checkOptions(options)
  if (valid._tag === "Left") return valid
  const { saver, optimizer, varList, onWindow } = valid.right.options
  const { windowing } = valid.right
  const { step } = windowing
  const runner = windowRunner(saver, windowing)
  let batches = 0
  let built = false

  /**
   * One window's gradients. Nothing is thrown out of the gradient tape: tfjs leaks the tensors
   * it saved for backprop when the function it differentiates throws.
   */
  let computed: { value: tf.Scalar; grads: tf.NamedTensorMap } | undefined
  const gradients = (
    win: WindowPlan,
    xs: tf.Tensor,
    ys: tf.Tensor,
    initial: () => StateTree<tf.Tensor>,
  ): E.Either<AnyStateError, { loss: tf.Scalar; state: StateTree<tf.Tensor> }> => {
    let failure: AnyStateError | undefined
    let loss: tf.Tensor | undefined
    let state: StateTree<tf.Tensor> | undefined
    computed = undefined
    try {
      if (!built) {
        // tfjs-layers create their weights on first call; gradients need them to exist before.
        tf.tidy(() => {
          step({
            inputs: xs,
            targets: ys,
            state: initial(),
            window: win.index,
            offset: 0,
            training: true,
          })
        })
        built = true
      }
      computed = optimizer.computeGradients(() => {
        try {
          const out = runner.forward(win, xs, ys, initial(), true)
          runner.keepState(out.state)
          state = out.state
          loss = out.loss
          return out.loss
        } catch (e) {
          failure = asStateError(e)
          // Unconnected to any variable: the tape ends and frees what it saved.
          loss = tf.scalar(0)
          return loss as tf.Scalar
        }
      }, varList)
    } catch (e) {
      failure ??= asStateError(e)
    }
    if (failure !== undefined || computed === undefined || state === undefined) {
      if (computed !== undefined) tf.dispose([computed.value, ...Object.values(computed.grads)])
      else if (loss !== undefined) loss.dispose()
      computed = undefined
      return E.left(
        failure ??
          new BackendError({
            backend: backendName(),
            operation: "train window",
            cause: new Error("no gradients were computed"),
          }),
      )
    }
    return E.right({ loss: computed.value, state })
  }

  const trainBatch = (batch: TbpttBatch): E.Either<TrainBatchError, number[]> => {
    const checked = checkBatch(batch, saver, windowing)
    if (checked._tag === "Left") return checked
    const windows = checked.right.plan.windows.length
    const rows = checked.right.rows
    const losses: number[] = []
    const dropGrads = (): void => {
      if (computed !== undefined) tf.dispose(Object.values(computed.grads))
      computed = undefined
    }
    const done = runner.runBatch(
      checked.right,
      gradients,
      (loss) => {
        loss.dispose()
        dropGrads()
      },
      (win, cost) => {
        // The state is saved: the gradients are applied only now.
        const grads = computed?.grads ?? {}
        computed = undefined
        try {
          optimizer.applyGradients(
            varList === undefined
              ? grads
              : varList.map((v) => ({ name: v.name, tensor: grads[v.name] as tf.Tensor })),
          )
        } finally {
          tf.dispose(Object.values(grads))
        }
        try {
          if (onWindow !== undefined) {
            const loss = (cost.dataSync()[0] as number) ?? Number.NaN
            losses.push(loss)
            onWindow({ batch: batches, window: win.index, windows, rows, loss })
          }
        } finally {
          cost.dispose()
        }
      },
    )
    if (done._tag === "Left") return done
    batches++
    return E.right(losses)
  }

  const evaluate = (
    data: Iterable<TbpttBatch>,
    options?: TbpttEvaluateOptions,
  ): E.Either<EvaluateTbpttError, TbpttEvaluation> => {
    if (options !== undefined && !isPlainRecord(options))
      return optionError("options", "an options object or nothing", options)
    const o: Partial<Record<string, unknown>> = options ?? {}
    const flag = checkFlag(o, "crossEntropy")
    if (flag._tag === "Left") return flag
    if (o["saver"] !== undefined) {
      const given = checkSaver(o["saver"])
      if (given._tag === "Left") return given
      if (given.right === saver) {
        return optionError("saver", "another saver than the trainer's", o["saver"])
      }
      return evaluateWith(given.right, windowing, data, o["crossEntropy"] === true)
    }
    if (saver.disposed) return E.left(new DisposedError({ what: "StateSaver" }))
    const fresh = createStateSaver({
      spec: saver.spec.spec,
      backend: saver.backend,
      batchSize: saver.batchSize,
      batchDim: saver.spec.batchDim,
      dims: startDims(saver.spec),
    })
    if (fresh._tag === "Left") return fresh
    try {
      return evaluateWith(fresh.right, windowing, data, o["crossEntropy"] === true)
    } finally {
      fresh.right.dispose()
    }
  }

  return E.right({
    get batches() {
      return batches
    },
    trainBatch,
    evaluate,
  })
}

/** The sizes named dims other than the batch start at, as the spec gives them. */
function startDims(spec: ResolvedSpec): Record<string, number> {
  const dims: Record<string, number> = {}
  for (const leaf of spec.leaves)
    for (const [axis, name] of leaf.growing) dims[name] = leaf.shape[axis] as number
  return dims
}

/**
 * Runs a step over batches with a trainer's windowing and no gradients, carrying state in its
 * own saver (so a training saver is never touched), and reports the mean loss per token and,
 * for a cross-entropy loss (`crossEntropy: true`), the perplexity `exp(loss)`. Each window's
 * loss is weighted by its rows × time steps, so a short last window or batch counts for what it
 * holds. The losses are summed on the device and read back once.
 *
 * A failure (a bad batch, a step that throws) returns its error; the evaluation saver is then as
 * the last completed window left it.
 *
 * @example
 * const evalSaver = orThrow(createStateSaver({ spec: rnn.spec, backend: tfjsBackend(), batchSize: 32 }))
 * const { loss, perplexity } = orThrow(evaluateTbptt({
 *   saver: evalSaver, windowSize: 20, crossEntropy: true,
 *   step: ({ inputs, targets, state, training }) => {
 *     const { output, state: next } = orThrow(rnn.run(inputs, state, { training }))
 *     return { loss: tf.losses.softmaxCrossEntropy(targets, head.apply(output) as tf.Tensor), state: next }
 *   },
 * }, batches))
 * console.log(`validation loss ${loss.toFixed(3)}, perplexity ${perplexity?.toFixed(2)}`)
 * @category training
 * @since 0.2.0
 */
export function evaluateTbptt(
  options: EvaluateTbpttOptions,
  batches: Iterable<TbpttBatch>,
): E.Either<EvaluateTbpttError, TbpttEvaluation> {
  if (!isPlainRecord(options)) return optionError("options", "an options object", options)
  const o = options as Partial<Record<string, unknown>>
  const saver = checkSaver(o["saver"])
  if (saver._tag === "Left") return saver
  const windowing = checkWindowing(o)
  if (windowing._tag === "Left") return windowing
  const flag = checkFlag(o, "crossEntropy")
  if (flag._tag === "Left") return flag
  return evaluateWith(saver.right, windowing.right, batches, o["crossEntropy"] === true)
}

function evaluateWith(
  saver: Saver,
  windowing: Windowing,
  batches: Iterable<TbpttBatch>,
  crossEntropy: boolean,
): E.Either<EvaluateTbpttError, TbpttEvaluation> {
  if (
    typeof batches !== "object" ||
    batches === null ||
    !isFunction((batches as Partial<Iterable<unknown>>)[Symbol.iterator])
  ) {
    return optionError("batches", "an iterable of batches { inputs, targets, ... }", batches)
  }
  const runner = windowRunner(saver, windowing)
  const noGradient = (
    win: WindowPlan,
    xs: tf.Tensor,
    ys: tf.Tensor,
    initial: () => StateTree<tf.Tensor>,
  ): E.Either<AnyStateError, { loss: tf.Scalar; state: StateTree<tf.Tensor> }> => {
    let state: StateTree<tf.Tensor> | undefined
    try {
      const loss = tf.tidy(() => {
        const out = runner.forward(win, xs, ys, initial(), false)
        runner.keepState(out.state)
        state = out.state
        return out.loss
      })
      return E.right({ loss, state: state as unknown as StateTree<tf.Tensor> })
    } catch (e) {
      return E.left(asStateError(e))
    }
  }
  /** Sum of loss × tokens, on the device. */
  let total: tf.Scalar | undefined
  let tokens = 0
  let windows = 0
  let count = 0
  try {
    for (const batch of batches) {
      const checked = checkBatch(batch, saver, windowing)
      if (checked._tag === "Left") return checked
      const rows = checked.right.rows
      const done = runner.runBatch(
        checked.right,
        noGradient,
        (loss) => loss.dispose(),
        (win, loss) => {
          const n = rows * win.size
          const next = tf.tidy(() => {
            const weighted = tf.mul(loss, n)
            return total === undefined ? weighted : tf.add(total, weighted)
          })
          tf.dispose([loss, ...(total === undefined ? [] : [total])])
          total = next as tf.Scalar
          tokens += n
          windows++
        },
      )
      if (done._tag === "Left") return done
      count++
    }
    const sum = total === undefined ? 0 : (total.dataSync()[0] as number)
    const loss = tokens === 0 ? Number.NaN : sum / tokens
    return E.right({
      loss,
      perplexity: crossEntropy ? Math.exp(loss) : undefined,
      tokens,
      windows,
      batches: count,
    })
  } catch (e) {
    // The iterable threw.
    return E.left(asStateError(e))
  } finally {
    total?.dispose()
  }
}

function sliceTime(t: tf.Tensor, axis: number, begin: number, size: number): tf.Tensor {
  if (begin === 0 && size === t.shape[axis]) return t.clone()
  const starts = t.shape.map((_, i) => (i === axis ? begin : 0))
  const sizes = t.shape.map((d, i) => (i === axis ? size : (d as number)))
  return tf.slice(t, starts, sizes)
}
