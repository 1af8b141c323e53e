// writeBlockTyped against an index-by-index reference, for the batch axis before and after the
// written axis, random shapes and offsets.
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { writeBlockTyped } from "@statesaver/core"

/** The flat index of `idx` in a row-major array of `shape`. */
const flat = (shape: readonly number[], idx: readonly number[]) =>
  idx.reduce((acc, v, i) => acc * (shape[i] as number) + v, 0)

/** Every index of `shape`. */
function* indices(shape: readonly number[]): Generator<number[]> {
  if (shape.some((d) => d === 0)) return
  const idx = shape.map(() => 0)
  for (;;) {
    yield [...idx]
    let i = shape.length - 1
    while (i >= 0 && ++(idx[i] as number) === shape[i]) idx[i--] = 0
    if (i < 0) return
  }
}

describe("writeBlockTyped", () => {
  it("a KV cache [2, 2, 4, 3] takes a step [2, 2, 1, 3] at lengths [1, 3]", () => {
    const dst = new Float32Array(2 * 2 * 4 * 3).fill(-1)
    const src = Float32Array.from({ length: 2 * 2 * 3 }, (_, i) => i)
    writeBlockTyped(dst, [2, 2, 4, 3], 2, 0, [1, 3], src, [2, 2, 1, 3])
    // Row 0 head 1 position 1 holds src row 0 head 1.
    expect(
      Array.from(
        dst.subarray(flat([2, 2, 4, 3], [0, 1, 1, 0]), flat([2, 2, 4, 3], [0, 1, 1, 0]) + 3),
      ),
    ).toEqual([3, 4, 5])
    // Row 1 head 0 position 3 holds src row 1 head 0.
    expect(
      Array.from(
        dst.subarray(flat([2, 2, 4, 3], [1, 0, 3, 0]), flat([2, 2, 4, 3], [1, 0, 3, 0]) + 3),
      ),
    ).toEqual([6, 7, 8])
    expect(dst.filter((v) => v !== -1).length).toBe(12)
  })

  it("equals an index-by-index reference for any layout, block and offsets", () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 1, max: 4 }), { minLength: 2, maxLength: 4 }),
        fc.nat(),
        fc.nat(),
        fc.integer({ min: 0, max: 3 }),
        fc.array(fc.nat(), { minLength: 4, maxLength: 4 }),
        (shape, b, a, kRaw, rawOffsets) => {
          const batchAxis = b % shape.length
          let axis = a % shape.length
          if (axis === batchAxis) axis = (axis + 1) % shape.length
          const size = shape[axis] as number
          const k = kRaw % (size + 1)
          const rows = shape[batchAxis] as number
          const offsets = Array.from(
            { length: rows },
            (_, r) => (rawOffsets[r % 4] as number) % (size - k + 1),
          )
          const srcShape = shape.map((d, i) => (i === axis ? k : d))
          const n = shape.reduce((x, y) => x * y, 1)
          const m = srcShape.reduce((x, y) => x * y, 1)
          const dst = Float64Array.from({ length: n }, (_, i) => -1 - i)
          const src = Float64Array.from({ length: m }, (_, i) => i)
          const expected = Float64Array.from(dst)
          for (const idx of indices(srcShape)) {
            const to = [...idx]
            to[axis] = (idx[axis] as number) + (offsets[idx[batchAxis] as number] as number)
            expected[flat(shape, to)] = src[flat(srcShape, idx)] as number
          }
          writeBlockTyped(
            dst as unknown as Float32Array,
            shape,
            axis,
            batchAxis,
            offsets,
            src as unknown as Float32Array,
            srcShape,
          )
          expect(Array.from(dst)).toEqual(Array.from(expected))
        },
      ),
      { numRuns: 300 },
    )
  })
})
