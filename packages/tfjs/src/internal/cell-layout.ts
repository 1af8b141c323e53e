import type * as tf from "@tensorflow/tfjs"
import {
  type LeafSpec,
  OptionError,
  SpecError,
  type StateSpec,
  type TreeDef,
  flatten,
  isLeafSpec,
} from "@statesaver/core"
import type { CellLayout, CellLayoutError, RnnCell } from "../cell-spec.js"
import { isPlainRecord } from "./checks.js"
import * as E from "./either.js"
import { TF_DTYPES, isTfDType } from "./rows.js"

interface Built {
  readonly spec: StateSpec
  readonly order: number[]
  readonly leaves: number
}

const SOURCE_KINDS =
  "a tfjs-layers recurrent cell, a list of cells, or an RNN layer (tf.layers.rnn, lstm, gru, simpleRNN)"

const isObject = (x: unknown): x is Record<string, unknown> => typeof x === "object" && x !== null

/** A tfjs-layers cell: a layer with a `stateSize` (duck-typed: tfjs may be bundled twice). */
const isCell = (x: unknown): x is RnnCell =>
  isObject(x) && typeof x["getClassName"] === "function" && "stateSize" in x

/** An RNN layer: a layer holding a cell (`tf.RNN` and the `lstm`/`gru`/`simpleRNN` layers). */
export const isRnnLayer = (x: unknown): x is tf.RNN =>
  isObject(x) && typeof x["getClassName"] === "function" && isCell(x["cell"])

const stackedCells = (cell: RnnCell): unknown =>
  cell.getClassName() === "StackedRNNCells"
    ? (cell as unknown as { cells: unknown }).cells
    : undefined

function build(cell: unknown, path: string, dtype: LeafSpec["dtype"]): E.Either<SpecError, Built> {
  if (!isCell(cell)) return E.left(new SpecError({ path, expected: SOURCE_KINDS, actual: cell }))
  const cells = stackedCells(cell)
  if (cells !== undefined) return buildStack(cells, path, dtype)
  const size: unknown = cell.stateSize
  const leaf = (units: unknown, at: string): E.Either<SpecError, LeafSpec> =>
    typeof units === "number" && Number.isSafeInteger(units) && units > 0
      ? E.right({ shape: ["batch", units], dtype })
      : E.left(
          new SpecError({
            path: at,
            expected: `a positive integer state size on ${cell.getClassName()}`,
            actual: units,
          }),
        )
  if (Array.isArray(size)) {
    if (size.length === 0) {
      return E.left(
        new SpecError({
          path,
          expected: `at least one state on ${cell.getClassName()}`,
          actual: size,
        }),
      )
    }
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
  cells: unknown,
  path: string,
  dtype: LeafSpec["dtype"],
): E.Either<SpecError, Built> {
  if (!Array.isArray(cells))
    return E.left(new SpecError({ path, expected: SOURCE_KINDS, actual: cells }))
  if (cells.length === 0)
    return E.left(new SpecError({ path, expected: "at least one cell", actual: cells }))
  const built: Built[] = []
  for (let i = 0; i < cells.length; i++) {
    const b = build(cells[i], `${path}[${i}]`, dtype)
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

// Layouts already checked, with their spec's tree def (run and apply use it on every step).
const checked = new WeakMap<CellLayout, TreeDef>()

/** The layout read from `source`, or why it cannot be read. */
export function readCellLayout(
  source: unknown,
  options: unknown = {},
): E.Either<CellLayoutError, CellLayout> {
  if (!isPlainRecord(options)) {
    return E.left(
      new OptionError({
        path: "options",
        expected: "an options object or nothing",
        actual: options,
      }),
    )
  }
  const dtype: unknown = options["dtype"] ?? "float32"
  if (typeof dtype !== "string" || !isTfDType(dtype)) {
    return E.left(
      new OptionError({ path: "dtype", expected: TF_DTYPES.join(", "), actual: options["dtype"] }),
    )
  }
  const built = Array.isArray(source)
    ? buildStack(source, "", dtype)
    : build(isRnnLayer(source) ? source.cell : source, "", dtype)
  if (built._tag === "Left") return built
  const layout: CellLayout = { spec: built.right.spec, tfjsOrder: built.right.order }
  checked.set(layout, flatten<unknown>(layout.spec, isLeafSpec).def)
  return E.right(layout)
}

/**
 * The tree def of a layout's spec, checking a layout not made by `cellLayout` once: `tfjsOrder`
 * must be a permutation of the spec's leaf indices.
 */
export function layoutDef(layout: unknown): E.Either<SpecError, TreeDef> {
  if (isObject(layout)) {
    const known = checked.get(layout as unknown as CellLayout)
    if (known !== undefined) return E.right(known)
  }
  const bad = (detail: string) =>
    E.left(
      new SpecError({
        expected: "a CellLayout { spec, tfjsOrder } (from cellLayout)",
        actual: layout,
        detail,
      }),
    )
  if (!isObject(layout) || !Array.isArray(layout["tfjsOrder"]))
    return bad("not an object with a tfjsOrder array")
  const { leaves, def } = flatten<unknown>(layout["spec"] as StateSpec, isLeafSpec)
  if (leaves.length === 0 || !leaves.every(isLeafSpec))
    return bad("its spec is not a tree of leaf specs")
  const order = layout["tfjsOrder"] as unknown[]
  const seen = new Set<unknown>()
  for (const k of order) {
    if (typeof k !== "number" || !Number.isInteger(k) || k < 0 || k >= leaves.length || seen.has(k))
      return bad(`tfjsOrder must be a permutation of 0..${leaves.length - 1}`)
    seen.add(k)
  }
  if (seen.size !== leaves.length)
    return bad(`tfjsOrder must be a permutation of 0..${leaves.length - 1}`)
  checked.set(layout as unknown as CellLayout, def)
  return E.right(def)
}
