import * as tf from "@tensorflow/tfjs"
import {
  BatchSizeMismatchError,
  DTypeMismatchError,
  OptionError,
  type ResolvedLeaf,
  type ResolvedSpec,
  RowIndexError,
  ShapeMismatchError,
  SpecError,
  StructureMismatchError,
  type TreeDef,
  isLeafSpec,
  sameStructure,
} from "@statesaver/core"
import * as E from "./either.js"

/** The error union of a result type: `LeftOf<Either<A | B, X>>` is `A | B`. */
export type LeftOf<R> = R extends { readonly _tag: "Left"; readonly left: infer L } ? L : never

/** The errors `checkStateTree` can return. */
export type StateTreeError =
  StructureMismatchError | DTypeMismatchError | ShapeMismatchError | BatchSizeMismatchError

export const isPlainRecord = (x: unknown): x is Record<string, unknown> => {
  if (typeof x !== "object" || x === null || Array.isArray(x)) return false
  const proto: unknown = Object.getPrototypeOf(x)
  return proto === Object.prototype || proto === null
}

const isLeafNode = (x: unknown): boolean => !Array.isArray(x) && !isPlainRecord(x)

export const isLiveTensor = (x: unknown): x is tf.Tensor => x instanceof tf.Tensor && !x.isDisposed

/** `Left(StructureMismatchError)` unless `x` is a live `tf.Tensor`; `path` names the argument. */
export function checkTensor(x: unknown, path: string): E.Either<StructureMismatchError, tf.Tensor> {
  if (isLiveTensor(x)) return E.right(x)
  return E.left(
    new StructureMismatchError({
      path,
      expected: "a live tf.Tensor",
      actual: x,
      ...(x instanceof tf.Tensor ? { detail: "it was disposed" } : {}),
    }),
  )
}

/** `Left(OptionError)` unless `options` is absent or a plain object. */
export function checkOptionsObject(options: unknown): E.Either<OptionError, void> {
  if (options === undefined || isPlainRecord(options)) return E.right(undefined)
  return E.left(
    new OptionError({ path: "options", expected: "an options object or nothing", actual: options }),
  )
}

/** `Left(OptionError)` unless `value` is absent or a boolean. */
export function checkBooleanOption(value: unknown, path: string): E.Either<OptionError, void> {
  if (value === undefined || typeof value === "boolean") return E.right(undefined)
  return E.left(new OptionError({ path, expected: "a boolean or nothing", actual: value }))
}

/** True for what `resolveSpec` returns (`saver.spec`, `store.spec`). */
export function isResolvedSpec(x: unknown): x is ResolvedSpec {
  if (typeof x !== "object" || x === null) return false
  const r = x as Partial<Record<keyof ResolvedSpec, unknown>>
  return (
    Array.isArray(r.leaves) &&
    r.leaves.length > 0 &&
    typeof r.def === "object" &&
    r.def !== null &&
    typeof r.batchDim === "string"
  )
}

export function checkResolvedSpec(spec: unknown): E.Either<SpecError, ResolvedSpec> {
  if (isResolvedSpec(spec)) return E.right(spec)
  return E.left(
    new SpecError({
      expected: "a resolved spec (saver.spec, store.spec or resolveSpec(spec))",
      actual: spec,
    }),
  )
}

/**
 * The leaves of `tree` in the order of `def` when `tree` has exactly that structure, else
 * `undefined`. One pass, no paths built.
 */
export function leavesAlong<T>(def: TreeDef, tree: unknown): T[] | undefined {
  const out: T[] = []
  const walk = (d: TreeDef, node: unknown): boolean => {
    switch (d.kind) {
      case "leaf":
        if (!isLeafNode(node)) return false
        out.push(node as T)
        return true
      case "array": {
        if (!Array.isArray(node) || node.length !== d.items.length) return false
        for (let i = 0; i < d.items.length; i++)
          if (!walk(d.items[i] as TreeDef, node[i])) return false
        return true
      }
      case "record": {
        if (!isPlainRecord(node)) return false
        let own = 0
        for (const k in node) if (Object.prototype.hasOwnProperty.call(node, k)) own++
        if (own !== d.keys.length) return false
        for (let i = 0; i < d.keys.length; i++) {
          const k = d.keys[i] as string
          if (!Object.prototype.hasOwnProperty.call(node, k)) return false
          if (!walk(d.items[i] as TreeDef, node[k])) return false
        }
        return true
      }
    }
  }
  return walk(def, tree) ? out : undefined
}

