import fc from "fast-check"
import { describe, expect, it } from "vitest"
import {
  type StateTree,
  StructureMismatchError,
  flatten,
  formatPath,
  mapTree,
  orThrow,
  sameStructure,
  unflatten,
  zipTrees,
} from "@statesaver/core"

fc.configureGlobal({ seed: 20261127, numRuns: 300 })

/** Leaves are boxed numbers so that arrays and records are always containers. */
class Leaf {
  constructor(readonly v: number) {}
}

const keyArb = fc.oneof(
  fc.constantFrom("__proto__", "constructor", "prototype", "0.key", "h", "c", "", "a b"),
  fc.string({ maxLength: 6 }),
)

const treeArb: fc.Arbitrary<StateTree<Leaf>> = fc.letrec<{ tree: StateTree<Leaf> }>((tie) => ({
  tree: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    fc.integer().map((v) => new Leaf(v)),
    fc.array(tie("tree"), { maxLength: 4 }),
    fc
      .uniqueArray(fc.tuple(keyArb, tie("tree")), { maxLength: 4, selector: ([k]) => k })
      .map((entries) => {
        const rec: Record<string, StateTree<Leaf>> = {}
        for (const [k, v] of entries) {
          Object.defineProperty(rec, k, {
            value: v,
            enumerable: true,
            writable: true,
            configurable: true,
          })
        }
        return rec
      }),
  ),
})).tree

describe("state trees", () => {
  it("unflatten(flatten(t)) rebuilds a tree of the same structure and leaves", () => {
    fc.assert(
      fc.property(treeArb, (tree) => {
        const { leaves, def } = flatten(tree)
        const back = unflatten(def, leaves)
        expect(sameStructure(tree, back)._tag).toBe("Right")
        expect(flatten(back).leaves).toEqual(leaves)
      }),
    )
  })

  it("mapTree keeps the structure and passes each leaf's path", () => {
    fc.assert(
      fc.property(treeArb, (tree) => {
        const mapped = mapTree(tree, (leaf: Leaf, path) => new Leaf(leaf.v + path.length))
        expect(sameStructure(tree, mapped)._tag).toBe("Right")
        const a = flatten(tree)
        const b = flatten(mapped)
        b.leaves.forEach((leaf, i) =>
          expect(leaf.v).toBe((a.leaves[i] as Leaf).v + (a.paths[i] as unknown[]).length),
        )
      }),
    )
  })

  it("keys such as __proto__ and constructor stay data and never touch prototypes", () => {
    const tree = JSON.parse('{"__proto__": {"polluted": 1}, "constructor": [2]}') as Record<
      string,
      unknown
    >
    const withLeaves = mapTree(
      tree as StateTree<number>,
      (x) => new Leaf(x as number),
      (x) => typeof x === "number",
    )
    const { paths, def } = flatten(withLeaves)
    expect(paths.map((p) => formatPath(p))).toEqual(["__proto__.polluted", "constructor[0]"])
    const rebuilt = unflatten(def, [new Leaf(1), new Leaf(2)]) as Record<string, unknown>
    expect(Object.getPrototypeOf(rebuilt)).toBe(Object.prototype)
    expect(Object.keys(rebuilt).sort()).toEqual(["__proto__", "constructor"])
    expect(({} as Record<string, unknown>)["polluted"]).toBeUndefined()
    expect(Object.prototype.hasOwnProperty.call(rebuilt, "__proto__")).toBe(true)
  })

  it("sameStructure names the first differing path", () => {
    const a = {
      layers: [
        [new Leaf(1), new Leaf(2)],
        [new Leaf(3), new Leaf(4)],
      ],
    }
    const b = { layers: [[new Leaf(1), new Leaf(2)], [new Leaf(3)]] }
    const r = sameStructure(a, b)
    expect(r._tag).toBe("Left")
    if (r._tag === "Left") {
      expect(r.left).toBeInstanceOf(StructureMismatchError)
      expect(r.left.path).toBe("layers[1]")
      expect(r.left.expected).toBe("an array of length 2")
      expect(r.left.actual).toBe("an array of length 1")
    }
    const missing = sameStructure({ h: new Leaf(1), c: new Leaf(2) }, { h: new Leaf(1) })
    expect(missing._tag === "Left" && missing.left.path).toBe("c")
    const extra = sameStructure({ h: new Leaf(1) }, { h: new Leaf(1), x: new Leaf(0) })
    expect(extra._tag === "Left" && extra.left.path).toBe("x")
    const leafVsArray = sameStructure([new Leaf(1)], [[new Leaf(1)]])
    expect(leafVsArray._tag === "Left" && leafVsArray.left.path).toBe("[0]")
  })

  it("sameStructure of a tree with any single leaf replaced by an array fails at that leaf's path", () => {
    fc.assert(
      fc.property(treeArb, fc.nat(), (tree, pick) => {
        const { leaves, paths, def } = flatten(tree)
        fc.pre(leaves.length > 0)
        const i = pick % leaves.length
        const changed = unflatten(
          def,
          leaves.map((l, j) => (j === i ? ([l] as unknown as Leaf) : l)),
        )
        const r = sameStructure(tree, changed)
        expect(r._tag).toBe("Left")
        if (r._tag === "Left") expect(r.left.path).toBe(formatPath(paths[i] ?? []))
      }),
    )
  })

  it("zipTrees pairs leaves by position", () => {
    const zipped = orThrow(zipTrees({ h: new Leaf(1), c: [new Leaf(2)] }, { h: "x", c: ["y"] }))
    expect(zipped).toEqual({ h: [new Leaf(1), "x"], c: [[new Leaf(2), "y"]] })
    expect(zipTrees([new Leaf(1)], [])._tag).toBe("Left")
  })

  it("formatPath prints identifiers with dots and other keys quoted", () => {
    expect(formatPath([1, "c"])).toBe("[1].c")
    expect(formatPath(["past_key_values", "0.key"])).toBe('past_key_values["0.key"]')
    expect(formatPath([])).toBe("")
  })
})
