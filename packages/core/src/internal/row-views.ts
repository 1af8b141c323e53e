import type { Fillable, RowLayout } from "../typed-rows.js"

/**
 * Views of every row chunk of `data` laid out as `layout`, indexed `outer * rows + row`: pass
 * them to `gatherRowsTyped` to copy single rows without creating a view per row.
 */
export function rowViews(data: Fillable, layout: RowLayout): Fillable[] {
  const { outer, rows, inner } = layout
  const out: Fillable[] = new Array(outer * rows)
  for (let o = 0; o < outer; o++) {
    for (let r = 0; r < rows; r++)
      out[o * rows + r] = data.subarray((o * rows + r) * inner, (o * rows + r + 1) * inner)
  }
  return out
}