/** The leaves of `tree` in spec order, or the first structural difference with its path. */
export function leavesOfTree<T>(
  spec: unknown,
  def: TreeDef,
  tree: unknown,
): E.Either<StructureMismatchError, T[]> {
  const leaves = leavesAlong<T>(def, tree)
  if (leaves !== undefined) return E.right(leaves)
  const structure = sameStructure(spec, tree, isLeafSpec, isLeafNode)
  if (structure._tag === "Left") return structure
  return E.left(
    new StructureMismatchError({ expected: "a tree of the spec's structure", actual: tree }),
  )
}

/**
 * Checks a tree of tf tensors against a resolved spec: structure, live tensors, dtype, rank and
 * fixed dims, one batch size for every leaf (`batchSize` when given), named dims consistent.
 * Returns the tensors in spec order and the batch size.
 */
export function checkStateTree(
  spec: ResolvedSpec,
  state: unknown,
  batchSize?: { readonly size: number; readonly path: string },
): E.Either<StateTreeError, { tensors: tf.Tensor[]; batchSize: number }> {
  const leaves = leavesOfTree<unknown>(spec.spec, spec.def, state)
  if (leaves._tag === "Left") return leaves
  const tensors: tf.Tensor[] = []
  const named = new Map<string, { size: number; path: string }>()
  let rows = batchSize?.size ?? -1
  let rowsFrom = batchSize?.path ?? ""
  for (let i = 0; i < spec.leaves.length; i++) {
    const leaf = spec.leaves[i] as ResolvedLeaf
    const p = leaf.pathString
    const t = checkTensor(leaves.right[i], p)
    if (t._tag === "Left") return t
    const x = t.right
    if (x.dtype !== leaf.dtype)
      return E.left(new DTypeMismatchError({ path: p, expected: leaf.dtype, actual: x.dtype }))
    if (x.rank !== leaf.shape.length) {
      return E.left(
        new ShapeMismatchError({
          path: p,
          expected: leaf.spec.shape,
          actual: x.shape,
          detail: `rank ${leaf.shape.length}, got ${x.rank}`,
        }),
      )
    }
    const n = x.shape[leaf.batchAxis] as number
    if (rows === -1) {
      rows = n
      rowsFrom = p
    } else if (n !== rows) {
      return E.left(
        new BatchSizeMismatchError({
          path: p,
          expected: rows,
          actual: n,
          axis: leaf.batchAxis,
          ...(rowsFrom === "" ? {} : { detail: `the batch size of ${rowsFrom}` }),
        }),
      )
    }
    for (let axis = 0; axis < x.rank; axis++) {
      if (axis === leaf.batchAxis) continue
      const size = x.shape[axis] as number
      const name = leaf.growing.get(axis)
      if (name === undefined) {
        if (size !== leaf.shape[axis]) {
          return E.left(
            new ShapeMismatchError({
              path: p,
              expected: leaf.spec.shape,
              actual: x.shape,
              detail: `axis ${axis} must be ${String(leaf.shape[axis])}`,
            }),
          )
        }
        continue
      }
      const prior = named.get(name)
      if (prior !== undefined && prior.size !== size) {
        return E.left(
          new ShapeMismatchError({
            path: p,
            expected: leaf.spec.shape,
            actual: x.shape,
            detail: `dim "${name}" is ${prior.size} at leaf ${prior.path}, ${size} here`,
          }),
        )
      }
      named.set(name, { size, path: p })
    }
    tensors.push(x)
  }
  return E.right({ tensors, batchSize: rows })
}

/** A per-row mask as `resetWhere` and the trainer take it (see `RowMask`). */
export type MaskInput = tf.Tensor | readonly boolean[] | readonly number[] | Uint8Array

const MASK_KINDS = "a row mask (a [batch] tf.Tensor, boolean[], 0/1 number[] or Uint8Array)"
const MASK_DTYPES = ["bool", "int32", "float32"]

