import * as tf from "@tensorflow/tfjs"
import {
  BackendError,
  BatchSizeMismatchError,
  RowIndexError,
  type StateError,
  type StateSaver,
  type StateTree,
} from "@statesaver/core"
import * as E from "fp-ts/lib/Either.js"
import { type RowMask, resetWhere } from "./training-state.js"

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
  readonly starts?: RowMask
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
  /** Runs the model on one window from the carried state. Called inside `optimizer.minimize`. */
  readonly step: (window: TbpttWindow) => TbpttStepResult
  /** Time steps per window; the last window of a batch may be shorter. */
  readonly windowSize: number
  /** Axis of time in inputs and targets. Default 1. */
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
   * Trains on one batch: runs `optimizer.minimize` once per window, the `starts` rows reading
   * their init in the first window, and saves the final state of each window for the next.
   * A batch with fewer (or more) rows than the saver keeps the first rows' state (new rows start
   * at init). Returns the window losses when `onWindow` is set (reading a loss waits for the
   * device), else an empty list. A `Left` from checking the batch leaves everything unchanged; a
   * failure inside a window leaves weights and state as the previous window left them.
   */
  trainBatch(batch: TbpttBatch): E.Either<StateError, number[]>
}

class StepFailed {
  constructor(readonly error: StateError) {}
}

/**
 * Creates a truncated-BPTT trainer: each window is one `optimizer.minimize` whose final state
 * is saved and fed to the next window as a constant, so the gradient stops at the boundary.
 *
 * @example
 * const trainer = createTbpttTrainer({
 *   saver, optimizer: tf.train.adam(0.01), windowSize: 20,
 *   step: ({ inputs, targets, state }) => {
 *     const { output, state: next } = orThrow(rnn.run(inputs, state, { training: true }))
 *     return { loss: tf.losses.softmaxCrossEntropy(targets, head.apply(output) as tf.Tensor), state: next }
 *   },
 * })
 * orThrow(trainer.trainBatch({ inputs, targets, starts }))
 * @category training
 * @since 0.1.0
 */
export function createTbpttTrainer(options: TbpttOptions): TbpttTrainer {
  const { saver, optimizer, step } = options
  const timeAxis = options.timeAxis ?? 1
  let batches = 0
  let built = false
  const backendName = (): string => `tfjs(${tf.getBackend()})`

  const trainBatch = (batch: TbpttBatch): E.Either<StateError, number[]> => {
    const { inputs, targets } = batch
    const rows = inputs.shape[0] as number
    const time = inputs.shape[timeAxis]
    if (time === undefined || time < 1) {
      return E.left(
        new RowIndexError(`inputs with a time axis ${timeAxis} of at least 1 step`, inputs.shape),
      )
    }
    if (targets.shape[0] !== rows)
      return E.left(new BatchSizeMismatchError("targets", rows, targets.shape[0] ?? 0, 0))
    if (targets.shape[timeAxis] !== time) {
      return E.left(
        new RowIndexError(`targets with ${time} steps on axis ${timeAxis}`, targets.shape),
      )
    }
    if (!Number.isSafeInteger(options.windowSize) || options.windowSize < 1) {
      return E.left(
        new RowIndexError("a window size that is a positive integer", options.windowSize),
      )
    }
    const starts = batch.starts
    if (starts !== undefined) {
      const length = starts instanceof tf.Tensor ? starts.size : starts.length
      if (length !== rows || (starts instanceof tf.Tensor && starts.rank !== 1))
        return E.left(new RowIndexError(`a starts mask of length ${rows}`, `length ${length}`))
    }
    if (rows !== saver.batchSize) {
      const kept = saver.batchSize
      const resized = saver.select(Array.from({ length: rows }, (_, i) => (i < kept ? i : null)))
      if (resized._tag === "Left") return resized
    }
    // Rows that start a sequence read init in the first window: a masked where on the device
    // (nothing is read back), saved with the window's final state.
    const windowState = (mask: RowMask | undefined): StateTree<tf.Tensor> => {
      const state = saver.state() as StateTree<tf.Tensor>
      if (mask === undefined) return state
      const reset = resetWhere(saver.spec, state, mask)
      if (reset._tag === "Left") throw new StepFailed(reset.left)
      return reset.right
    }
    const windows = Math.ceil(time / options.windowSize)
    const losses: number[] = []
    for (let w = 0; w < windows; w++) {
      const begin = w * options.windowSize
      const size = Math.min(options.windowSize, time - begin)
      const [xs, ys] = tf.tidy(() => [
        sliceTime(inputs, timeAxis, begin, size),
        sliceTime(targets, timeAxis, begin, size),
      ])
      const window = { inputs: xs as tf.Tensor, targets: ys as tf.Tensor, window: w }
      try {
        if (!built) {
          // tfjs-layers create their weights on first call; minimize needs them to exist before.
          tf.tidy(() => {
            step({ ...window, state: saver.state() as StateTree<tf.Tensor> })
          })
          built = true
        }
        const cost = optimizer.minimize(
          () => {
            const out = step({ ...window, state: windowState(w === 0 ? starts : undefined) })
            const saved = saver.save(out.state)
            if (saved._tag === "Left") throw new StepFailed(saved.left)
            return out.loss
          },
          true,
          options.varList,
        )
        if (options.onWindow !== undefined && cost !== null) {
          const loss = (cost.dataSync()[0] as number) ?? Number.NaN
          losses.push(loss)
          options.onWindow({ batch: batches, window: w, windows, rows, loss })
        }
        cost?.dispose()
      } catch (e) {
        return E.left(
          e instanceof StepFailed
            ? e.error
            : new BackendError(backendName(), "train window", "", e),
        )
      } finally {
        tf.dispose([xs as tf.Tensor, ys as tf.Tensor])
      }
    }
    batches++
    return E.right(losses)
  }

  return {
    get batches() {
      return batches
    },
    trainBatch,
  }
}

function sliceTime(t: tf.Tensor, axis: number, begin: number, size: number): tf.Tensor {
  if (begin === 0 && size === t.shape[axis]) return t.clone()
  const starts = t.shape.map((_, i) => (i === axis ? begin : 0))
  const sizes = t.shape.map((d, i) => (i === axis ? size : (d as number)))
  return tf.slice(t, starts, sizes)
}
