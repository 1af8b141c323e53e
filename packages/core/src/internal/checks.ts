import * as E from "./either.js"
import type { LeafContext, StateBackend, TensorInfo } from "../backend.js"
import {
  AliasedLeafError,
  BackendError,
  BatchSizeMismatchError,
  DTypeMismatchError,
  RowIndexError,
  ShapeMismatchError,
  StructureMismatchError,
  type TensorCheckError,
  showValue,
} from "../errors.js"
import type { DType } from "../host-tensor.js"
import type { ResolvedLeaf, ResolvedSpec } from "../state-spec.js"
import { leafShape } from "./leaf-shape.js"
import {
  type PathSegment,
  type StateTree,
  type TreeDef,
  describeDef,
  describeNode,
  formatPath,
  isDefaultLeaf,
  sortedKeys,
} from "../state-tree.js"
import { error, fail } from "./fail.js"
import { isArray, isPlainRecord } from "./predicates.js"

/** Rows as users may give them: indices, or a boolean / 0-1 mask of the batch's length. */
export type RowsInput = readonly number[] | readonly boolean[] | Uint8Array | Int32Array

export const contextOf = (leaf: ResolvedLeaf): LeafContext => ({
  path: leaf.pathString,
  batchAxis: leaf.batchAxis,
  init: leaf.init,
  host: !!leaf.spec.host,
})

/** The one `Right(undefined)`: successful calls on the hot path allocate no result. */
export const RIGHT: E.Either<never, void> = E.right(undefined)

/** `0, 1, ..., n - 1`: every row of a batch of `n`. */
export const allRows = (n: number): number[] => Array.from({ length: n }, (_, r) => r)

/** Whether `r` is a row index of a batch of `batchSize` rows. */
const isRow = (r: unknown, batchSize: number): boolean =>
  typeof r === "number" && Number.isInteger(r) && r >= 0 && r < batchSize

/** The `RowIndexError` for entry `i` of `rows`; the entry is named only in a list of several. */
const badEntry = (
  expected: string,
  rows: ArrayLike<unknown>,
  i: number,
): E.Either<RowIndexError, never> =>
  fail(RowIndexError, "", expected, rows[i], rows.length > 1 ? `entry ${i}` : undefined)

/** Sorted, distinct row indices from indices or a mask; `Left` on anything out of range. */
export function normalizeRows(
  rows: RowsInput,
  batchSize: number,
): E.Either<RowIndexError, number[]> {
  if (!(Array.isArray(rows) || rows instanceof Uint8Array || rows instanceof Int32Array)) {
    return fail(
      RowIndexError,
      "",
      "row indices (an array or Int32Array) or a mask (boolean[] or Uint8Array)",
      rows,
    )
  }
  const isMask =
    rows instanceof Uint8Array ||
    (Array.isArray(rows) && rows.length > 0 && typeof rows[0] === "boolean")
  if (isMask) {
    if (rows.length !== batchSize) {
      return fail(RowIndexError, "", `a mask of length ${batchSize}`, rows, `length ${rows.length}`)
    }
    const out: number[] = []
    for (let i = 0; i < rows.length; i++) {
      const v: unknown = rows[i]
      if (typeof v !== "boolean" && v !== 0 && v !== 1) {
        return fail(RowIndexError, "", "mask entries true/false or 0/1", v, `entry ${i}`)
      }
      if (v === true || v === 1) out.push(i)
    }
    return E.right(out)
  }
  let ascending = true
  for (let i = 0; i < rows.length; i++) {
    const r: unknown = rows[i]
    if (!isRow(r, batchSize)) return badEntry(`row indices in [0, ${batchSize})`, rows, i)
    if (i > 0 && (r as number) <= (rows[i - 1] as number)) ascending = false
  }
  if (ascending)
    return E.right(Array.isArray(rows) ? (rows as number[]) : Array.from(rows as Int32Array))
  return E.right([...new Set(rows as readonly number[])].sort((a, b) => a - b))
}

/** Checks a select/gather list: integers in range or null, at least one entry. */
export function checkSelection(
  rows: readonly (number | null)[],
  batchSize: number,
): E.Either<RowIndexError, readonly (number | null)[]> {
  if (!Array.isArray(rows)) {
    return fail(RowIndexError, "", "an array of row indices or null", rows)
  }
  if (rows.length === 0) return fail(RowIndexError, "", "at least one row", rows)
  for (let i = 0; i < rows.length; i++) {
    const r: unknown = rows[i]
    if (r !== null && !isRow(r, batchSize)) {
      return badEntry(`row indices in [0, ${batchSize}) or null`, rows, i)
    }
  }
  return E.right(rows)
}

/**
 * Validates a tree of backend tensors against a spec at a given batch size. Returns the leaves
 * in spec order with their infos, or the first error naming its path.
 */
