import type { HostData } from "./host-tensor.js"

/**
 * Writes `src` into `dst` along `axis` at a per-row offset: for every row `r` (along
 * `batchAxis`), positions `offsets[r]` to `offsets[r] + k - 1` of `dst` along `axis` get
 * positions `0` to `k - 1` of row `r` of `src`, where `k = srcShape[axis]`. `srcShape` is
 * `dstShape` but for `axis`. The caller checked shapes and offsets (`offsets[r] + k <=
 * dstShape[axis]`). A KV cache `[batch, heads, capacity, dim]` takes a step's keys
 * `[batch, heads, k, dim]` this way: one contiguous copy per row and head.
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
  let inner = 1
  for (let i = axis + 1; i < dstShape.length; i++) inner *= dstShape[i] as number
  const capacity = dstShape[axis] as number
  const k = srcShape[axis] as number
  const chunk = k * inner
  // Every index before `axis` is one "prefix": a row and head of a KV cache.
  let prefixes = 1
  for (let i = 0; i < axis; i++) prefixes *= dstShape[i] as number
  if (batchAxis < axis) {
    // The row is part of the prefix: each prefix is one contiguous copy.
    let per = 1 // prefixes per row
    for (let i = batchAxis + 1; i < axis; i++) per *= dstShape[i] as number
    for (let p = 0; p < prefixes; p++) {
      const row = Math.floor(p / per) % (dstShape[batchAxis] as number)
      const from = p * chunk
      const to = (p * capacity + (offsets[row] as number)) * inner
      ;(dst as Float32Array).set((src as Float32Array).subarray(from, from + chunk), to)
    }
    return
  }
  // The row lies after `axis`: element by element, finding each element's row.
  let rowStride = 1
  for (let i = batchAxis + 1; i < dstShape.length; i++) rowStride *= dstShape[i] as number
  const rows = dstShape[batchAxis] as number
  for (let p = 0; p < prefixes; p++)
    for (let j = 0; j < k; j++)
      for (let e = 0; e < inner; e++) {
        const row = Math.floor(e / rowStride) % rows
        dst[(p * capacity + (offsets[row] as number) + j) * inner + e] = src[
          (p * k + j) * inner + e
        ] as never
      }
}
