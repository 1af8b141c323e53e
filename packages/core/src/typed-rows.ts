import { RowIndexError } from "./errors.js"
import type { DType, HostData } from "./host-tensor.js"
import { storedValue } from "./internal/dtype-values.js"
import type { Init } from "./state-spec.js"
import { rowViews } from "./internal/row-views.js"

/**
 * How rows along one axis sit in a row-major buffer: `outer` chunks per row, each `inner`
 * elements long, consecutive rows `inner` apart within a chunk and chunks `rows * inner` apart.
 *
 * @category typed rows
 * @since 0.1.0
 */
export interface RowLayout {
  readonly outer: number
  readonly rows: number
  readonly inner: number
}

/**
 * The `RowLayout` of `shape` along `axis`.
 *
 * @example
 * rowLayout([2, 8, 128], 1) // { outer: 2, rows: 8, inner: 128 }
 * @category typed rows
 * @since 0.1.0
 */
export function rowLayout(shape: readonly number[], axis: number): RowLayout {
  let outer = 1
  let inner = 1
  for (let i = 0; i < axis; i++) outer *= shape[i] as number
  for (let i = axis + 1; i < shape.length; i++) inner *= shape[i] as number
  return { outer, rows: shape[axis] as number, inner }
}

export type Fillable = HostData

/**
 * Sets rows of `data` (laid out as `layout`) to `init`. Consecutive rows are written as one span.
 *
 * @category typed rows
 * @since 0.1.0
 */
export function fillRowsTyped(
  data: Fillable,
  layout: RowLayout,
  rows: readonly number[],
  init: Init,
  dtype: DType,
): void {
  const { outer, rows: n, inner } = layout
  if (init.kind === "tensor") {
    // The init tensor's chunks, made on the first row (none for an empty `rows`).
    let chunks: Fillable[] | undefined
    for (const r of rows) {
      chunks ??= rowViews(init.value.data as Fillable, { outer, rows: 1, inner })
      for (let o = 0; o < outer; o++) setSpan(data, chunks[o] as Fillable, (o * n + r) * inner)
    }
    return
  }
  const value = fillValue(init, dtype)
  // `!==` bounds: `i` and `o` land exactly on them.
  let i = 0
  while (i !== rows.length) {
    const r = rows[i] as number
    const count = runLength(rows, i)
    for (let o = 0; o !== outer; o++) {
      const at = (o * n + r) * inner
      ;(data as Float32Array).fill(value as number, at, at + count * inner)
    }
    i += count
  }
}

/**
 * Copies rows: row `i` of `dst` (laid out as `dstLayout`) receives row `srcRows[i]` of `src`,
 * or `init` where it is null. Runs of consecutive rows are copied as one span; `srcRowViews`
 * (one `subarray` per row chunk, indexed `outer * rows + row`) saves creating a view per row.
 *
 * @category typed rows
 * @since 0.1.0
 */
export function gatherRowsTyped(
  dst: Fillable,
  dstLayout: RowLayout,
  src: Fillable,
  srcLayout: RowLayout,
  srcRows: readonly (number | null)[],
  init: Init,
  dtype: DType,
  srcRowViews?: readonly Fillable[],
): void {
  const { outer, inner } = srcLayout
  const m = dstLayout.rows
  const fresh: number[] = []
  let i = 0
  while (i < srcRows.length) {
    const r = srcRows[i]
    if (r == null) {
      fresh.push(i++)
      continue
    }
    const count = runLength(srcRows, i)
    for (let o = 0; o < outer; o++)
      copySpan(dst, (o * m + i) * inner, src, srcLayout, o, r, count, srcRowViews)
    i += count
  }
  fillRowsTyped(dst, dstLayout, fresh, init, dtype)
}

/**
 * Writes row `i` of `src` into row `dstRows[i]` of `dst`. Runs of consecutive rows are copied
 * as one span; `srcRowViews` (one `subarray` per row chunk) saves creating a view per row.
 *
 * @category typed rows
 * @since 0.1.0
 */
export function scatterRowsTyped(
  dst: Fillable,
  dstLayout: RowLayout,
  dstRows: readonly number[],
  src: Fillable,
  srcLayout: RowLayout,
  srcRowViews?: readonly Fillable[],
): void {
  const { outer, rows: n, inner } = dstLayout
  let i = 0
  while (i < dstRows.length) {
    const r = dstRows[i] as number
    const count = runLength(dstRows, i)
    for (let o = 0; o < outer; o++)
      copySpan(dst, (o * n + r) * inner, src, srcLayout, o, i, count, srcRowViews)
    i += count
  }
}

