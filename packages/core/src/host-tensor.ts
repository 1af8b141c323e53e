import { DTypeMismatchError, ShapeMismatchError } from "./errors.js"
import {
  arrayOf,
  checkData,
  checkShape,
  fitsDType,
  holds,
  storedValue,
  valueRange,
} from "./internal/dtype-values.js"
import { error } from "./internal/fail.js"
import { fromHalfBits, toHalfBits } from "./internal/float16.js"
import { isArray } from "./internal/predicates.js"

/**
 * Element types a state leaf can hold. `float16` is stored as raw 16-bit words (`Uint16Array`),
 * `int64` as `BigInt64Array`, `bool` as `Uint8Array` of 0/1.
 *
 * @category tensors
 * @since 0.1.0
 */
export type DType = "float32" | "float16" | "int32" | "int64" | "uint8" | "bool"

/**
 * Every dtype, in a stable order.
 *
 * @category tensors
 * @since 0.1.0
 */
export const DTYPES: readonly DType[] = ["float32", "float16", "int32", "int64", "uint8", "bool"]

/** How errors name a dtype they expect. Internal: not exported from the package. */
export const A_DTYPE = `a dtype (${DTYPES.join(", ")})`

/**
 * The typed array that holds each dtype.
 *
 * @category tensors
 * @since 0.1.0
 */
export interface DTypeArrays {
  float32: Float32Array
  float16: Uint16Array
  int32: Int32Array
  int64: BigInt64Array
  uint8: Uint8Array
  bool: Uint8Array
}

/**
 * Any typed array a host tensor may hold.
 *
 * @category tensors
 * @since 0.1.0
 */
export type HostData = DTypeArrays[DType]

/**
 * True when `x` names a supported dtype.
 *
 * @category tensors
 * @since 0.1.0
 */
export function isDType(x: unknown): x is DType {
  return (DTYPES as readonly unknown[]).includes(x)
}

/**
 * Bytes per element of a dtype.
 *
 * @category tensors
 * @since 0.1.0
 */
export function dtypeByteSize(dtype: DType): number {
  return arrayOf(dtype)?.BYTES_PER_ELEMENT as number
}

/**
 * Allocates a zeroed typed array of `length` elements for `dtype`.
 *
 * @category tensors
 * @since 0.1.0
 */
export function allocateData<D extends DType>(dtype: D, length: number): DTypeArrays[D] {
  const A = arrayOf(dtype)
  if (!A) throw unknownDType(dtype, "allocateData")
  return new A(length) as DTypeArrays[D]
}

const unknownDType = (dtype: unknown, where: string): DTypeMismatchError =>
  error(DTypeMismatchError, "", A_DTYPE, dtype, `${where}: unknown dtype`)

/**
 * The dtype whose typed array `data` is an instance of, or `undefined`. `Uint16Array` reads as
 * float16 and `Uint8Array` as uint8.
 *
 * @category tensors
 * @since 0.1.0
 */
export function dtypeOfData(data: unknown): DType | undefined {
  if (data instanceof Float32Array) return "float32"
  if (data instanceof Uint16Array) return "float16"
  if (data instanceof Int32Array) return "int32"
  if (data instanceof BigInt64Array) return "int64"
  if (data instanceof Uint8Array) return "uint8"
  return undefined
}

/**
 * True when `data` is the typed array that stores `dtype`.
 *
 * @category tensors
 * @since 0.1.0
 */
export function dataMatchesDType(data: unknown, dtype: DType): boolean {
  return holds(data, dtype)
}

/**
 * Number of elements of a shape (1 for a scalar).
 *
 * @category tensors
 * @since 0.1.0
 */
export function sizeOf(shape: readonly number[]): number {
  let n = 1
  for (const d of shape) n *= d
  return n
}

const NEW = "new HostTensor"

/** Marks a tensor freed by the host backend. Internal: not exported from the package. */
export let markHostTensorDisposed: (t: HostTensor) => void
/** True for a tensor the host backend freed. Internal: not exported from the package. */
export let isHostTensorDisposed: (t: HostTensor) => boolean

/**
 * A dense row-major tensor in host memory: the host backend's tensor, and the form every
 * backend converts to and from for snapshots. `data` is adopted as given (not copied, not
 * scanned). The constructor throws, since it cannot return an `Either`: a `DTypeMismatchError`
 * for an unknown dtype or a `data` array of another type, a `ShapeMismatchError` for a shape
 * that is not an array of non-negative integers or a `data` of another length. A `HostTensor`
 * is frozen: `dtype`, `shape` (itself a frozen copy) and `data` cannot be reassigned; the
 * elements of `data` stay writable.
 *
 * @example
 * const h = new HostTensor("float32", [2, 3], new Float32Array(6))
 * @category tensors
 * @since 0.1.0
 */
