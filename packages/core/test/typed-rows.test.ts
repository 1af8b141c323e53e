// reorderRowsTyped (rows moved within one array) against gatherRowsTyped into a new array, for
// every order of 4 rows (each entry any row: cycles, chains, forks, drops), on rows of a few
// elements and of many, the batch axis first, in the middle and last; and the copies it counts.
import { describe, expect, it } from "vitest"
import { RowIndexError, gatherRowsTyped, init, reorderRowsTyped, rowLayout } from "@statesaver/core"

/** Every array of `n` entries in [0, n): n ** n of them. */
function* everyOrder(n: number): Generator<number[]> {
  const rows = new Array<number>(n).fill(0)
  for (;;) {
    yield [...rows]
    let i = n - 1
    while (i >= 0 && ++(rows[i] as number) === n) rows[i--] = 0
    if (i < 0) return
  }
}

const layouts: { shape: number[]; axis: number }[] = [
  { shape: [4, 3], axis: 0 }, // rows of 3 elements, copied one by one
  { shape: [4, 2, 17], axis: 0 }, // rows of 34 elements, copied as spans
  { shape: [3, 4, 20], axis: 1 }, // rows in three chunks
  { shape: [5, 4], axis: 1 }, // chunks of one element
]

describe("reorderRowsTyped", () => {
  for (const { shape, axis } of layouts) {
    it(`equals a gather into a new array for all 256 orders of 4 rows, shape [${shape.join(", ")}] along axis ${axis}`, () => {
      const layout = rowLayout(shape, axis)
      const size = shape.reduce((a, b) => a * b, 1)
      const source = Float32Array.from({ length: size }, (_, i) => i + 1)
      let orders = 0
      for (const rows of everyOrder(4)) {
        const expected = new Float32Array(size)
        gatherRowsTyped(expected, layout, source, layout, rows, init.zeros, "float32")
        const data = source.slice()
        reorderRowsTyped(data, layout, rows)
        expect(Array.from(data), `rows [${rows.join(", ")}]`).toEqual(Array.from(expected))
        orders++
      }
      expect(orders).toBe(256)
    })
  }

  it("works on int64 and counts the row copies it makes", () => {
    const layout = rowLayout([4, 2], 0)
    const data = BigInt64Array.from({ length: 8 }, (_, i) => (1n << 60n) + BigInt(i))
    // Row 0 stays; 1 <- 0 and 3 <- 2 are moves; 2 <- 3 closes the cycle 2 -> 3 -> 2 (a copy
    // aside, a move, the copy back): 1 + 1 + 3 copies.
    const rows = [0, 0, 3, 2]
    expect(reorderRowsTyped(data, layout, rows)).toBe(4)
    const base = 1n << 60n
    expect(Array.from(data)).toEqual([0n, 1n, 0n, 1n, 6n, 7n, 4n, 5n].map((v) => base + v))
    expect(reorderRowsTyped(data, layout, [0, 1, 2, 3]), "nothing moves").toBe(0)
    expect(reorderRowsTyped(data, layout, [1, 2, 3, 0]), "a cycle of four").toBe(5)
  })

  it("refuses rows that are not one index in range per row with a RowIndexError, writing nothing", () => {
    const layout = rowLayout([4, 3], 0)
    const source = Float32Array.from({ length: 12 }, (_, i) => i + 1)
    const bad: [unknown[], RegExp][] = [
      [[1, 0, 3], /one entry per row \(4\).*3 entries/],
      [[1, 0, 3, 2, 0], /5 entries/],
      [[1, 0, 4, 2], /row indices in \[0, 4\).*4.*entry 2/],
      [[1, -1, 3, 2], /-1.*entry 1/],
      [[1, 0, 1.5, 2], /1\.5.*entry 2/],
      [[NaN, 0, 3, 2], /NaN.*entry 0/],
      // A bad entry after rows that would have moved: still nothing written.
      [[3, 2, 1, null], /null.*entry 3/],
      [[3, 2, 1, "0"], /entry 3/],
    ]
    for (const [rows, message] of bad) {
      const data = source.slice()
      let thrown: unknown
      try {
        reorderRowsTyped(data, layout, rows as number[])
      } catch (e) {
        thrown = e
      }
      expect(thrown, JSON.stringify(rows)).toBeInstanceOf(RowIndexError)
      expect((thrown as RowIndexError).message).toMatch(message)
      expect(Array.from(data), `data after ${String(rows)}`).toEqual(Array.from(source))
    }
  })
})
