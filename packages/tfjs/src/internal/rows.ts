import * as tf from "@tensorflow/tfjs"
import { type DType, DTypeMismatchError, type HostTensor, type Init } from "@statesaver/core"

/** The tfjs dtypes a state leaf may have. */
export type TfDType = "float32" | "int32" | "bool"

export const TF_DTYPES: readonly TfDType[] = ["float32", "int32", "bool"]

export const isTfDType = (d: string): d is TfDType => (TF_DTYPES as readonly string[]).includes(d)

/** A tf tensor holding a copy of a host tensor (tfjs may keep the array it is given). */
export function tensorFromHost(host: HostTensor): tf.Tensor {
  if (!isTfDType(host.dtype) && host.dtype !== "uint8") {
    throw new DTypeMismatchError({
      expected: "float32, int32, bool or uint8 (stored as bool)",
      actual: host.dtype,
      detail: "tfjs has no tensors of this dtype",
    })
  }
  const dtype: TfDType = host.dtype === "uint8" ? "bool" : host.dtype
  const data = host.data
  const copy =
    dtype === "float32"
      ? Float32Array.from(data as Float32Array)
      : dtype === "int32"
        ? Int32Array.from(data as Int32Array)
        : Uint8Array.from(data as Uint8Array)
  return tf.tensor(copy, [...host.shape], dtype)
}

/**
 * One init row expanded to rank `rank` with a size-1 batch axis, ready to broadcast against a
 * tensor of that rank. Call inside `tidy`.
 */
export function initRow(init: Init, dtype: DType, rank: number, batchAxis: number): tf.Tensor {
  const tfDType = dtype as TfDType
  if (init.kind === "tensor") {
    return tf.expandDims(tensorFromHost(init.value), batchAxis)
  }
  const value = init.kind === "constant" ? Number(init.value) : 0
  const ones = new Array<number>(rank).fill(1)
  return tf.fill(
    ones,
    tfDType === "bool" ? (value !== 0 ? 1 : 0) : value,
    tfDType === "bool" ? "bool" : tfDType,
  )
}

/** A tensor of `shape` whose every row along `batchAxis` is `init`. Call inside `tidy`. */
export function initTensor(
  shape: readonly number[],
  dtype: DType,
  init: Init,
  batchAxis: number,
): tf.Tensor {
  if (init.kind === "zeros") return tf.zeros([...shape], dtype as TfDType)
  if (init.kind === "constant" && dtype !== "bool")
    return tf.fill([...shape], Number(init.value), dtype as TfDType)
  return tf.broadcastTo(initRow(init, dtype, shape.length, batchAxis), [...shape])
}

/** A boolean mask of rank `rank`, true at `rows` along `batchAxis`, size 1 on other axes. */
export function rowMask(
  rows: readonly number[],
  batchSize: number,
  rank: number,
  batchAxis: number,
): tf.Tensor {
  const flags = new Uint8Array(batchSize)
  for (const r of rows) flags[r] = 1
  return maskAlong(tf.tensor1d(flags, "bool"), rank, batchAxis)
}

/** Reshapes a `[batch]` mask so it broadcasts along `batchAxis` of a rank-`rank` tensor. */
export function maskAlong(mask: tf.Tensor, rank: number, batchAxis: number): tf.Tensor {
  const shape = new Array<number>(rank).fill(1)
  shape[batchAxis] = mask.size
  return tf.reshape(mask, shape)
}

/**
 * Row `i` of the result is row `rows[i]` of `src`, or `init` where it is null. Differentiable
 * with respect to `src`. Call inside `tidy`.
 */
export function gatherRows(
  src: tf.Tensor,
  rows: readonly (number | null)[],
  init: Init,
  batchAxis: number,
): tf.Tensor {
  const n = src.shape[batchAxis] as number
  if (src.size === 0) {
    // A 0-sized axis (an empty KV cache) has no values to move; tfjs-wasm's gather would return
    // its kernel's collapsed shape here.
    const shape = [...src.shape]
    shape[batchAxis] = rows.length
    return tf.zeros(shape, src.dtype)
  }
  if (!rows.includes(null)) return tf.gather(src, tf.tensor1d(rows as number[], "int32"), batchAxis)
  // One init row appended at index n serves every null entry.
  const row = initRow(init, src.dtype as DType, src.rank, batchAxis)
  const rowShape = [...src.shape]
  rowShape[batchAxis] = 1
  const extended = tf.concat([src, tf.broadcastTo(row, rowShape)], batchAxis)
  const index = Int32Array.from(rows, (r) => (r === null ? n : r))
  return tf.gather(extended, tf.tensor1d(index, "int32"), batchAxis)
}

/**
 * `tf.where` that also works on bool tensors: the wasm backend's select kernel reads bool
 * data as 4-byte elements, so bool values go through int32. Call inside `tidy`.
 */
export function whereRows(mask: tf.Tensor, a: tf.Tensor, b: tf.Tensor): tf.Tensor {
  if (a.dtype !== "bool") return tf.where(mask, a, b)
  return tf.cast(tf.where(mask, tf.cast(a, "int32"), tf.cast(b, "int32")), "bool")
}
