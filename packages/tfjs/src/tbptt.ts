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
  flatten,
} from "@statesaver/core"
import {
  checkMask,
  checkStateTree,
  checkTensor,
  isPlainRecord,
  isResolvedSpec,
} from "./internal/checks.js"
import * as E from "./internal/either.js"
import { type RowMask, resetWhere, selectRows } from "./training-state.js"

/**
 * What the model step of a truncated-BPTT trainer receives: one window of the batch and the
 * state carried from the previous window (constant: the gradient stops there).
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
}

/**
 * What the model step returns: the window's scalar loss and the final state to carry.
 *
 * @category training
 * @since 0.1.0
 */
export interface TbpttStepResult {
  readonly loss: tf.Scalar
  readonly state: StateTree<tf.Tensor>
}

/**
 * One batch of sequences for `TbpttTrainer.trainBatch`. Row `i` continues row `i` of the previous
 * batch unless `starts[i]` is set.
 *
 * @category training
 * @since 0.1.0
 */
export interface TbpttBatch {
  /** `[batch, time, ...]` (time on `timeAxis`). */
  readonly inputs: tf.Tensor
  /** Split along the same time axis as `inputs`. */
  readonly targets: tf.Tensor
  /** Rows whose sequence starts with this batch: they read their init in the first window. */
  readonly starts?: RowMask | undefined
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
   * Trains on one batch: one optimizer step per window, the `starts` rows reading
   * their init in the first window, and saves the final state of each window for the next.
   * A batch with fewer (or more) rows than the saver keeps the first rows' state (new rows start
   * at init). Returns the window losses when `onWindow` is set (reading a loss waits for the
   * device), else an empty list.
   *
   * A `Left` from checking the batch (or the saver) leaves weights and state unchanged. A failure
   * inside a window (the step throws or returns what the saver refuses) leaves weights and state
   * as the previous window left them: unchanged when it is the first window, batch size
   * included. A `StateError` the step throws (say from `orThrow(rnn.run(...))`) is returned as
   * is; anything else it throws becomes a `BackendError` whose `cause` is the thrown value.
   */
  trainBatch(batch: TbpttBatch): E.Either<TrainBatchError, number[]>
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
 * `RowIndexError` (`starts`) or `DisposedError` (the saver); a window gives the saver's errors,
 * `OptionError` (`step` returned no `{ loss, state }`), `BackendError`, or any `StateError` the
 * step threw.
 *
 * @category training
 * @since 0.2.0
 */
export type TrainBatchError = AnyStateError

/** How the first window of a batch reads its state, and the rows it resizes the saver to. */
interface FirstWindow {
  readonly state: () => StateTree<tf.Tensor>
  readonly resize: (number | null)[] | undefined
}

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

/** Checks the options; the saver must be a live `StateSaver` holding tf tensors. */
function checkOptions(options: unknown): E.Either<CreateTbpttTrainerError, TbpttOptions> {
  if (!isPlainRecord(options)) return optionError("options", "an options object", options)
  const { saver, optimizer, step, windowSize, timeAxis, varList, onWindow } = options as Partial<
    Record<keyof TbpttOptions, unknown>
  >
  if (
    typeof saver !== "object" ||
    saver === null ||
    !isFunction((saver as Partial<StateSaver<unknown>>).state) ||
    !isFunction((saver as Partial<StateSaver<unknown>>).save) ||
    !isFunction((saver as Partial<StateSaver<unknown>>).select) ||
    !isResolvedSpec((saver as Partial<StateSaver<unknown>>).spec)
  ) {
    return optionError("saver", "a StateSaver", saver)
  }
  const s = saver as StateSaver<unknown>
  if (s.disposed) return E.left(new DisposedError({ what: "StateSaver" }))
  if (!flatten<unknown>(s.state()).leaves.every((t) => t instanceof tf.Tensor))
    return optionError("saver", "a StateSaver on a tfjs backend", saver)
  if (!(optimizer instanceof tf.Optimizer))
    return optionError("optimizer", "a tf.Optimizer (tf.train.adam(), sgd(), ...)", optimizer)
  if (!isFunction(step)) return optionError("step", "a function of a window", step)
  if (typeof windowSize !== "number" || !Number.isSafeInteger(windowSize) || windowSize < 1)
    return optionError("windowSize", "a positive integer", windowSize)
  if (
    timeAxis !== undefined &&
    (typeof timeAxis !== "number" || !Number.isSafeInteger(timeAxis) || timeAxis < 1)
  ) {
    return optionError("timeAxis", "an integer of at least 1 (axis 0 holds the rows)", timeAxis)
  }
  if (
    varList !== undefined &&
    (!Array.isArray(varList) ||
      !varList.every((v) => v instanceof tf.Variable && !v.isDisposed && v.trainable))
  ) {
    return optionError("varList", "an array of live trainable tf.Variables", varList)
  }
  if (onWindow !== undefined && !isFunction(onWindow))
    return optionError("onWindow", "a function of a window report", onWindow)
  return E.right(options as unknown as TbpttOptions)
}

