import { rowLayout } from "@statesaver/core"
import type * as common from "onnxruntime-common"

/** The data of an ONNX Runtime tensor on the CPU: a typed array, or strings. */
export type TensorData = common.Tensor.DataType

type Typed = Exclude<TensorData, readonly string[] | string[]>

/** A new zeroed array of the same kind as `like`, of `length` elements. */
function allocLike(like: TensorData, length: number): TensorData {
  if (Array.isArray(like)) return new Array<string>(length).fill("")
  const Ctor = (like as Typed).constructor as new (length: number) => Typed
  return new Ctor(length)
}

/** Copies `count` elements of `src` from `srcAt` into `dst` at `dstAt`. */
function copy(dst: TensorData, dstAt: number, src: TensorData, srcAt: number, count: number): void {
  // Strings, and short runs (a token id, a position): element by element, which costs no
  // subarray object.
  if (Array.isArray(dst) || count <= 16) {
    const to = dst as unknown as unknown[]
    const from = src as unknown as readonly unknown[]
    for (let i = 0; i < count; i++) to[dstAt + i] = from[srcAt + i]
    return
  }
  ;(dst as unknown as { set(a: ArrayLike<unknown>, at: number): void }).set(
    (src as Typed).subarray(srcAt, srcAt + count) as ArrayLike<unknown>,
    dstAt,
  )
}

/**
 * Stacks rows along `axis`: `parts[i]` (one row, laid out as `dims` with size 1 on `axis`)
 * becomes row `i` of the result, a new array or `into`'s.
 */
export function stackRows(
  parts: readonly TensorData[],
  dims: readonly number[],
  axis: number,
  into?: (length: number) => TensorData | undefined,
): TensorData {
  const { outer, inner } = rowLayout(dims, axis)
  const rows = parts.length
  // Every element is written: an array to write over (`into`) does as well as a new one.
  const out =
    into?.(outer * rows * inner) ?? allocLike(parts[0] as TensorData, outer * rows * inner)
  for (let i = 0; i < rows; i++) {
    const part = parts[i] as TensorData
    for (let o = 0; o < outer; o++) copy(out, (o * rows + i) * inner, part, o * inner, inner)
  }
  return out
}

/**
 * Row `row` of `data` (laid out as `dims`, rows along `axis`), keeping `axis` with size 1: a
 * view of `data` when the row is one run of it (nothing before the axis), else a copy.
 */
export function sliceRow(
  data: TensorData,
  dims: readonly number[],
  axis: number,
  row: number,
): TensorData {
  const { outer, rows, inner } = rowLayout(dims, axis)
  if (outer === 1 && !Array.isArray(data))
    return (data as Typed).subarray(row * inner, (row + 1) * inner)
  const out = allocLike(data, outer * inner)
  for (let o = 0; o < outer; o++) copy(out, o * inner, data, (o * rows + row) * inner, inner)
  return out
}

/** A copy of `data`. */
export function copyData(data: TensorData): TensorData {
  return Array.isArray(data) ? [...(data as string[])] : (data as Typed).slice()
}

/** True when two arrays hold the same elements (NaNs compare equal to themselves bit by bit). */
export function sameData(a: TensorData, b: TensorData): boolean {
  if (a === b) return true
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) {
    const x = a[i]
    const y = b[i]
    if (x !== y && !(x !== x && y !== y)) return false
  }
  return true
}
