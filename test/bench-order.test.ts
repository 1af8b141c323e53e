import { describe, expect, it } from "vitest"
import { balancedOrder, benchRuntimes } from "../bench/src/harness.js"

/** How often each ordered pair (a, b), a != b, has b run right after a, the order taken as a cycle. */
function follows(order: readonly number[], n: number): number[][] {
  const counts = Array.from({ length: n }, () => Array.from({ length: n }, () => 0))
  order.forEach((a, k) => {
    const b = order[(k + 1) % order.length] as number
    ;(counts[a] as number[])[b] = ((counts[a] as number[])[b] as number) + 1
  })
  return counts
}

describe("the benchmarks' balanced order of runs", () => {
  it.each([
    [2, 1],
    [2, 8],
    [3, 2],
    [3, 8],
    [5, 4],
  ])(
    "%i sides, %i runs each: every side runs that often and follows every other equally",
    (n, repeats) => {
      const order = balancedOrder(n, repeats)
      expect(order).toHaveLength(n * repeats)
      for (let s = 0; s < n; s++) expect(order.filter((x) => x === s)).toHaveLength(repeats)
      const counts = follows(order, n)
      const each = repeats / (n - 1)
      for (let a = 0; a < n; a++)
        for (let b = 0; b < n; b++) expect((counts[a] as number[])[b]).toBe(a === b ? 0 : each)
    },
  )

  it("falls back to taking turns when no balanced order exists (4 sides, or runs not a multiple)", () => {
    expect(balancedOrder(4, 3)).toEqual([0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3])
    expect(balancedOrder(3, 1)).toEqual([0, 1, 2])
    expect(balancedOrder(3, 3)).toEqual([0, 1, 2, 0, 1, 2, 0, 1, 2])
  })
})

describe("the runtimes a benchmark runs on (STATESAVER_BENCH_RUNTIMES)", () => {
  it("runs both when unset, else those listed, in their order", () => {
    expect(benchRuntimes(undefined)).toEqual(["node", "web"])
    expect(benchRuntimes("web")).toEqual(["web"])
    expect(benchRuntimes("web, node")).toEqual(["web", "node"])
  })

  it.each(["", "wasm", "node,node", "node,", "gpu,web"])(
    "refuses %j with an error naming the variable",
    (given) => {
      expect(() => benchRuntimes(given)).toThrow(
        /STATESAVER_BENCH_RUNTIMES must list distinct runtimes/,
      )
    },
  )
})
