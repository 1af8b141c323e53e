import * as E from "./internal/either.js"
import { StructureMismatchError } from "./errors.js"
import { error } from "./internal/fail.js"
import { hasOwn, isArray, isPlainRecord } from "./internal/predicates.js"

/**
 * A nested state: a leaf `L`, an array (tuple) of trees, or a plain record of trees.
 *
 * @example
 * const lstm: StateTree<HostTensor> = [[h0, c0], [h1, c1]]
 * @category trees
 * @since 0.1.0
 */
export type StateTree<L> = L | readonly StateTree<L>[] | { readonly [key: string]: StateTree<L> }

/**
 * One step of a leaf path: an array index or a record key.
 *
 * @category trees
 * @since 0.1.0
 */
export type PathSegment = number | string

/**
 * Decides what counts as a leaf. The default treats every value that is not an array or a plain
 * record as a leaf.
 *
 * @category trees
 * @since 0.1.0
 */
export type IsLeaf = (x: unknown) => boolean

/**
 * Default leaf test: anything that is neither an array nor a plain record.
 *
 * @category trees
 * @since 0.1.0
 */
export const isDefaultLeaf: IsLeaf = (x) => !Array.isArray(x) && !isPlainRecord(x)

const IDENT = /^[A-Za-z_$][A-Za-z0-9_$]*$/

/**
 * Prints a path the way every error message shows it: `[1].c`, `past_key_values["0.key"]`;
 * the root is `""`.
 *
 * @example
 * formatPath([1, "c"]) // "[1].c"
 * @category trees
 * @since 0.1.0
 */
export function formatPath(path: readonly PathSegment[]): string {
  let out = ""
  for (const seg of path) {
    out +=
      typeof seg === "number"
        ? `[${seg}]`
        : IDENT.test(seg)
          ? (out && ".") + seg
          : `[${JSON.stringify(seg)}]`
  }
  return out
}

/**
 * The shape of a tree without its leaves, used to rebuild a tree from a flat list of leaves.
 *
 * @category trees
 * @since 0.1.0
 */
export type TreeDef =
  | { readonly kind: "leaf" }
  | { readonly kind: "array"; readonly items: readonly TreeDef[] }
  | {
      readonly kind: "record"
      readonly keys: readonly string[]
      readonly items: readonly TreeDef[]
    }

/**
 * Leaves in a fixed order (array index order; record keys sorted), their paths and the tree def.
 *
 * @category trees
 * @since 0.1.0
 */
export interface Flattened<L> {
  readonly leaves: L[]
  readonly paths: PathSegment[][]
  readonly def: TreeDef
}

/** A record's own keys in the order `flatten` visits them. */
export const sortedKeys = (rec: object): string[] => Object.keys(rec).sort()

/**
 * Flattens a tree into its leaves (record keys in sorted order), their paths and a `TreeDef`.
 *
 * @example
 * const { leaves, paths } = flatten([[h0, c0], { h: h1 }]) // paths: [0][0], [0][1], [1].h
 * @category trees
 * @since 0.1.0
 */
export function flatten<L>(tree: StateTree<L>, isLeaf: IsLeaf = isDefaultLeaf): Flattened<L> {
  const leaves: L[] = []
  const paths: PathSegment[][] = []
  const walk = (node: unknown, path: PathSegment[]): TreeDef => {
    if (!isLeaf(node)) {
      if (isArray(node)) {
        return { kind: "array", items: node.map((child, i) => walk(child, [...path, i])) }
      }
      if (isPlainRecord(node)) {
        const keys = sortedKeys(node)
        return { kind: "record", keys, items: keys.map((k) => walk(node[k], [...path, k])) }
      }
    }
    leaves.push(node as L)
    paths.push(path)
    return { kind: "leaf" }
  }
  const def = walk(tree, [])
  return { leaves, paths, def }
}

/**
 * Writes `key` as an own data property. Only `__proto__` needs `defineProperty` (assigning it
 * would set the prototype); plain assignment keeps the common case fast.
 */
function defineKey(target: Record<string, unknown>, key: string, value: unknown): void {
  if (key === "__proto__") {
    // A computed key in a literal defines an own property, as a record key should be.
    Object.defineProperty(target, key, Object.getOwnPropertyDescriptor({ [key]: value }, key)!)
  } else {
    target[key] = value
  }
}

/**
 * Rebuilds a tree from a `TreeDef` and leaves in `flatten` order. Throws a
 * `StructureMismatchError` when the number of leaves differs from the tree's.
 *
 * @example
 * const copy = unflatten(def, leaves.map(clone))
 * @category trees
 * @since 0.1.0
 */
export function unflatten<L>(def: TreeDef, leaves: readonly L[]): StateTree<L> {
  let i = 0
  const build = (d: TreeDef): unknown => {
    switch (d.kind) {
      case "leaf":
        // Past the end only when too few leaves were given: the count below refuses that.
        return leaves[i++]
      case "array":
        return d.items.map(build)
      case "record": {
        const out: Record<string, unknown> = {}
        d.keys.forEach((k, j) => defineKey(out, k, build(d.items[j] as TreeDef)))
        return out
      }
    }
  }
  const tree = build(def)
  if (i !== leaves.length) {
    throw error(StructureMismatchError, "", `${i} leaves`, `${leaves.length} leaves`)
  }
  return tree as StateTree<L>
}