/** `[batch, *, time]`-like pattern of the dims a tensor needs, for error messages. */
const timePattern = (rows: number | "batch", timeAxis: number, time: number | "time") =>
  Array.from({ length: timeAxis + 1 }, (_, i) => (i === 0 ? rows : i === timeAxis ? time : "*"))

/**
 * Creates a truncated-BPTT trainer: each window is one optimizer step (`computeGradients` of
 * the step's loss, then `applyGradients`) whose final state is saved and fed to the next window
 * as a constant, so the gradient stops at the boundary.
 *
 * Factories named `create*` validate and return an `Either`: a missing or ill-typed option is a
 * `Left(OptionError)` naming it (`saver`, `optimizer`, `step`, `windowSize`, `timeAxis`,
 * `varList`, `onWindow`); nothing throws.
 *
 * @example
 * const trainer = orThrow(createTbpttTrainer({
 *   saver, optimizer: tf.train.adam(0.01), windowSize: 20,
 *   step: ({ inputs, targets, state }) => {
 *     const { output, state: next } = orThrow(rnn.run(inputs, state, { training: true }))
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
  const { saver, optimizer, step, windowSize, varList, onWindow } = valid.right
  const timeAxis = valid.right.timeAxis ?? 1
  let batches = 0
  let built = false

  /** Checks a batch; the rows, steps and starts mask it trains on. */
  const checkBatch = (
    batch: unknown,
  ): E.Either<
    TrainBatchError,
    {
      inputs: tf.Tensor
      targets: tf.Tensor
      rows: number
      time: number
      starts: RowMask | undefined
    }
  > => {
    if (!isPlainRecord(batch)) {
      return E.left(
        new StructureMismatchError({
          path: "batch",
          expected: "a batch { inputs, targets, starts? }",
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
    const starts: unknown = batch["starts"]
    if (starts !== undefined) {
      const mask = checkMask(starts, rows)
      if (mask._tag === "Left") return mask
    }
    if (saver.disposed) return E.left(new DisposedError({ what: "StateSaver" }))
    return E.right({ inputs, targets, rows, time, starts: starts as RowMask | undefined })
  }

  const spec = saver.spec
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
   * One window: gradients of the step's loss, then (only when the step succeeded) the state is
   * saved and the gradients applied. Nothing is thrown out of the gradient tape: tfjs leaks the
   * tensors it saved for backprop when the function it differentiates throws.
   */
  const trainWindow = (
    window: Omit<TbpttWindow, "state">,
    first: FirstWindow | undefined,
  ): E.Either<TrainBatchError, tf.Scalar> => {
    const stateNow = first?.state ?? (() => saver.state() as StateTree<tf.Tensor>)
    const resize = first?.resize
    let failure: AnyStateError | undefined
    let loss: tf.Tensor | undefined
    let state: StateTree<tf.Tensor> | undefined
    let computed: { value: tf.Scalar; grads: tf.NamedTensorMap } | undefined
    try {
      if (!built) {
        // tfjs-layers create their weights on first call; gradients need them to exist before.
        tf.tidy(() => {
          step({ ...window, state: stateNow() })
        })
        built = true
      }
      computed = optimizer.computeGradients(() => {
        try {
          const out = stepResult(step({ ...window, state: stateNow() }))
          keepState(out.state)
          state = out.state
          loss = out.loss
          return out.loss as tf.Scalar
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
    if (failure === undefined && state !== undefined) {
      if (resize !== undefined) {
        // Check before resizing, so a refused state leaves the saver as it was.
        const ok = checkStateTree(spec, state, { size: resize.length, path: "inputs" })
        if (ok._tag === "Left") failure = ok.left
        else failure = aliased(spec, ok.right.tensors)
        if (failure === undefined) {
          const resized = saver.select(resize)
          if (resized._tag === "Left") failure = resized.left
        }
      }
      if (failure === undefined) {
        const saved = saver.save(state)
        if (saved._tag === "Left") failure = saved.left
        else kept = []
      }
    }
    if (failure !== undefined || computed === undefined) {
      releaseKept()
      if (computed !== undefined) tf.dispose([computed.value, ...Object.values(computed.grads)])
      else if (loss !== undefined) loss.dispose()
      return E.left(
        failure ??
          new BackendError({
            backend: backendName(),
            operation: "train window",
            cause: new Error("no gradients were computed"),
          }),
      )
    }
    const { value, grads } = computed
    optimizer.applyGradients(
      varList === undefined
        ? grads
        : varList.map((v) => ({ name: v.name, tensor: grads[v.name] as tf.Tensor })),
    )
    tf.dispose(Object.values(grads))
    return E.right(value)
  }

  const trainBatch = (batch: TbpttBatch): E.Either<TrainBatchError, number[]> => {
    const checked = checkBatch(batch)
    if (checked._tag === "Left") return checked
    const { inputs, targets, rows, time, starts } = checked.right
    // A batch of another size changes the saver's rows only once its first window succeeded:
    // until then that window reads the resized state as tf ops.
    const held = saver.batchSize
    const resize =
      rows === held ? undefined : Array.from({ length: rows }, (_, i) => (i < held ? i : null))
    const firstState = (): StateTree<tf.Tensor> => {
      let state = saver.state() as StateTree<tf.Tensor>
      if (resize !== undefined) {
        const picked = selectRows(spec, state, resize)
        if (picked._tag === "Left") throw new StepFailed(picked.left)
        state = picked.right
      }
      // Rows that start a sequence read init: a masked where on the device (nothing is read
      // back), saved with the window's final state.
      if (starts === undefined) return state
      const reset = resetWhere(spec, state, starts)
      if (reset._tag === "Left") throw new StepFailed(reset.left)
      return reset.right
    }
    const windows = Math.ceil(time / windowSize)
    const losses: number[] = []
    for (let w = 0; w < windows; w++) {
      const begin = w * windowSize
      const size = Math.min(windowSize, time - begin)
      const [xs, ys] = tf.tidy(() => [
        sliceTime(inputs, timeAxis, begin, size),
        sliceTime(targets, timeAxis, begin, size),
      ])
      const window = { inputs: xs as tf.Tensor, targets: ys as tf.Tensor, window: w }
      try {
        const done = trainWindow(window, w === 0 ? { state: firstState, resize } : undefined)
        if (done._tag === "Left") return done
        const cost = done.right
        if (onWindow !== undefined) {
          const loss = (cost.dataSync()[0] as number) ?? Number.NaN
          losses.push(loss)
          onWindow({ batch: batches, window: w, windows, rows, loss })
        }
        cost.dispose()
      } catch (e) {
        // onWindow threw (the window itself completed).
        return E.left(asStateError(e))
      } finally {
        tf.dispose([xs as tf.Tensor, ys as tf.Tensor])
      }
    }
    batches++
    return E.right(losses)
  }

  return E.right({
    get batches() {
      return batches
    },
    trainBatch,
  })
}

function sliceTime(t: tf.Tensor, axis: number, begin: number, size: number): tf.Tensor {
  if (begin === 0 && size === t.shape[axis]) return t.clone()
  const starts = t.shape.map((_, i) => (i === axis ? begin : 0))
  const sizes = t.shape.map((d, i) => (i === axis ? size : (d as number)))
  return tf.slice(t, starts, sizes)
}
