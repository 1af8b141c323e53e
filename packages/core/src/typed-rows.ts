import type { DType, HostData } from "./host-tensor.js"
import { storedValue } from "./internal/dtype-values.js"
import type { Init } from "./state-spec.js"

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
 * Sets rows of `data` (laid out as `layout`) to `init`; `initRow` is the init tensor's data for
 * `init.kind === "tensor"`. Consecutive rows are written as one span.
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
  if (inner === 0 || rows.length === 0) return
  if (init.kind === "tensor") {
    const src = init.value.data as Fillable
    for (let o = 0; o < outer; o++) {
      const chunk = src.subarray(o * inner, (o + 1) * inner)
      for (const r of rows) setSpan(data, chunk, (o * n + r) * inner)
    }
    return
  }
  const value = fillValue(init, dtype)
  forEachRun(rows, (start, count) => {
    for (let o = 0; o < outer; o++) {
      const at = (o * n + start) * inner
      ;(data as Float32Array).fill(value as number, at, at + count * inner)
    }
  })
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
  const n = srcLayout.rows
  if (inner === 0) return
  let i = 0
  const fresh: number[] = []
  while (i < srcRows.length) {
    const r = srcRows[i]
    if (r == null) {
      fresh.push(i++)
      continue
    }
    let count = 1
    while (i + count < srcRows.length && srcRows[i + count] === r + count) count++
    for (let o = 0; o < outer; o++) {
      const from = (o * n + r) * inner
      // A single row comes from a cached view when given: creating a view costs more than
      // copying a small row.
      const view =
        count === 1 && srcRowViews
          ? (srcRowViews[o * n + r] as Fillable)
          : src.subarray(from, from + count * inner)
      setSpan(dst, view, (o * m + i) * inner)
    }
    i += count
  }
  if (fresh.length > 0) fillRowsTyped(dst, dstLayout, fresh, init, dtype)
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
  const { outer, inner } = dstLayout
  const n = dstLayout.rows
  const m = srcLayout.rows
  if (inner === 0) return
  let i = 0
  while (i < dstRows.length) {
    const r = dstRows[i] as number
    let count = 1
    while (i + count < dstRows.length && dstRows[i + count] === r + count) count++
    for (let o = 0; o < outer; o++) {
      const from = (o * m + i) * inner
      const view =
        count === 1 && srcRowViews
          ? (srcRowViews[o * m + i] as Fillable)
          : src.subarray(from, from + count * inner)
      setSpan(dst, view, (o * n + r) * inner)
    }
    i += count
  }
}

function setSpan(dst: Fillable, src: Fillable, at: number): void {
  ;(dst as Float32Array).set(src as Float32Array, at)
}

function fillValue(init: Init, dtype: DType): number | bigint {
  if (init.kind !== "constant") return dtype === "int64" ? 0n : 0
  return storedValue(dtype, init.value)
}

/** Calls `f(start, count)` for each run of consecutive ascending indices in `rows`. */
function forEachRun(rows: readonly number[], f: (start: number, count: number) => void): void {
  let i = 0
  while (i < rows.length) {
    const r = rows[i] as number
    let count = 1
    while (i + count < rows.length && rows[i + count] === r + count) count++
    f(r, count)
    i += count
  }
}
