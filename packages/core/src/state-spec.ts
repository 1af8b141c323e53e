import * as E from "fp-ts/lib/Either.js"
import { SpecError } from "./errors.js"
import { type DType, HostTensor, dataMatchesDType, isDType } from "./host-tensor.js"
import {
  type PathSegment,
  type StateTree,
  type TreeDef,
  flatten,
  formatPath,
  isPlainRecord,
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

/**
 * Constructors for `Init`.
 *
 * @example
 * const c = { shape: ["batch", 64], dtype: "float32", init: init.constant(0.5) }
 * @category specs
 * @since 0.1.0
 */
export const init = {
  zeros: { kind: "zeros" } as Init,
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
    Object.prototype.hasOwnProperty.call(x, "shape") &&
    Array.isArray(x["shape"]) &&
    Object.prototype.hasOwnProperty.call(x, "dtype") &&
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

const isDim = (d: unknown): d is Dim =>
  (typeof d === "number" && Number.isSafeInteger(d) && d >= 0) ||
  (typeof d === "string" && d.length > 0)

/**
 * Validates a spec: dtypes, dims, exactly one batch axis per leaf, init values. `Left` is a
 * `SpecError` naming the leaf.
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
  const batchDim = options.batchDim ?? "batch"
  const dims = options.dims ?? {}
  const { leaves, paths, def } = flatten<unknown>(spec, isLeafSpec)
  if (leaves.length === 0) return E.left(new SpecError("", "at least one leaf", "no leaves"))
  const out: ResolvedLeaf[] = []
  const named = new Map<string, { size: number; path: string }>()
  for (let i = 0; i < leaves.length; i++) {
    const path = paths[i] as PathSegment[]
    const p = formatPath(path)
    const leaf = leaves[i]
    if (!isLeafSpec(leaf)) {
      return E.left(new SpecError(p, "a leaf spec { shape, dtype, init? }", typeof leaf))
    }
    if (!isDType(leaf.dtype)) return E.left(new SpecError(p, "a dtype", leaf.dtype))
    const bad = leaf.shape.find((d) => !isDim(d))
    if (bad !== undefined || leaf.shape.some((d) => !isDim(d))) {
      return E.left(new SpecError(p, "dims that are non-negative integers or names", leaf.shape))
    }
    const batchAxes = leaf.shape.flatMap((d, axis) => (d === batchDim ? [axis] : []))
    if (batchAxes.length !== 1) {
      return E.left(
        new SpecError(
          p,
          `exactly one "${batchDim}" dim`,
          `${batchAxes.length} in ${JSON.stringify(leaf.shape)}`,
        ),
      )
    }
    const batchAxis = batchAxes[0] as number
    const leafInit: Init = leaf.init ?? init.zeros
    const growing = new Map<number, string>()
    const shape: Dim[] = [...leaf.shape]
    leaf.shape.forEach((d, axis) => {
      if (typeof d === "string" && d !== batchDim) growing.set(axis, d)
    })
    switch (leafInit.kind) {
      case "zeros":
        break
      case "constant": {
        const v = leafInit.value
        const ok =
          leaf.dtype === "int64"
            ? typeof v === "bigint" || Number.isSafeInteger(v)
            : typeof v === "number" && !Number.isNaN(v)
        if (!ok) return E.left(new SpecError(p, `a ${leaf.dtype} constant`, v))
        break
      }
      case "tensor": {
        const t = leafInit.value
        if (!(t instanceof HostTensor) || !dataMatchesDType(t.data, leaf.dtype)) {
          return E.left(
            new SpecError(
              p,
              `an init HostTensor of dtype ${leaf.dtype}`,
              t instanceof HostTensor ? t.dtype : typeof t,
            ),
          )
        }
        if (t.dtype !== leaf.dtype && !(leaf.dtype === "bool" && t.dtype === "uint8")) {
          return E.left(new SpecError(p, `an init tensor of dtype ${leaf.dtype}`, t.dtype))
        }
        const rowDims = leaf.shape.filter((_, axis) => axis !== batchAxis)
        if (t.shape.length !== rowDims.length) {
          return E.left(
            new SpecError(
              p,
              `an init tensor of one row's shape ${JSON.stringify(rowDims)}`,
              t.shape,
            ),
          )
        }
        for (let axis = 0, r = 0; axis < leaf.shape.length; axis++) {
          if (axis === batchAxis) continue
          const d = leaf.shape[axis] as Dim
          const size = t.shape[r++] as number
          if (typeof d === "number" && d !== size) {
            return E.left(
              new SpecError(
                p,
                `an init tensor of one row's shape ${JSON.stringify(rowDims)}`,
                t.shape,
              ),
            )
          }
          if (typeof d === "string") {
            if (dims[d] !== undefined && dims[d] !== size) {
              return E.left(new SpecError(p, `an init tensor with ${d} = ${dims[d]}`, t.shape))
            }
            shape[axis] = size
          }
        }
        break
      }
      default:
        return E.left(
          new SpecError(p, "init zeros, constant or tensor", (leafInit as { kind: unknown }).kind),
        )
    }
    for (const [axis, name] of growing) {
      const given = dims[name]
      if (given !== undefined) {
        if (!Number.isSafeInteger(given) || given < 0) {
          return E.left(new SpecError(p, `a non-negative integer size for dim "${name}"`, given))
        }
        shape[axis] = given
      } else if (typeof shape[axis] === "string") {
        shape[axis] = 0
      }
      const size = shape[axis] as number
      const seen = named.get(name)
      if (seen && seen.size !== size) {
        return E.left(
          new SpecError(p, `dim "${name}" = ${seen.size} as at leaf ${seen.path}`, size),
        )
      }
      named.set(name, { size, path: p })
    }
    out.push({
      path,
      pathString: p,
      spec: leaf,
      dtype: leaf.dtype,
      batchAxis,
      shape,
      growing,
      init: leafInit,
    })
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
 * The concrete starting shape of a resolved leaf for `batchSize` rows.
 *
 * @category specs
 * @since 0.1.0
 */
export function leafShape(leaf: ResolvedLeaf, batchSize: number): number[] {
  return leaf.shape.map((d, axis) => (axis === leaf.batchAxis ? batchSize : (d as number)))
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

function stateLeaf(width: number, options: RecurrentSpecOptions): LeafSpec {
  const b = options.batchDim ?? "batch"
  const dtype = options.dtype ?? "float32"
  if (!Number.isSafeInteger(width) || width <= 0) {
    throw new SpecError("", "layer widths that are positive integers", width)
  }
  return options.layout === "time-major"
    ? { shape: [options.directions ?? 1, b, width], dtype }
    : { shape: [b, width], dtype }
}

/**
 * Spec of an LSTM stack: one `[h, c]` pair per layer, first layer first.
 *
 * @example
 * const spec = lstmSpec([128, 64], { layout: "time-major" }) // [[h, c], [h, c]] of [1, batch, H]
 * @category specs
 * @since 0.1.0
 */
export function lstmSpec(widths: readonly number[], options: RecurrentSpecOptions = {}): StateSpec {
  return widths.map((w) => [stateLeaf(w, options), stateLeaf(w, options)])
}

/**
 * Spec of a GRU stack: one `h` leaf per layer, first layer first.
 *
 * @example
 * const spec = gruSpec([32, 16])
 * @category specs
 * @since 0.1.0
 */
export function gruSpec(widths: readonly number[], options: RecurrentSpecOptions = {}): StateSpec {
  return widths.map((w) => stateLeaf(w, options))
}

/**
 * Spec of a plain (Elman) RNN stack: one `h` leaf per layer, first layer first.
 *
 * @example
 * const spec = rnnSpec([32])
 * @category specs
 * @since 0.1.0
 */
export function rnnSpec(widths: readonly number[], options: RecurrentSpecOptions = {}): StateSpec {
  return gruSpec(widths, options)
}
