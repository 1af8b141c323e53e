import type * as tf from "@tensorflow/tfjs"
import {
  type LeafSpec,
  type OptionError,
  type SpecError,
  type StateSpec,
  type StateTree,
  StructureMismatchError,
  unflatten,
} from "@statesaver/core"
import { layoutDef, readCellLayout } from "./internal/cell-layout.js"
import { leavesOfTree } from "./internal/checks.js"
import * as E from "./internal/either.js"

/**
 * A tfjs-layers recurrent cell (`tf.layers.lstmCell`, `gruCell`, `simpleRNNCell`,
 * `stackedRNNCells`, or a custom `RNNCell`).
 *
 * @category layers
 * @since 0.1.0
 */
export type RnnCell = tf.RNN["cell"]

/**
 * What a spec can be read from: a cell, a list of cells (a stack, first layer first), or an RNN
 * layer (`tf.layers.rnn`, `lstm`, `gru`, `simpleRNN`).
 *
 * @category layers
 * @since 0.1.0
 */
export type CellSource = RnnCell | readonly RnnCell[] | tf.RNN

/**
 * The state layout of a cell stack: the spec (first layer first, `[h, c]` per LSTM layer) and
 * how it maps to the flat state list tfjs-layers uses (last layer first).
 *
 * @category layers
 * @since 0.1.0
 */
export interface CellLayout {
  readonly spec: StateSpec
  /** `tfjsOrder[k]` is the index, in `flatten(spec)` order, of tfjs's k-th state tensor. */
  readonly tfjsOrder: readonly number[]
}

/**
 * Options of `cellLayout` and `specFromCells`.
 *
 * @category layers
 * @since 0.1.0
 */
export interface CellSpecOptions {
  /** dtype of every state leaf: `"float32"` (the default), `"int32"` or `"bool"`. */
  readonly dtype?: LeafSpec["dtype"]
}

/**
 * The errors of reading a layout: a source that is not a cell, stack or RNN layer (`SpecError`),
 * or a bad option (`OptionError`).
 *
 * @category layers
 * @since 0.2.0
 */
export type CellLayoutError = SpecError | OptionError

const orThrowLeft = <A>(r: E.Either<CellLayoutError, A>): A => {
  if (r._tag === "Left") throw r.left
  return r.right
}

/**
 * Reads the state layout of a tfjs-layers cell, stack or RNN layer: `[h, c]` per LSTM cell, `h`
 * per GRU or SimpleRNN cell, a tuple of layers (first layer first) for a stack.
 *
 * Like the spec builders of core (`lstmSpec`), this noun returns a plain value and throws a typed
 * error on a bad argument; `createStatefulRnn` reads the layout of a layer as an `Either`.
 *
 * @example
 * const rnn = tf.layers.rnn({ cell: [tf.layers.lstmCell({ units: 32 }), tf.layers.gruCell({ units: 16 })], returnState: true })
 * const { spec } = cellLayout(rnn) // [[h, c], h]: [batch, 32] twice, then [batch, 16]
 * @throws SpecError when `source` is not a cell, a list of cells or an RNN layer, or a cell has
 *   no positive state size; OptionError on a bad `options` or `dtype`.
 * @category layers
 * @since 0.1.0
 */
export function cellLayout(source: CellSource, options: CellSpecOptions = {}): CellLayout {
  return orThrowLeft(readCellLayout(source, options))
}

/**
 * The state spec of a tfjs-layers cell, stack or RNN layer (see `cellLayout`).
 *
 * @example
 * const spec = specFromCells([tf.layers.lstmCell({ units: 64 }), tf.layers.lstmCell({ units: 32 })])
 * const saver = orThrow(createStateSaver({ spec, backend: tfjsBackend(), batchSize: 8 }))
 * @throws SpecError or OptionError, as `cellLayout`.
 * @category layers
 * @since 0.1.0
 */
export function specFromCells(source: CellSource, options: CellSpecOptions = {}): StateSpec {
  return orThrowLeft(readCellLayout(source, options)).spec
}

/**
 * The errors of `toTfjsStates` and `fromTfjsStates`.
 *
 * @category layers
 * @since 0.2.0
 */
export type TfjsStatesError = StructureMismatchError | SpecError

/**
 * Flattens a state tree into the order tfjs-layers takes as `initialState` (last layer first).
 * The tree must have the layout's structure (only the structure is checked: leaves may be of
 * any type).
 *
 * @example
 * const initialState = orThrow(toTfjsStates(layout, saver.state()))
 * @category layers
 * @since 0.1.0
 */
export function toTfjsStates<T>(
  layout: CellLayout,
  state: StateTree<T>,
): E.Either<TfjsStatesError, T[]> {
  const def = layoutDef(layout)
  if (def._tag === "Left") return def
  const leaves = leavesOfTree<T>(layout.spec, def.right, state)
  if (leaves._tag === "Left") return leaves
  return E.right(layout.tfjsOrder.map((k) => leaves.right[k] as T))
}

/**
 * Rebuilds a state tree (first layer first) from the flat list tfjs-layers returns after the
 * output of an RNN with `returnState: true` (last layer first).
 *
 * @example
 * const [y, ...states] = layer.apply(x, { initialState }) as tf.Tensor[]
 * const next = orThrow(fromTfjsStates(layout, states))
 * @category layers
 * @since 0.1.0
 */
export function fromTfjsStates<T>(
  layout: CellLayout,
  states: readonly T[],
): E.Either<TfjsStatesError, StateTree<T>> {
  const def = layoutDef(layout)
  if (def._tag === "Left") return def
  if (!Array.isArray(states) || states.length !== layout.tfjsOrder.length) {
    return E.left(
      new StructureMismatchError({
        expected: `a list of ${layout.tfjsOrder.length} state tensors`,
        actual: states,
        ...(Array.isArray(states) ? { detail: `${states.length} given` } : {}),
      }),
    )
  }
  const leaves = new Array<T>(states.length)
  layout.tfjsOrder.forEach((k, i) => {
    leaves[k] = states[i] as T
  })
  return E.right(unflatten(def.right, leaves))
}
