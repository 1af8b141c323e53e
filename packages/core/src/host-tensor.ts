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
  return typeof x === "string" && (DTYPES as readonly string[]).includes(x)
}

/**
 * Bytes per element of a dtype.
 *
 * @category tensors
 * @since 0.1.0
 */
export function dtypeByteSize(dtype: DType): number {
  switch (dtype) {
    case "float32":
    case "int32":
      return 4
    case "float16":
      return 2
    case "int64":
      return 8
    case "uint8":
    case "bool":
      return 1
  }
}

/**
 * Allocates a zeroed typed array of `length` elements for `dtype`.
 *
 * @category tensors
 * @since 0.1.0
 */
export function allocateData<D extends DType>(dtype: D, length: number): DTypeArrays[D] {
  const make = (): HostData => {
    switch (dtype) {
      case "float32":
        return new Float32Array(length)
      case "float16":
        return new Uint16Array(length)
      case "int32":
        return new Int32Array(length)
      case "int64":
        return new BigInt64Array(length)
      case "uint8":
      case "bool":
        return new Uint8Array(length)
    }
    throw new TypeError(`unknown dtype ${String(dtype)}`)
  }
  return make() as DTypeArrays[D]
}

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
  const d = dtypeOfData(data)
  return d === dtype || (dtype === "bool" && d === "uint8")
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

/**
 * A dense row-major tensor in host memory: the host backend's tensor, and the form every
 * backend converts to and from for snapshots.
 *
 * @example
 * const h = new HostTensor("float32", [2, 3], new Float32Array(6))
 * @category tensors
 * @since 0.1.0
 */
export class HostTensor<D extends DType = DType> {
  readonly dtype: D
  readonly shape: readonly number[]
  readonly data: DTypeArrays[D]

  constructor(dtype: D, shape: readonly number[], data?: DTypeArrays[D]) {
    for (const d of shape) {
      if (!Number.isSafeInteger(d) || d < 0) {
        throw new RangeError(`HostTensor: shape ${JSON.stringify(shape)} has a bad dim ${d}`)
      }
    }
    const n = sizeOf(shape)
    const buf = data ?? allocateData(dtype, n)
    if (!dataMatchesDType(buf, dtype)) {
      throw new TypeError(`HostTensor: ${buf.constructor.name} cannot hold ${dtype}`)
    }
    if (buf.length !== n) {
      throw new RangeError(
        `HostTensor: shape ${JSON.stringify(shape)} needs ${n} elements, data has ${buf.length}`,
      )
    }
    this.dtype = dtype
    this.shape = Object.freeze([...shape])
    this.data = buf
  }
}

/**
 * Builds a host tensor from numbers (or bigints for int64); float16 values are converted to
 * 16-bit words.
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
  if (values !== undefined) {
    if (values.length !== t.data.length) {
      throw new RangeError(
        `hostTensor: shape ${JSON.stringify(shape)} needs ${t.data.length} values, got ${values.length}`,
      )
    }
    const data = t.data as HostData
    for (let i = 0; i < values.length; i++) {
      const v = values[i] as number | bigint
      if (data instanceof BigInt64Array) data[i] = BigInt(v)
      else if (dtype === "float16") data[i] = float32ToFloat16Bits(Number(v))
      else data[i] = Number(v)
    }
  }
  return t
}

const f32 = new Float32Array(1)
const u32 = new Uint32Array(f32.buffer)

/**
 * Converts a number to IEEE 754 half-precision bits (round to nearest even).
 *
 * @example
 * float32ToFloat16Bits(1) // 0x3c00
 * @category tensors
 * @since 0.1.0
 */
export function float32ToFloat16Bits(value: number): number {
  f32[0] = value
  const x = u32[0] as number
  const sign = (x >>> 16) & 0x8000
  const exp = (x >>> 23) & 0xff
  let mant = x & 0x7fffff
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 : 0)
  const e = exp - 127 + 15
  if (e >= 0x1f) return sign | 0x7c00
  if (e <= 0) {
    if (e < -10) return sign
    mant |= 0x800000
    const shift = 14 - e
    let half = mant >>> shift
    const rem = mant & ((1 << shift) - 1)
    const mid = 1 << (shift - 1)
    if (rem > mid || (rem === mid && (half & 1) === 1)) half++
    return sign | half
  }
  let half = (e << 10) | (mant >>> 13)
  const rem = mant & 0x1fff
  // A carry out of the mantissa rounds up into the exponent (and to infinity), as it should.
  if (rem > 0x1000 || (rem === 0x1000 && (half & 1) === 1)) half++
  return sign | half
}

/**
 * Converts IEEE 754 half-precision bits to a number.
 *
 * @example
 * float16BitsToFloat32(0x3c00) // 1
 * @category tensors
 * @since 0.1.0
 */
export function float16BitsToFloat32(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1
  const exp = (bits >>> 10) & 0x1f
  const mant = bits & 0x3ff
  if (exp === 0) return sign * mant * 2 ** -24
  if (exp === 0x1f) return mant ? NaN : sign * Infinity
  return sign * (1 + mant / 1024) * 2 ** (exp - 15)
}
