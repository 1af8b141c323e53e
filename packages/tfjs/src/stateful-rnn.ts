import * as tf from "@tensorflow/tfjs"
import {
  BackendError,
  BatchSizeMismatchError,
  SpecError,
  type StateError,
  type StateSaver,
  type StateSpec,
  type StateStore,
  type StateTree,
  type StreamKey,
  disposeTree,
} from "@statesaver/core"
import * as E from "fp-ts/lib/Either.js"
import { type CellLayout, cellLayout, fromTfjsStates, toTfjsStates } from "./cell-spec.js"

/**
 * Options of `StatefulRnn.run` and `StatefulRnn.apply`.
 *
 * @category layers
 * @since 0.1.0
 */
export interface RunOptions {
  /** Passed to the layer (dropout). Default false. */
  readonly training?: boolean
}

/**
 * What `StatefulRnn.run` returns: the layer's output and its final state (first layer first).
 *
 * @category layers
 * @since 0.1.0
 */
export interface RnnResult {
  readonly output: tf.Tensor
  readonly state: StateTree<tf.Tensor>
}

/**
 * An RNN layer paired with its state layout: feeds a state tree as `initialState` and returns
 * the final states in the same tree order, whatever order tfjs-layers uses inside.
 *
 * @category layers
 * @since 0.1.0
 */
export interface StatefulRnn {
  readonly layer: tf.RNN
  readonly layout: CellLayout
  /** The state spec of the layer (`cellLayout(layer).spec`). */
  readonly spec: StateSpec
  /**
   * Runs the layer from `state` (`[batch, time, features]` inputs) and returns the output with
   * the final state as new tensors; nothing is saved. Use it inside a training step.
   */
  run(
    inputs: tf.Tensor,
    state: StateTree<tf.Tensor>,
    options?: RunOptions,
  ): E.Either<StateError, RnnResult>
  /** Runs the layer from the saver's state, saves the final state and returns the output. */
  apply(
    inputs: tf.Tensor,
    saver: StateSaver<tf.Variable, tf.Tensor>,
    options?: RunOptions,
  ): E.Either<StateError, tf.Tensor>
  /**
   * Runs one batch of independent streams: row `i` of `inputs` belongs to `keys[i]`. Their state
   * is gathered from the store (a new key starts at init), the layer runs once, and each row's
   * final state is scattered back to its stream. Returns the batched output, rows in key order.
   */
  applyStreams(
    inputs: tf.Tensor,
    store: StateStore<tf.Variable, tf.Tensor>,
    keys: readonly StreamKey[],
    options?: RunOptions,
  ): E.Either<StateError, tf.Tensor>
}

/**
 * Wraps an RNN layer built with `returnState: true` (and not `stateful`) so its state is carried
 * by a `StateSaver`: `apply` feeds the saved state and saves the final one in the right order.
 *
 * @example
 * const cell = [tf.layers.lstmCell({ units: 64 }), tf.layers.lstmCell({ units: 32 })]
 * const rnn = orThrow(statefulRnn(tf.layers.rnn({ cell, returnSequences: true, returnState: true }) as tf.RNN))
 * const saver = orThrow(createStateSaver({ spec: rnn.spec, backend: tfjsBackend(), batchSize: 8 }))
 * const y = orThrow(rnn.apply(x, saver)) // state carried to the next call
 * @category layers
 * @since 0.1.0
 */
export function statefulRnn(layer: tf.RNN): E.Either<SpecError, StatefulRnn> {
  if (!layer.returnState)
    return E.left(new SpecError("", "an RNN layer with returnState: true", "returnState: false"))
  if (layer.stateful)
    return E.left(new SpecError("", "an RNN layer with stateful: false", "stateful: true"))
  const layout = cellLayout(layer)
  if (layout._tag === "Left") return layout
  const { spec } = layout.right
  const run = (
    inputs: tf.Tensor,
    state: StateTree<tf.Tensor>,
    options: RunOptions = {},
  ): E.Either<StateError, RnnResult> => {
    const initialState = toTfjsStates(layout.right, state)
    if (initialState._tag === "Left") return initialState
    let outs: tf.Tensor[]
    try {
      outs = tf.tidy(
        () =>
          layer.apply(inputs, {
            initialState: initialState.right,
            training: options.training ?? false,
          }) as tf.Tensor[],
      )
    } catch (e) {
      return E.left(new BackendError(`tfjs(${tf.getBackend()})`, "RNN apply", "", e))
    }
    const [output, ...states] = outs
    const tree = fromTfjsStates(layout.right, states)
    if (output === undefined || tree._tag === "Left") {
      tf.dispose(outs)
      return tree._tag === "Left" ? tree : E.left(new SpecError("", "an output tensor", "none"))
    }
    return E.right({ output, state: tree.right })
  }
  return E.right({
    layer,
    layout: layout.right,
    spec,
    run,
    apply(inputs, saver, options = {}) {
      const rows = inputs.shape[0]
      if (rows !== saver.batchSize)
        return E.left(new BatchSizeMismatchError("", saver.batchSize, rows ?? 0, 0))
      const result = run(inputs, saver.state() as StateTree<tf.Tensor>, options)
      if (result._tag === "Left") return result
      const saved = saver.save(result.right.state)
      if (saved._tag === "Left") {
        tf.dispose([result.right.output, ...collect(result.right.state)])
        return saved
      }
      return E.right(result.right.output)
    },
    applyStreams(inputs, store, keys, options = {}) {
      const rows = inputs.shape[0] ?? 0
      if (rows !== keys.length) return E.left(new BatchSizeMismatchError("", keys.length, rows, 0))
      const gathered = store.gather(keys)
      if (gathered._tag === "Left") return gathered
      const result = run(inputs, gathered.right as StateTree<tf.Tensor>, options)
      disposeTree(store.backend, gathered.right)
      if (result._tag === "Left") return result
      const scattered = store.scatter(keys, result.right.state)
      if (scattered._tag === "Left") {
        tf.dispose([result.right.output, ...collect(result.right.state)])
        return scattered
      }
      return E.right(result.right.output)
    },
  })
}

function collect(tree: StateTree<tf.Tensor>): tf.Tensor[] {
  if (tree instanceof tf.Tensor) return [tree]
  return Object.values(tree as Record<string, StateTree<tf.Tensor>>).flatMap(collect)
}