/**
 * Maps every leaf, keeping the structure; `f` receives the leaf's path.
 *
 * @example
 * const shapes = mapTree(spec, (leaf) => leaf.shape, isLeafSpec)
 * @category trees
 * @since 0.1.0
 */
export function mapTree<A, B>(
  tree: StateTree<A>,
  f: (leaf: A, path: readonly PathSegment[]) => B,
  isLeaf: IsLeaf = isDefaultLeaf,
): StateTree<B> {
  const { leaves, paths, def } = flatten<A>(tree, isLeaf)
  return unflatten(
    def,
    leaves.map((leaf, i) => f(leaf, paths[i] as PathSegment[])),
  )
}

const mismatch = (path: PathSegment[], expected: string, actual: string): StructureMismatchError =>
  error(StructureMismatchError, formatPath(path), expected, actual)

/** A node as error messages describe it: `null`, "a leaf", "an array of length 2", "a record with keys [...]". */
export const describeNode = (node: unknown, isLeaf: IsLeaf): string =>
  node === null || node === undefined
    ? String(node)
    : isLeaf(node)
      ? describeDef(LEAF)
      : isArray(node)
        ? describeDef({ kind: "array", items: node })
        : isPlainRecord(node)
          ? describeDef({ kind: "record", keys: sortedKeys(node) })
          : describeDef(LEAF)

const LEAF = { kind: "leaf" } as const

/** What a tree def (or a node of that kind) looks like, in errors. */
export const describeDef = (
  d:
    | { kind: "leaf" }
    | { kind: "array"; items: readonly unknown[] }
    | { kind: "record"; keys: readonly string[] },
): string =>
  d.kind === "leaf"
    ? "a leaf"
    : d.kind === "array"
      ? `an array of length ${d.items.length}`
      : `a record with keys ${JSON.stringify(d.keys)}`

/**
 * Checks that `actual` has the structure of `expected` (same arrays lengths, same record keys,
 * leaves in the same places). `Left` names the first differing path.
 *
 * @example
 * const ok = sameStructure(spec, next, isLeafSpec, (x) => backend.describe(x) !== undefined)
 * @category trees
 * @since 0.1.0
 */
export function sameStructure(
  expected: unknown,
  actual: unknown,
  isExpectedLeaf: IsLeaf = isDefaultLeaf,
  isActualLeaf: IsLeaf = isDefaultLeaf,
): E.Either<StructureMismatchError, void> {
  const check = (e: unknown, a: unknown, path: PathSegment[]): StructureMismatchError | null => {
    const eLeaf = isExpectedLeaf(e)
    const aLeaf = isActualLeaf(a)
    const differ = (): StructureMismatchError =>
      mismatch(path, describeNode(e, isExpectedLeaf), describeNode(a, isActualLeaf))
    if (eLeaf || aLeaf) return eLeaf && aLeaf ? null : differ()
    if (isArray(e)) {
      if (!isArray(a) || a.length !== e.length) return differ()
      for (let i = 0; i < e.length; i++) {
        const err = check(e[i], a[i], [...path, i])
        if (err) return err
      }
    } else if (isPlainRecord(e)) {
      if (!isPlainRecord(a)) return differ()
      const ek = sortedKeys(e)
      const missing = ek.find((k) => !hasOwn(a, k))
      if (missing !== undefined) return mismatch([...path, missing], "a value", "missing key")
      const extra = sortedKeys(a).find((k) => !hasOwn(e, k))
      if (extra !== undefined) return mismatch([...path, extra], "no such key", "an extra key")
      for (const k of ek) {
        const err = check(e[k], a[k], [...path, k])
        if (err) return err
      }
    }
    return null
  }
  const err = check(expected, actual, [])
  return err ? E.left(err) : E.right(undefined)
}

/**
 * Pairs the leaves of two trees of the same structure; `Left` names the first differing path.
 *
 * @example
 * const pairs = orThrow(zipTrees(before, after))
 * @category trees
 * @since 0.1.0
 */
export function zipTrees<A, B>(
  a: StateTree<A>,
  b: StateTree<B>,
  isLeafA: IsLeaf = isDefaultLeaf,
  isLeafB: IsLeaf = isDefaultLeaf,
): E.Either<StructureMismatchError, StateTree<readonly [A, B]>> {
  const same = sameStructure(a, b, isLeafA, isLeafB)
  if (E.isLeft(same)) return same
  const fa = flatten<A>(a, isLeafA)
  const fb = flatten<B>(b, isLeafB)
  return E.right(
    unflatten(
      fa.def,
      fa.leaves.map((x, i) => [x, fb.leaves[i] as B] as const),
    ),
  )
}