export function checkTensors<T, In = T>(
  resolved: ResolvedSpec,
  backend: StateBackend<T, In>,
  tree: StateTree<T>,
  batchSize: number,
): E.Either<TensorCheckError, { leaves: T[]; infos: TensorInfo[] }> {
  const leaves = leavesAlong<T>(resolved.def, tree)
  if (!Array.isArray(leaves)) {
    return fail(StructureMismatchError, formatPath(leaves.path), leaves.expected, leaves.actual)
  }
  return checkLeaves(resolved, backend, leaves, batchSize)
}

/**
 * Validates leaves given in spec order (the fast path of integrations that know the order):
 * count, liveness, aliasing, dtype, shape and batch size, naming the leaf of the first error.
 */
export function checkLeaves<T, In = T>(
  resolved: ResolvedSpec,
  backend: StateBackend<T, In>,
  leaves: readonly T[],
  batchSize: number,
): E.Either<TensorCheckError, { leaves: T[]; infos: TensorInfo[] }> {
  if (!Array.isArray(leaves) || leaves.length !== resolved.leaves.length) {
    return fail(
      StructureMismatchError,
      "",
      `${resolved.leaves.length} leaves in spec order`,
      isArray(leaves) ? `${leaves.length} leaves` : showValue(leaves),
    )
  }
  const infos: TensorInfo[] = []
  // Only specs with named dims besides the batch need to compare sizes across leaves.
  const named = resolved.hasNamedDims ? new Map<string, { size: number; path: string }>() : NO_NAMES

  for (let i = 0; i < resolved.leaves.length; i++) {
    const spec = resolved.leaves[i] as ResolvedLeaf
    const p = spec.pathString
    const x = leaves[i] as T
    let info: TensorInfo | undefined
    try {
      info = backend.describe(x)
    } catch (e) {
      return E.left(backendError(backend, "describe", p, e))
    }
    if (!info) {
      return fail(
        StructureMismatchError,
        p,
        `a live ${backend.name} tensor`,
        showValue(x),
        typeof x === "object" && x ? "not live on this backend" : undefined,
      )
    }
    const first = leaves.indexOf(x)
    if (first < i)
      return E.left(
        new AliasedLeafError({
          path: p,
          otherPath: (resolved.leaves[first] as ResolvedLeaf).pathString,
        }),
      )
    const err = checkInfo(spec, info, batchSize, named)
    if (err) return E.left(err)
    infos.push(info)
  }
  return E.right({ leaves: leaves as T[], infos })
}

/** Where a tree first departs from a def: built only on failure, its path filled in going up. */
interface Departure {
  readonly path: PathSegment[]
  readonly expected: string
  readonly actual: string
}

/**
 * The leaves of `tree` in the order of `def` when `tree` has exactly that structure, else where
 * it first departs (as `sameStructure` would name it: at a record, a missing key, then an extra
 * key, then its values in key order). One pass and no paths built on success: the hot path of
 * every `save` and `scatter`.
 */
export function leavesAlong<T>(def: TreeDef, tree: unknown): T[] | Departure {
  const out: T[] = []
  const has = Object.prototype.hasOwnProperty
  const walk = (d: TreeDef, node: unknown): Departure | undefined => {
    let bad: Departure | undefined
    switch (d.kind) {
      case "leaf":
        if (!isDefaultLeaf(node)) break
        out.push(node as T)
        return undefined
      case "array":
        if (!Array.isArray(node) || node.length !== d.items.length) break
        for (let i = 0; i < d.items.length && !bad; i++) {
          bad = walk(d.items[i] as TreeDef, node[i])
          bad?.path.unshift(i)
        }
        return bad
      case "record": {
        if (!isPlainRecord(node)) break
        const { keys } = d
        let own = 0
        for (const k in node) if (has.call(node, k)) own++
        let i = 0
        for (; i < keys.length && !bad && has.call(node, keys[i] as string); i++) {
          const k = keys[i] as string
          bad = walk(d.items[i] as TreeDef, node[k])
          bad?.path.unshift(k)
        }
        if (own === keys.length && i === keys.length && !bad) return undefined
        // This record departs before its values do: a missing key, else an extra key.
        const missing = keys.find((k) => !has.call(node, k))
        if (missing !== undefined)
          return { path: [missing], expected: "a value", actual: "missing key" }
        const extra = sortedKeys(node).find((k) => !keys.includes(k))
        if (extra !== undefined)
          return { path: [extra], expected: "no such key", actual: "an extra key" }
        return bad
      }
    }
    return { path: [], expected: describeDef(d), actual: describeNode(node, isDefaultLeaf) }
  }
  const bad = walk(def, tree)
  return bad ?? out
}

