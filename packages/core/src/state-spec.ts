import { OptionError, SpecError, showValue } from "./errors.js"
import { A_DTYPE, type DType, HostTensor, isDType } from "./host-tensor.js"
import { checkTensor, fitsDType, valueRange } from "./internal/dtype-values.js"
import * as E from "./internal/either.js"
import { error, fail } from "./internal/fail.js"
import { hasOwn, isArray, isName, isPlainRecord, isSize } from "./internal/predicates.js"
import {
  type PathSegment,
  type StateTree,
  type TreeDef,
  flatten,
  formatPath,
} from "./state-tree.js"

/**
 * One dim of a leaf shape: a fixed size, or a name. The name given as the batch dim marks the
 * batch axis; other names are sized by `dims` and otherwise start at 0 (a KV cache's `seq`).
 *
 * @category specs
 * @since 0.1.0
 */
export type Dim = number | string

/**
 * Initial value of a leaf's rows: zeros, a constant, or a host tensor of one row's shape (the
 * leaf shape without its batch axis), copied into every row: a given or learned initial state.
 *
 * @category specs
 * @since 0.1.0
 */
export type Init =
  | { readonly kind: "zeros" }
  | { readonly kind: "constant"; readonly value: number | bigint }
  | { readonly kind: "tensor"; readonly value: HostTensor }

const ZEROS: Init = { kind: "zeros" }

/**
 * Constructors for `Init`.
 *
 * @example
 * const c = { shape: ["batch", 64], dtype: "float32", init: init.constant(0.5) }
 * @category specs
 * @since 0.1.0
 */
export const init = {
  zeros: ZEROS,
  constant: (value: number | bigint): Init => ({ kind: "constant", value }),
  tensor: (value: HostTensor): Init => ({ kind: "tensor", value }),
} as const

/**
 * Spec of one state leaf: its shape (fixed sizes and named dims), dtype and initial value.
 *
 * @example
 * const h: LeafSpec = { shape: [1, "batch", 128], dtype: "float32" }
 * @category specs
 * @since 0.1.0
 */
export interface LeafSpec {
  readonly shape: readonly Dim[]
  readonly dtype: DType
  /** Zeros when absent. */
  readonly init?: Init
  /**
   * Bookkeeping kept in host memory: per-row lengths, positions or an audio context window
   * that a session reads and writes on the CPU between runs. A backend keeps such a leaf in
   * host memory even when its other leaves live on a device (`LeafContext.host`).
   */
  readonly host?: boolean
}

/**
 * The spec of a whole state: a tree of `LeafSpec`.
 *
 * @category specs
 * @since 0.1.0
 */
export type StateSpec = StateTree<LeafSpec>

/**
 * Leaf test for spec trees: a plain record with an array `shape` and a string `dtype`.
 *
 * @category specs
 * @since 0.1.0
 */
export function isLeafSpec(x: unknown): x is LeafSpec {
  return (
    isPlainRecord(x) &&
    hasOwn(x, "shape") &&
    isArray(x["shape"]) &&
    hasOwn(x, "dtype") &&
    typeof x["dtype"] === "string"
  )
}

/**
 * Options that give a spec its sizes.
 *
 * @category specs
 * @since 0.1.0
 */
export interface SpecOptions {
  /** Name of the batch dim in leaf shapes. Default `"batch"`. */
  readonly batchDim?: string
  /** Sizes of other named dims; a named dim absent here starts at 0 (or takes its init tensor's size). */
  readonly dims?: Readonly<Record<string, number>>
}

/**
 * A validated leaf: where it sits, its batch axis and the sizes it starts with.
 *
 * @category specs
 * @since 0.1.0
 */
export interface ResolvedLeaf {
  readonly path: readonly PathSegment[]
  readonly pathString: string
  readonly spec: LeafSpec
  readonly dtype: DType
  readonly batchAxis: number
  /** The shape with every named dim but the batch dim resolved to its starting size. */
  readonly shape: readonly Dim[]
  /** Names of the dims that may change size between saves (named, not the batch). */
  readonly growing: ReadonlyMap<number, string>
  readonly init: Init
}