/**
 * Replaces the rows of `data` in place so that row `i` holds what row `rows[i]` held: a gather
 * into the same memory (`rows` has one entry per row, each in range; entries may repeat, so a row
 * may be duplicated and another dropped). Each row is written only once nothing still to be
 * written reads it; a cycle of rows (`[1, 0]`) goes through one row's copy, the only memory
 * allocated. Rows that keep their place (`rows[i] === i`) are not touched. Returns the number of
 * row copies made (a cycle of `k` rows takes `k + 1`). Throws a `RowIndexError`, having written
 * nothing, when `rows` has not one entry per row or an entry is not an index in range.
 *
 * @example
 * const data = new Float32Array(4 * 32) // 4 rows of [2, 16]
 * reorderRowsTyped(data, rowLayout([4, 2, 16], 0), [1, 1, 3, 0]) // rows now: 1, 1, 3, 0
 * @category typed rows
 * @since 0.3.0
 */
export function reorderRowsTyped(
  data: Fillable,
  layout: RowLayout,
  rows: readonly number[],
): number {
  const n = rows.length
  if (n !== layout.rows) {
    throw new RowIndexError({
      expected: `one entry per row (${layout.rows})`,
      actual: rows,
      detail: `${n} entries`,
    })
  }
  let copies = 0
  // readers[j]: rows still to be written that read row j; row j is written once it is 0.
  const readers = new Int32Array(n)
  const done = new Uint8Array(n)
  // Every entry is checked before any row is written.
  for (let i = 0; i < n; i++) {
    const r = rows[i] as number
    if (!Number.isInteger(r) || r < 0 || r >= n) {
      throw new RowIndexError({
        expected: `row indices in [0, ${n})`,
        actual: r,
        detail: `entry ${i}`,
      })
    }
    if (r === i) done[i] = 1
    else readers[r] = (readers[r] as number) + 1
  }
  const ready: number[] = []
  for (let i = 0; i < n; i++) if (done[i] === 0 && readers[i] === 0) ready.push(i)
  while (ready.length > 0) {
    const i = ready.pop() as number
    const r = rows[i] as number
    copyRow(data, layout, i, data, layout, r)
    copies++
    done[i] = 1
    const left = (readers[r] as number) - 1
    readers[r] = left
    if (left === 0 && done[r] === 0) ready.push(r)
  }
  // What is left are cycles (every row left is read by exactly one row left): keep the first
  // row of each aside, shift the others along, then write the kept row into the last one.
  let kept: Fillable | undefined
  const aside: RowLayout = { outer: layout.outer, rows: 1, inner: layout.inner }
  for (let start = 0; start < n; start++) {
    if (done[start] === 1) continue
    kept ??= new (data.constructor as new (length: number) => Fillable)(layout.outer * layout.inner)
    copyRow(kept, aside, 0, data, layout, start)
    let i = start
    for (;;) {
      done[i] = 1
      const r = rows[i] as number
      if (r === start) break
      copyRow(data, layout, i, data, layout, r)
      i = r
      copies++
    }
    copyRow(data, layout, i, kept, aside, 0)
    copies += 2
  }
  return copies
}

/** Copies row `srcRow` of `src` into row `dstRow` of `dst`, chunk by chunk. */
function copyRow(
  dst: Fillable,
  dstLayout: RowLayout,
  dstRow: number,
  src: Fillable,
  srcLayout: RowLayout,
  srcRow: number,
): void {
  for (let o = 0; o < srcLayout.outer; o++)
    copySpan(
      dst,
      (o * dstLayout.rows + dstRow) * dstLayout.inner,
      src,
      srcLayout,
      o,
      srcRow,
      1,
      undefined,
    )
}

/** How many entries from `rows[i]` on go up by one from it: a run copied or filled as one span. */
function runLength(rows: readonly (number | null)[], i: number): number {
  const r = rows[i] as number
  let count = 1
  // Stryker disable next-line ConditionalExpression: a run cut to single rows writes the same values, one row at a time (only slower)
  while (rows[i + count] === r + count) count++
  return count
}

/**
 * Copies rows `r` to `r + count - 1` of chunk `o` of `src` into `dst` at `at`: element by element
 * when they are at most 16 elements (a view costs more than copying a few), else through the
 * cached view of a single row when given, else a new view.
 */
function copySpan(
  dst: Fillable,
  at: number,
  src: Fillable,
  layout: RowLayout,
  o: number,
  r: number,
  count: number,
  views: readonly Fillable[] | undefined,
): void {
  const from = (o * layout.rows + r) * layout.inner
  const len = count * layout.inner
  if (len > 16) {
    const rows = count === 1 && views ? views[o * layout.rows + r] : src.subarray(from, from + len)
    setSpan(dst, rows as Fillable, at)
  } else for (let k = 0; k < len; k++) (dst as Float32Array)[at + k] = src[from + k] as number
}

function setSpan(dst: Fillable, src: Fillable, at: number): void {
  ;(dst as Float32Array).set(src as Float32Array, at)
}

function fillValue(init: Init, dtype: DType): number | bigint {
  if (init.kind !== "constant") return dtype === "int64" ? 0n : 0
  return storedValue(dtype, init.value)
}
