// What a dtype can hold: the typed array of its data, and the range of the values it accepts.
// Shared by `HostTensor`, `hostTensor`, spec `init` constants and the host backend's `describe`.
import { DTypeMismatchError, ShapeMismatchError } from "../errors.js"
import type { DType } from "../host-tensor.js"
import { fromHalfBits, toHalfBits } from "./float16.js"
import { error } from "./fail.js"
import { hasOwn, isSize } from "./predicates.js"

/** The typed array that stores each dtype. */
const ARRAYS = {
  float32: Float32Array,
  float16: Uint16Array,
  int32: Int32Array,
  int64: BigInt64Array,
  uint8: Uint8Array,
  bool: Uint8Array,
} as const

/** The typed array constructor of `dtype`, or undefined for a string that is not a dtype. */
export const arrayOf = (dtype: unknown): (typeof ARRAYS)[DType] | undefined =>
  typeof dtype === "string" && hasOwn(ARRAYS, dtype) ? ARRAYS[dtype as DType] : undefined

/**
 * True when `data` is the typed array that stores `dtype` (false for an unknown dtype). A switch
 * rather than a lookup in `ARRAYS`: each `instanceof` stays monomorphic on the `describe` path.
 */
export function holds(data: unknown, dtype: DType): boolean {
  switch (dtype) {
    case "float32":
      return data instanceof Float32Array
    case "float16":
      return data instanceof Uint16Array
    case "int32":
      return data instanceof Int32Array
    case "int64":
      return data instanceof BigInt64Array
    case "uint8":
    case "bool":
      return data instanceof Uint8Array
    default:
      return false
  }
}

/**
 * The number of elements of `shape`, or the `ShapeMismatchError` that refuses it (not an array,
 * a negative, fractional or NaN dim, more elements than a safe integer). `where` opens the detail.
 */
export function checkShape(shape: unknown, where: string): number | ShapeMismatchError {
  if (!Array.isArray(shape)) return badShape(shape, where, "not an array")
  let n = 1
  for (let axis = 0; axis < shape.length; axis++) {
    const d: unknown = shape[axis]
    if (!isSize(d)) return badShape(shape, where, `dim ${axis} is not a non-negative integer`)
    n *= d
  }
  return Number.isSafeInteger(n)
    ? n
    : badShape(shape, where, `${n} elements is more than any array holds`)
}

const badShape = (shape: unknown, where: string, why: string): ShapeMismatchError =>
  error(ShapeMismatchError, "", "an array of non-negative integer dims", shape, `${where}: ${why}`)

/**
 * The error that refuses `data` as the storage of a `dtype` tensor of `size` elements: the wrong
 * typed array (`DTypeMismatchError`) or the wrong length (`ShapeMismatchError`); else undefined.
 */
export function checkData(
  dtype: DType,
  shape: readonly number[],
  size: number,
  data: unknown,
  where: string,
): DTypeMismatchError | ShapeMismatchError | undefined {
  if (!holds(data, dtype)) {
    return error(
      DTypeMismatchError,
      "",
      dtype,
      data,
      `${where}: ${dtype} data is a ${arrayOf(dtype)?.name ?? "typed array of a known dtype"}`,
    )
  }
  const length = (data as { length: number }).length
  if (length !== size) {
    return error(
      ShapeMismatchError,
      "",
      shape,
      data,
      `${where}: the shape holds ${size} elements, the data ${length}`,
    )
  }
  return undefined
}

/**
 * `checkShape` then `checkData`: the error that refuses a tensor whose dtype, shape and data
 * disagree, or undefined.
 */
export function checkTensor(
  dtype: DType,
  shape: readonly number[],
  data: unknown,
  where: string,
): DTypeMismatchError | ShapeMismatchError | undefined {
  const n = checkShape(shape, where)
  return typeof n === "number" ? checkData(dtype, shape, n, data, where) : n
}

const INT64_MIN = -(2n ** 63n)
const INT64_MAX = 2n ** 63n - 1n

/** The integer dtypes and their ranges (bigints for int64, whose range no double holds). */
const INT_RANGES: Partial<Record<DType, readonly [number | bigint, number | bigint]>> = {
  int32: [-(2 ** 31), 2 ** 31 - 1],
  int64: [INT64_MIN, INT64_MAX],
  uint8: [0, 255],
  bool: [0, 1],
}

const FLOAT = " (or ±Infinity, NaN), or a bigint it holds exactly"
const RANGES: Partial<Record<DType, string>> = {
  float32: `a number finite in float32${FLOAT}`,
  float16: `a number below 65520 in magnitude${FLOAT}`,
  int64: `a bigint in [${INT64_MIN}n, ${INT64_MAX}n] or a safe integer number`,
}

/** The values a dtype accepts, as printed in errors. */
export const valueRange = (dtype: DType): string => {
  const r = INT_RANGES[dtype]
  return RANGES[dtype] ?? `an integer in [${r?.[0]}, ${r?.[1]}]`
}

/**
 * True when `v` is a value of `dtype` as `valueRange` describes it: integers in range for the
 * integer dtypes (no fractions, no NaN; int64 numbers must be safe integers), and for the float
 * dtypes any number but a finite one that would round to infinity; a bigint for a float dtype
 * only when the dtype holds it exactly.
 */
export function fitsDType(dtype: DType, v: unknown): v is number | bigint {
  const big = typeof v === "bigint"
  if (!big && typeof v !== "number") return false
  const r = INT_RANGES[dtype]
  if (r) {
    // Comparing a bigint with a number is exact.
    const whole = big || (dtype === "int64" ? Number.isSafeInteger(v) : Number.isInteger(v))
    return whole && v >= r[0] && v <= r[1]
  }
  // A float dtype: a finite value must stay finite; a bigint must round to itself.
  const n = Number(v)
  const f = dtype === "float32" ? Math.fround(n) : fromHalfBits(toHalfBits(n))
  return big ? Number.isFinite(f) && BigInt(f) === v : !Number.isFinite(n) || Number.isFinite(f)
}

/** The element stored for a value that `fitsDType` accepted: float16 words, int64 bigints. */
export function storedValue(dtype: DType, v: number | bigint): number | bigint {
  if (dtype === "int64") return BigInt(v)
  if (dtype === "float16") return toHalfBits(Number(v))
  return Number(v)
}