/**
 * A validated spec: its tree def and leaves in `flatten` order.
 *
 * @category specs
 * @since 0.1.0
 */
export interface ResolvedSpec {
  readonly spec: StateSpec
  readonly def: TreeDef
  readonly leaves: readonly ResolvedLeaf[]
  readonly batchDim: string
  /** True when some leaf has a named dim besides the batch (a KV cache's `seq`). */
  readonly hasNamedDims: boolean
}

/**
 * Validates a spec: dtypes, dims, exactly one batch axis per leaf, init values. `Left` is a
 * `SpecError` naming the leaf: an unknown dtype, a bad dim, a batch dim missing or repeated, an
 * init constant the dtype does not hold (1.5 or 2**31 for int32, 300 for uint8, 2 for bool,
 * 2n**70n or 1.5 for int64, a finite 1e39 for float32 that would round to infinity; a bigint for
 * a float dtype only when the dtype holds it exactly; NaN and ±Infinity are fine for floats), an
 * init tensor of another dtype or row shape (or, for bool, a value other than 0 or 1), and a bad
 * `batchDim` or `dims` option.
 *
 * @example
 * const resolved = orThrow(resolveSpec(lstmSpec([64, 32]), { batchDim: "batch" }))
 * @category specs
 * @since 0.1.0
 */
export function resolveSpec(
  spec: StateSpec,
  options: SpecOptions = {},
): E.Either<SpecError, ResolvedSpec> {
  const batchDim: unknown = options.batchDim ?? "batch"
  if (!isName(batchDim)) {
    return fail(SpecError, "", "a batch dim name (a non-empty string)", batchDim, "option batchDim")
  }
  const sizes: unknown = options.dims ?? {}
  if (!isPlainRecord(sizes)) {
    return fail(SpecError, "", "a record of dim sizes", sizes, "option dims")
  }
  for (const name of Object.keys(sizes)) {
    if (!isSize(sizes[name])) {
      return fail(
        SpecError,
        "",
        `a non-negative integer size for dim "${name}"`,
        sizes[name],
        `option dims[${JSON.stringify(name)}]`,
      )
    }
  }
  const sizeOfDim = (name: string): number | undefined =>
    hasOwn(sizes, name) ? (sizes[name] as number) : undefined
  const { leaves, paths, def } = flatten<unknown>(spec, isLeafSpec)
  if (leaves.length === 0) return fail(SpecError, "", "at least one leaf", spec, "no leaves")
  const out: ResolvedLeaf[] = []
  const named = new Map<string, { size: number; path: string }>()
  for (let i = 0; i < leaves.length; i++) {
    const path = paths[i] as PathSegment[]
    const p = formatPath(path)
    const leaf = leaves[i]
    if (!isLeafSpec(leaf)) return fail(SpecError, p, "a leaf spec { shape, dtype, init? }", leaf)
    const { dtype, shape: dims } = leaf
    if (!isDType(dtype)) return fail(SpecError, p, A_DTYPE, dtype)
    const badAxis = dims.findIndex((d) => !isSize(d) && !isName(d))
    if (badAxis >= 0) {
      return fail(
        SpecError,
        p,
        "a shape of non-negative integers and dim names",
        dims,
        `dim ${badAxis} is ${showValue(dims[badAxis])}`,
      )
    }
    const batchAxis = dims.indexOf(batchDim)
    const batchAxes = dims.filter((d) => d === batchDim).length
    if (batchAxes !== 1) {
      return fail(SpecError, p, `exactly one "${batchDim}" dim`, dims, `${batchAxes} found`)
    }
    if (leaf.host !== undefined && typeof leaf.host !== "boolean") {
      return fail(SpecError, p, "host: a boolean", leaf.host)
    }
    const given: unknown = leaf.init === undefined ? ZEROS : leaf.init
    const kind = typeof given === "object" ? (given as { kind?: unknown } | null)?.kind : 0
    if (kind !== "zeros" && kind !== "constant" && kind !== "tensor") {
      return fail(
        SpecError,
        p,
        "init.zeros, init.constant(value) or init.tensor(hostTensor)",
        given,
      )
    }
    const leafInit = given as Init
    const growing = new Map<number, string>()
    const shape: Dim[] = [...dims]
    dims.forEach((d, axis) => {
      if (typeof d === "string" && d !== batchDim) growing.set(axis, d)
    })
    if (leafInit.kind === "constant" && !fitsDType(dtype, leafInit.value)) {
      return fail(
        SpecError,
        p,
        `an init constant of dtype ${dtype}: ${valueRange(dtype)}`,
        leafInit.value,
      )
    }
    if (leafInit.kind === "tensor") {
      const err = checkInitTensor(p, leaf, batchAxis, leafInit.value, sizeOfDim, shape)
      if (err) return E.left(err)
    }
    for (const [axis, name] of growing) {
      const size = sizeOfDim(name)
      if (size !== undefined) shape[axis] = size
      else if (typeof shape[axis] === "string") shape[axis] = 0
      const at = shape[axis] as number
      const seen = named.get(name)
      if (seen && seen.size !== at) {
        return fail(SpecError, p, `dim "${name}" = ${seen.size} as at leaf ${seen.path}`, at)
      }
      named.set(name, { size: at, path: p })
    }
    out.push({ path, pathString: p, spec: leaf, dtype, batchAxis, shape, growing, init: leafInit })
  }
  return E.right({
    spec,
    def,
    leaves: out,
    batchDim,
    hasNamedDims: out.some((l) => l.growing.size > 0),
  })
}