/** Checks a row mask of `batchSize` entries; array entries must be booleans or 0/1. */
export function checkMask(mask: unknown, batchSize: number): E.Either<RowIndexError, MaskInput> {
  if (mask instanceof tf.Tensor) {
    if (mask.isDisposed)
      return E.left(
        new RowIndexError({ expected: MASK_KINDS, actual: mask, detail: "it was disposed" }),
      )
    if (mask.rank !== 1 || mask.size !== batchSize) {
      return E.left(
        new RowIndexError({
          expected: `a mask of shape [${batchSize}]`,
          actual: mask.shape,
          detail: "the mask tensor's shape",
        }),
      )
    }
    if (!MASK_DTYPES.includes(mask.dtype)) {
      return E.left(
        new RowIndexError({
          expected: "a mask tensor of dtype bool, int32 or float32",
          actual: mask.dtype,
        }),
      )
    }
    return E.right(mask)
  }
  if (!(Array.isArray(mask) || mask instanceof Uint8Array))
    return E.left(new RowIndexError({ expected: MASK_KINDS, actual: mask }))
  if (mask.length !== batchSize) {
    return E.left(
      new RowIndexError({
        expected: `a mask of length ${batchSize}`,
        actual: mask,
        detail: `length ${mask.length}`,
      }),
    )
  }
  for (let i = 0; i < mask.length; i++) {
    const v: unknown = mask[i]
    if (typeof v !== "boolean" && v !== 0 && v !== 1) {
      return E.left(
        new RowIndexError({
          expected: "mask entries true/false or 0/1",
          actual: v,
          detail: `entry ${i}`,
        }),
      )
    }
  }
  return E.right(mask as MaskInput)
}

/** Checks a selection: at least one entry, each an integer row in `[0, batchSize)` or null. */
export function checkSelection(
  rows: unknown,
  batchSize: number,
): E.Either<RowIndexError, readonly (number | null)[]> {
  if (!Array.isArray(rows))
    return E.left(new RowIndexError({ expected: "an array of row indices or null", actual: rows }))
  if (rows.length === 0)
    return E.left(new RowIndexError({ expected: "at least one row", actual: rows }))
  for (let i = 0; i < rows.length; i++) {
    const r: unknown = rows[i]
    if (r === null) continue
    if (typeof r !== "number" || !Number.isInteger(r) || r < 0 || r >= batchSize) {
      return E.left(
        new RowIndexError({
          expected: `row indices in [0, ${batchSize}) or null`,
          actual: r,
          detail: `entry ${i}`,
        }),
      )
    }
  }
  return E.right(rows as readonly (number | null)[])
}

/** A leaf's shape with its batch axis marked, to compare the layouts of two specs. */
const shapeKey = (leaf: ResolvedLeaf): string =>
  JSON.stringify(leaf.spec.shape.map((d, axis) => (axis === leaf.batchAxis ? null : d)))

/**
 * `Left(SpecError)` naming the first leaf where `actual` (a saver's or a store's spec) differs
 * from `expected` (a layer's) in structure, dtype or shape.
 */
export function checkSpecAgrees(
  expected: ResolvedSpec,
  actual: ResolvedSpec,
  whose: string,
): E.Either<SpecError, void> {
  if (expected === actual) return E.right(undefined)
  const detail = `the ${whose}'s spec must be the layer's`
  const structure = sameStructure(expected.spec, actual.spec, isLeafSpec, isLeafSpec)
  if (structure._tag === "Left") {
    const e = structure.left
    return E.left(new SpecError({ path: e.path, expected: e.expected, actual: e.actual, detail }))
  }
  for (let i = 0; i < expected.leaves.length; i++) {
    const want = expected.leaves[i] as ResolvedLeaf
    const got = actual.leaves[i] as ResolvedLeaf
    if (want.dtype !== got.dtype || shapeKey(want) !== shapeKey(got)) {
      return E.left(
        new SpecError({
          path: want.pathString,
          expected: { shape: want.spec.shape, dtype: want.dtype },
          actual: { shape: got.spec.shape, dtype: got.dtype },
          detail,
        }),
      )
    }
  }
  return E.right(undefined)
}