/** Shared by specs without named dims: `checkInfo` never writes to it for them. */
const NO_NAMES = new Map<string, { size: number; path: string }>()

/** Checks one leaf's dtype and shape; `named` collects named-dim sizes to keep them consistent. */
export function checkInfo(
  spec: ResolvedLeaf,
  info: { readonly shape: readonly number[]; readonly dtype: DType },
  batchSize: number,
  named: Map<string, { size: number; path: string }>,
): DTypeMismatchError | ShapeMismatchError | BatchSizeMismatchError | null {
  const p = spec.pathString
  const { shape, dtype } = info
  const axis0 = spec.batchAxis
  if (dtype !== spec.dtype) return error(DTypeMismatchError, p, spec.dtype, dtype)
  let why: string | undefined
  if (shape.length !== spec.shape.length) {
    why = `rank ${spec.shape.length}, got ${shape.length}`
  } else if (shape[axis0] !== batchSize) {
    return new BatchSizeMismatchError({
      path: p,
      expected: batchSize,
      actual: shape[axis0],
      axis: axis0,
    })
  }
  for (let axis = 0; axis < shape.length && !why; axis++) {
    if (axis === axis0) continue
    const name = spec.growing.get(axis)
    const size = shape[axis] as number
    if (!name) {
      if (size !== spec.shape[axis]) why = `axis ${axis} must be ${String(spec.shape[axis])}`
      continue
    }
    const prior = named.get(name)
    if (prior && prior.size !== size) {
      why = `dim "${name}" is ${prior.size} at leaf ${prior.path}, ${size} here`
    } else named.set(name, { size, path: p })
  }
  return why ? error(ShapeMismatchError, p, spec.spec.shape, shape, why) : null
}

/** The `BackendError` for a throw of a backend primitive on a leaf. */
export const backendError = (
  backend: { readonly name: string },
  operation: string,
  path: string,
  cause: unknown,
): BackendError => new BackendError({ backend: backend.name, operation, path, cause })

/** Runs a backend primitive, turning a throw into a `BackendError` naming the leaf. */
export function attempt<A>(
  backend: { readonly name: string },
  operation: string,
  path: string,
  f: () => A,
): E.Either<BackendError, A> {
  try {
    return E.right(f())
  } catch (e) {
    return E.left(backendError(backend, operation, path, e))
  }
}

/** Disposes every tensor, ignoring throws: used to unwind a half-built batch. */
export function disposeQuietly<T, In = T>(
  backend: StateBackend<T, In>,
  tensors: readonly T[],
): void {
  for (const t of tensors) {
    try {
      backend.dispose(t)
    } catch {
      /* unwinding after another failure: the first error is the one reported */
    }
  }
}

/**
 * Builds one new tensor per leaf with `make`; on a throw, frees the tensors already built (but
 * those `given(t, i)` says are not core's) and returns the `BackendError` naming the leaf, so a
 * failed build leaves nothing behind.
 */
export function buildPerLeaf<T, In = T>(
  backend: StateBackend<T, In>,
  operation: string,
  contexts: readonly LeafContext[],
  make: (i: number, ctx: LeafContext) => T,
  given?: (t: T, i: number) => boolean,
): E.Either<BackendError, T[]> {
  const out: T[] = []
  for (let i = 0; i < contexts.length; i++) {
    const ctx = contexts[i] as LeafContext
    const t = attempt(backend, operation, ctx.path, () => make(i, ctx))
    if (E.isLeft(t)) {
      disposeQuietly(backend, given ? out.filter((x, j) => !given(x, j)) : out)
      return t
    }
    out.push(t.right)
  }
  return E.right(out)
}

/** Runs an in-place primitive on every leaf, stopping at the first throw. */
export function eachLeaf(
  backend: { readonly name: string },
  operation: string,
  contexts: readonly LeafContext[],
  run: (i: number, ctx: LeafContext) => void,
): E.Either<BackendError, void> {
  for (let i = 0; i < contexts.length; i++) {
    const ctx = contexts[i] as LeafContext
    const done = attempt(backend, operation, ctx.path, () => run(i, ctx))
    if (E.isLeft(done)) return done
  }
  return RIGHT
}

/** Allocates every leaf of a resolved spec at `batchSize` rows, all at init. */
export function allocateLeaves<T, In = T>(
  backend: StateBackend<T, In>,
  leaves: readonly ResolvedLeaf[],
  batchSize: number,
): E.Either<BackendError, T[]> {
  return buildPerLeaf(backend, "allocate", leaves.map(contextOf), (i, ctx) => {
    const leaf = leaves[i] as ResolvedLeaf
    return backend.allocate(leafShape(leaf, batchSize), leaf.dtype, ctx)
  })
}