/**
 * Checks an init tensor against its leaf: a consistent `HostTensor` of the leaf's dtype and of
 * one row's shape (named dims take its sizes, written into `shape`), bool values 0 or 1.
 */
function checkInitTensor(
  p: string,
  leaf: LeafSpec,
  batchAxis: number,
  t: unknown,
  sizeOfDim: (name: string) => number | undefined,
  shape: Dim[],
): SpecError | undefined {
  const rowDims = leaf.shape.filter((_, axis) => axis !== batchAxis)
  const ofDtype = `an init HostTensor of dtype ${leaf.dtype}`
  if (!(t instanceof HostTensor)) return error(SpecError, p, ofDtype, t)
  const bad = checkTensor(t.dtype, t.shape, t.data, "init tensor")
  if (bad) {
    return new SpecError({
      path: p,
      expected: ofDtype,
      actual: t.data,
      detail: bad.message,
      cause: bad,
    })
  }
  if (t.dtype !== leaf.dtype && !(leaf.dtype === "bool" && t.dtype === "uint8")) {
    return error(SpecError, p, ofDtype, t.dtype)
  }
  const ofShape = `an init tensor of one row's shape ${showValue(rowDims)}`
  // A fixed dim must match; a named one takes the tensor's size (unless `dims` gives another).
  let fits = t.shape.length === rowDims.length
  for (let axis = 0, r = 0; fits && axis < leaf.shape.length; axis++) {
    if (axis === batchAxis) continue
    const d = leaf.shape[axis] as Dim
    const size = t.shape[r++] as number
    if (typeof d === "number") fits = d === size
    else {
      const given = sizeOfDim(d)
      if (given !== undefined && given !== size) {
        return error(SpecError, p, `an init tensor with ${d} = ${given}`, t.shape)
      }
      shape[axis] = size
    }
  }
  if (!fits) return error(SpecError, p, ofShape, t.shape)
  if (leaf.dtype === "bool") {
    const i = (t.data as Uint8Array).findIndex((v) => v > 1)
    if (i >= 0) {
      return error(
        SpecError,
        p,
        "an init tensor of bool values 0 or 1",
        (t.data as Uint8Array)[i],
        `at element ${i}`,
      )
    }
  }
  return undefined
}

/**
 * Options of the spec builders for recurrent stacks.
 *
 * @category specs
 * @since 0.1.0
 */
