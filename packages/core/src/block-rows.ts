import { type HostData, sizeOf } from "./host-tensor.js"

/**
 * The contiguous spans a block write copies (see `writeBlockTyped`), in elements: `visit(from,
 * to, count)` copies `count` elements from `src[from]` to `dst[to]`. One span per row, head and
 * new position of a KV cache `[batch, heads, capacity, dim]`; for a layout whose batch axis comes
 * after the written axis, one per run of a row's elements. Backends whose copies are spans (a
 * GPU's `copyBufferToBuffer`) walk these instead of copying typed arrays.
 *
 * @example
 * const spans: number[][] = []
 * forEachBlockSpan([2, 1, 4, 1], 2, 0, [1, 3], [2, 1, 1, 1], (from, to, count) => spans.push([from, to, count]))
 * // spans: [[0, 1, 1], [1, 7, 1]]
 * @category typed rows
 * @since 0.3.0
 */
export function forEachBlockSpan(
  dstShape: readonly number[],
  axis: number,
  batchAxis: number,
  offsets: readonly number[],
  srcShape: readonly number[],
  visit: (from: number, to: number, count: number) => void,
): void {
  const size = (from: number, to?: number) => sizeOf(dstShape.slice(from, to))
  const inner = size(axis + 1)
  const before = batchAxis < axis
  // Elements of one row in a row: a whole position when the batch axis comes first.
  const run = before ? inner : size(batchAxis + 1)
  const per = size(batchAxis + 1, axis)
  const rows = dstShape[batchAxis] as number
  const n = dstShape[axis] as number
  const k = srcShape[axis] as number
  const outer = size(0, axis)
  for (let p = 0; p < outer; p++)
    for (let j = 0; j < k; j++)
      for (let e = 0; e < inner; e += run) {
        const row = (before ? Math.floor(p / per) : e / run) % rows
        visit((p * k + j) * inner + e, (p * n + (offsets[row] as number) + j) * inner + e, run)
      }
}

/**
 * Writes `src` into `dst` along `axis` at a per-row offset: for every row `r` (along
 * `batchAxis`), positions `offsets[r]` to `offsets[r] + k - 1` of `dst` along `axis` get
 * positions `0` to `k - 1` of row `r` of `src`, where `k = srcShape[axis]`. `srcShape` is
 * `dstShape` but for `axis`. The caller checked shapes and offsets (`offsets[r] + k <=
 * dstShape[axis]`). A KV cache `[batch, heads, capacity, dim]` takes a step's keys
 * `[batch, heads, k, dim]` this way: one contiguous copy per row, head and new position.
 *
 * @example
 * // Two rows of a [2, 1, 4, 1] cache at lengths 1 and 3 take one new position each.
 * const cache = new Float32Array(8)
 * writeBlockTyped(cache, [2, 1, 4, 1], 2, 0, [1, 3], Float32Array.of(5, 6), [2, 1, 1, 1])
 * // cache: [0, 5, 0, 0, 0, 0, 0, 6]
 * @category typed rows
 * @since 0.3.0
 */
export function writeBlockTyped(
  dst: HostData,
  dstShape: readonly number[],
  axis: number,
  batchAxis: number,
  offsets: readonly number[],
  src: HostData,
  srcShape: readonly number[],
): void {
  const d = dst as Float32Array
  const s = src as Float32Array
  if (batchAxis > axis) {
    forEachBlockSpan(dstShape, axis, batchAxis, offsets, srcShape, (from, to, count) =>
      d.set(s.subarray(from, from + count), to),
    )
    return
  }
  // The batch axis first (`[batch, heads, capacity, dim]`): a row's k new positions are one
  // span per index before the axis, walked here without a call per span. A KV cache's spans
  // are one head's dim (tens of elements): copied element by element, they cost no subarray
  // object each.
  let inner = 1
  let per = 1
  let outer = 1
  for (let a = 0; a < dstShape.length; a++) {
    const x = dstShape[a] as number
    if (a > axis) inner *= x
    else if (a < axis) outer *= x
    if (a > batchAxis && a < axis) per *= x
  }
  const rows = dstShape[batchAxis] as number
  const n = dstShape[axis] as number
  const count = (srcShape[axis] as number) * inner
  const long = count > 64
  let p = 0
  for (let q = 0; q < outer; q += per) {
    const offset = offsets[(q / per) % rows] as number
    for (const end = q + per; p < end; p++) {
      const from = p * count
      const to = (p * n + offset) * inner
      if (long) d.set(s.subarray(from, from + count), to)
      else for (let i = 0; i < count; i++) d[to + i] = s[from + i] as number
    }
  }
}
