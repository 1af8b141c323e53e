import type * as tf from "@tensorflow/tfjs"
import {
  type LeafSpec,
  type StateSpec,
  type StateTree,
  SpecError,
  StructureMismatchError,
  type TreeDef,
  flatten,
  isLeafSpec,
  unflatten,
} from "@statesaver/core"
import * as E from "fp-ts/lib/Either.js"

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
  /** dtype of every state leaf. Default `"float32"`. */
  readonly dtype?: LeafSpec["dtype"]
}

interface Built {
  readonly spec: StateSpec
  readonly order: number[]
  readonly leaves: number
}

const isRnnLayer = (x: unknown): x is tf.RNN =>
  typeof x === "object" &&
  x !== null &&
  "cell" in x &&
  typeof (x as { cell: unknown }).cell === "object"

const stackedCells = (cell: RnnCell): RnnCell[] | undefined =>
  cell.getClassName() === "StackedRNNCells"
    ? ((cell as unknown as { cells: RnnCell[] }).cells ?? undefined)
    : undefined

function build(cell: RnnCell, path: string, dtype: LeafSpec["dtype"]): E.Either<SpecError, Built> {
  const cells = stackedCells(cell)
  if (cells !== undefined) return buildStack(cells, path, dtype)
  const size: unknown = cell.stateSize
  const leaf = (units: unknown, at: string): E.Either<SpecError, LeafSpec> =>
    typeof units === "number" && Number.isSafeInteger(units) && units > 0
      ? E.right({ shape: ["batch", units], dtype })
      : E.left(new SpecError(at, `a positive state size on ${cell.getClassName()}`, units))
  if (Array.isArray(size)) {
    const leaves: LeafSpec[] = []
    for (let i = 0; i < size.length; i++) {
      const l = leaf(size[i], `${path}[${i}]`)
      if (l._tag === "Left") return l
      leaves.push(l.right)
    }
    return E.right({ spec: leaves, order: leaves.map((_, i) => i), leaves: leaves.length })
  }
  const l = leaf(size, path)
  if (l._tag === "Left") return l
  return E.right({ spec: l.right, order: [0], leaves: 1 })
}

function buildStack(
  cells: readonly RnnCell[],
  path: string,
  dtype: LeafSpec["dtype"],
): E.Either<SpecError, Built> {
  if (cells.length === 0) return E.left(new SpecError(path, "at least one cell", "[]"))
  const built: Built[] = []
  for (let i = 0; i < cells.length; i++) {
    const b = build(cells[i] as RnnCell, `${path}[${i}]`, dtype)
    if (b._tag === "Left") return b
    built.push(b.right)
  }
  const offsets: number[] = []
  let total = 0
  for (const b of built) {
    offsets.push(total)
    total += b.leaves
  }
  // tfjs-layers flattens a stack's states last layer first (StackedRNNCells.stateSize).
  const order: number[] = []
  for (let i = built.length - 1; i >= 0; i--) {
    const b = built[i] as Built
    for (const k of b.order) order.push(k + (offsets[i] as number))
  }
  return E.right({ spec: built.map((b) => b.spec), order, leaves: total })
}

// The tree def of a layout's spec, computed once per layout (apply runs on every step).
const treeDefs = new WeakMap<CellLayout, TreeDef>()
function treeDefOf(layout: CellLayout): TreeDef {
  let def = treeDefs.get(layout)
  if (def === undefined) {
    def = flatten<unknown>(layout.spec, isLeafSpec).def
    treeDefs.set(layout, def)
  }
  return def
}

/**
 * Reads the state layout of a tfjs-layers cell, stack or RNN layer: `[h, c]` per LSTM cell, `h`
 * per GRU or SimpleRNN cell, a tuple of layers (first layer first) for a stack.
 *
 * @example
 * const rnn = tf.layers.rnn({ cell: [tf.layers.lstmCell({ units: 32 }), tf.layers.gruCell({ units: 16 })], returnState: true })
 * const { spec } = orThrow(cellLayout(rnn)) // [[h, c], h]: [batch, 32] twice, then [batch, 16]
 * @category layers
 * @since 0.1.0
 */
export function cellLayout(
  source: CellSource,
  options: CellSpecOptions = {},
): E.Either<SpecError, CellLayout> {
  const dtype = options.dtype ?? "float32"
  const built = Array.isArray(source)
    ? buildStack(source as readonly RnnCell[], "", dtype)
    : build(isRnnLayer(source) ? (source.cell as RnnCell) : (source as RnnCell), "", dtype)
  if (built._tag === "Left") return built
  return E.right({ spec: built.right.spec, tfjsOrder: built.right.order })
}

/**
 * The state spec of a tfjs-layers cell, stack or RNN layer (see `cellLayout`).
 *
 * @example
 * const spec = orThrow(specFromCells([tf.layers.lstmCell({ units: 64 }), tf.layers.lstmCell({ units: 32 })]))
 * const saver = orThrow(createStateSaver({ spec, backend: tfjsBackend(), batchSize: 8 }))
 * @category layers
 * @since 0.1.0
 */
export function specFromCells(
  source: CellSource,
  options: CellSpecOptions = {},
): E.Either<SpecError, StateSpec> {
  const layout = cellLayout(source, options)
  return layout._tag === "Left" ? layout : E.right(layout.right.spec)
}

/**
 * Flattens a state tree into the order tfjs-layers takes as `initialState` (last layer first).
 *
 * @example
 * const initialState = orThrow(toTfjsStates(layout, saver.state()))
 * @category layers
 * @since 0.1.0
 */
export function toTfjsStates<T>(
  layout: CellLayout,
  state: StateTree<T>,
): E.Either<StructureMismatchError, T[]> {
  const { leaves } = flatten<T>(state)
  if (leaves.length !== layout.tfjsOrder.length) {
    return E.left(
      new StructureMismatchError("", `${layout.tfjsOrder.length} state leaves`, leaves.length),
    )
  }
  return E.right(layout.tfjsOrder.map((k) => leaves[k] as T))
}

/**
 * Rebuilds a state tree (first layer first) from the flat list tfjs-layers returns after the
 * output of an RNN with `returnState: true` (last layer first).
 *
 * @example
 * const [y, ...states] = rnn.apply(x, { initialState }) as tf.Tensor[]
 * const next = orThrow(fromTfjsStates(layout, states))
 * @category layers
 * @since 0.1.0
 */
export function fromTfjsStates<T>(
  layout: CellLayout,
  states: readonly T[],
): E.Either<StructureMismatchError, StateTree<T>> {
  if (states.length !== layout.tfjsOrder.length) {
    return E.left(
      new StructureMismatchError("", `${layout.tfjsOrder.length} state tensors`, states.length),
    )
  }
  const leaves = new Array<T>(states.length)
  layout.tfjsOrder.forEach((k, i) => {
    leaves[k] = states[i] as T
  })
  return E.right(unflatten(treeDefOf(layout), leaves))
}