export interface RecurrentSpecOptions {
  /**
   * `"batch-major"`: `[batch, hidden]` per tensor (tfjs-layers). `"time-major"`: ONNX's
   * `[directions, batch, hidden]`, batch on axis 1. Default `"batch-major"`.
   */
  readonly layout?: "batch-major" | "time-major"
  /** Default `"float32"`. */
  readonly dtype?: DType
  /** 2 for bidirectional ONNX layers (time-major only). Default 1. */
  readonly directions?: 1 | 2
  /** Name of the batch dim. Default `"batch"`. */
  readonly batchDim?: string
}

/**
 * Checks the arguments of a recurrent spec builder: throws a `SpecError` for widths that are not
 * a non-empty array of positive integers, an `OptionError` for a bad option.
 */
function checkRecurrent(builder: string, widths: unknown, options: unknown): void {
  if (!isArray(widths) || widths.length === 0) {
    throw error(
      SpecError,
      "",
      "a non-empty array of positive integer layer widths",
      widths,
      `${builder}: widths`,
    )
  }
  widths.forEach((w: unknown, i) => {
    if (!isSize(w) || w === 0) {
      throw error(SpecError, "", "a positive integer layer width", w, `${builder}: widths[${i}]`)
    }
  })
  if (options === undefined) return
  if (!isPlainRecord(options)) throw error(OptionError, "options", "an options record", options)
  const { layout, dtype, directions, batchDim } = options
  const check = (key: string, ok: boolean, expected: string): void => {
    if (!ok) throw error(OptionError, key, expected, options[key])
  }
  check(
    "layout",
    layout === undefined || layout === "batch-major" || layout === "time-major",
    `"batch-major" or "time-major"`,
  )
  check("dtype", dtype === undefined || isDType(dtype), A_DTYPE)
  check("directions", directions === undefined || directions === 1 || directions === 2, "1 or 2")
  check(
    "directions",
    directions !== 2 || layout === "time-major",
    '1 with the "batch-major" layout (2 needs "time-major")',
  )
  check("batchDim", batchDim === undefined || isName(batchDim), "a non-empty string")
}

function stateLeaf(width: number, options: RecurrentSpecOptions): LeafSpec {
  const b = options.batchDim ?? "batch"
  const dtype = options.dtype ?? "float32"
  return options.layout === "time-major"
    ? { shape: [options.directions ?? 1, b, width], dtype }
    : { shape: [b, width], dtype }
}

/**
 * Spec of an LSTM stack: one `[h, c]` pair per layer, first layer first.
 * A value builder: it throws (a `SpecError` for widths that are not a non-empty array of
 * positive integers, an `OptionError` naming a bad option) rather than returning an `Either`.
 *
 * @example
 * const spec = lstmSpec([128, 64], { layout: "time-major" }) // [[h, c], [h, c]] of [1, batch, H]
 * @category specs
 * @since 0.1.0
 */
export function lstmSpec(widths: readonly number[], options: RecurrentSpecOptions = {}): StateSpec {
  checkRecurrent("lstmSpec", widths, options)
  return widths.map((w) => [stateLeaf(w, options), stateLeaf(w, options)])
}

/**
 * Spec of a GRU stack: one `h` leaf per layer, first layer first.
 * A value builder: it throws (a `SpecError` for widths that are not a non-empty array of
 * positive integers, an `OptionError` naming a bad option) rather than returning an `Either`.
 *
 * @example
 * const spec = gruSpec([32, 16])
 * @category specs
 * @since 0.1.0
 */
export function gruSpec(widths: readonly number[], options: RecurrentSpecOptions = {}): StateSpec {
  checkRecurrent("gruSpec", widths, options)
  return widths.map((w) => stateLeaf(w, options))
}

/**
 * Spec of a plain (Elman) RNN stack: one `h` leaf per layer, first layer first.
 * A value builder: it throws (a `SpecError` for widths that are not a non-empty array of
 * positive integers, an `OptionError` naming a bad option) rather than returning an `Either`.
 *
 * @example
 * const spec = rnnSpec([32])
 * @category specs
 * @since 0.1.0
 */
export function rnnSpec(widths: readonly number[], options: RecurrentSpecOptions = {}): StateSpec {
  checkRecurrent("rnnSpec", widths, options)
  return widths.map((w) => stateLeaf(w, options))
}
