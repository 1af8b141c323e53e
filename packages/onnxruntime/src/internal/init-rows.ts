import {
  type DType,
  type HostData,
  type LeafContext,
  allocateData,
  fillRowsTyped,
  rowLayout,
  sizeOf,
} from "@statesaver/core"

/** Host data of `count` rows of `init` for a tensor of `shape` (outer chunks × `count` rows). */
export function initRows(
  shape: readonly number[],
  dtype: DType,
  leaf: LeafContext,
  count: number,
): HostData {
  const rowShape = [...shape]
  rowShape[leaf.batchAxis] = count
  const data = allocateData(dtype, sizeOf(rowShape))
  if (leaf.init.kind !== "zeros") {
    const layout = rowLayout(rowShape, leaf.batchAxis)
    fillRowsTyped(
      data,
      layout,
      Array.from({ length: count }, (_, i) => i),
      leaf.init,
      dtype,
    )
  }
  return data
}