export class HostTensor<D extends DType = DType> {
  declare readonly dtype: D
  declare readonly shape: readonly number[]
  declare readonly data: DTypeArrays[D]
  /** Set by the host backend when it frees the tensor (a private field stays writable when frozen). */
  #disposed = false

  static {
    markHostTensorDisposed = (t) => {
      if (#disposed in t) t.#disposed = true
    }
    isHostTensorDisposed = (t) => #disposed in t && t.#disposed
  }

  constructor(dtype: D, shape: readonly number[], data?: DTypeArrays[D]) {
    if (!isDType(dtype)) throw unknownDType(dtype, NEW)
    const n = checkShape(shape, NEW)
    if (typeof n !== "number") throw n
    let buf: unknown = data
    if (buf === undefined) {
      try {
        buf = allocateData(dtype, n)
      } catch (e) {
        throw shapeTooLarge(shape, n, e)
      }
    } else {
      const bad = checkData(dtype, shape, n, buf, NEW)
      if (bad) throw bad
    }
    this.dtype = dtype
    this.shape = Object.freeze([...shape])
    this.data = buf as DTypeArrays[D]
    // Subclasses freeze themselves if they want to: freezing here would forbid their fields.
    if (new.target === HostTensor) Object.freeze(this)
  }
}

const shapeTooLarge = (shape: readonly number[], n: number, cause: unknown): ShapeMismatchError =>
  new ShapeMismatchError({
    expected: "a shape whose elements fit in memory",
    actual: shape,
    detail: `${NEW}: cannot allocate ${n} elements`,
    cause,
  })

/**
 * Builds a host tensor from numbers (or bigints); float16 values are rounded to 16-bit words.
 * Throws (it cannot return an `Either`) what `new HostTensor` throws for a bad dtype or shape, a
 * `ShapeMismatchError` when `values` is not an array or typed array of the shape's size, and a
 * `DTypeMismatchError` for a value the dtype does not hold: a fraction, NaN or an out-of-range
 * value for an integer dtype (1.5 or 2**31 for int32, 300 or -1 for uint8, 2 for bool, 2n**70n
 * for int64), a finite value that overflows a float dtype (70000 for float16).
 *
 * @example
 * const init = hostTensor("float32", [3], [0.1, 0.2, 0.3])
 * @category tensors
 * @since 0.1.0
 */
export function hostTensor<D extends DType>(
  dtype: D,
  shape: readonly number[],
  values?: ArrayLike<number> | ArrayLike<bigint>,
): HostTensor<D> {
  const t = new HostTensor(dtype, shape)
  if (values === undefined) return t
  const n = t.data.length
  const list: unknown = values
  const arrayLike = isArray(list) || (ArrayBuffer.isView(list) && !(list instanceof DataView))
  const given = list as ArrayLike<unknown>
  if (!arrayLike || given.length !== n) {
    throw error(
      ShapeMismatchError,
      "",
      t.shape,
      list,
      `hostTensor: ${arrayLike ? `the shape holds ${n} values, ${given.length} given` : "values must be an array or a typed array"}`,
    )
  }
  const data = t.data as HostData
  for (let i = 0; i < n; i++) {
    const v = given[i]
    if (!fitsDType(dtype, v)) {
      throw error(
        DTypeMismatchError,
        "",
        dtype,
        v,
        `hostTensor: values[${i}]; ${dtype} holds ${valueRange(dtype)}`,
      )
    }
    ;(data as Float32Array)[i] = storedValue(dtype, v) as number
  }
  return t
}

/**
 * Converts a number (a double) to IEEE 754 half-precision bits, rounded once to nearest, ties to
 * even: there is no float32 step (65519.99999 gives 0x7bff, 65520 gives infinity 0x7c00). NaN
 * gives 0x7e00; `-0` keeps its sign.
 *
 * @example
 * float32ToFloat16Bits(1) // 0x3c00
 * @category tensors
 * @since 0.1.0
 */
export function float32ToFloat16Bits(value: number): number {
  return toHalfBits(value)
}

/**
 * Converts IEEE 754 half-precision bits to the number they hold (exactly).
 *
 * @example
 * float16BitsToFloat32(0x3c00) // 1
 * @category tensors
 * @since 0.1.0
 */
export function float16BitsToFloat32(bits: number): number {
  return fromHalfBits(bits)
}
