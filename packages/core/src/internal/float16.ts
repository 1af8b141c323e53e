// IEEE 754 half precision from and to a JS number (a double), rounded once.
//
// Method: a finite magnitude is scaled by a power of two so that the half's unit in the last
// place becomes 1, then rounded to an integer, ties to even, by the classic `x + 2^52 - 2^52`
// (exact for 0 <= x < 2^52 under the default rounding mode). Scaling by a power of two is exact,
// so the double is rounded exactly once, with no float32 step in between. This is the approach
// of @petamoriken/float16's `roundToFloat16` (MIT), which the tests use as the reference.

/** Rounds `0 <= x < 2^52` to an integer, ties to even. */
const roundEven = (x: number): number => x + 2 ** 52 - 2 ** 52

/** Smallest positive normal half, 2^-14. */
const MIN_NORMAL = 2 ** -14
/** Halfway between the largest finite half (65504) and 2^16: from here on, a value rounds to infinity. */
const OVERFLOW = 65520

/**
 * Converts a number to IEEE 754 half-precision bits, rounding to nearest, ties to even, directly
 * from the double. NaN becomes the quiet NaN `0x7e00`; `-0` keeps its sign.
 */
export function toHalfBits(value: number): number {
  if (value !== value) return 0x7e00
  const sign = value < 0 || (value === 0 && 1 / value < 0) ? 0x8000 : 0
  const a = Math.abs(value)
  if (a >= OVERFLOW) return sign | 0x7c00
  if (a < MIN_NORMAL) {
    // Subnormal (or zero): units of 2^-24. A result of 1024 is the smallest normal, 0x0400.
    return sign | roundEven(a * 2 ** 24)
  }
  // 2^e <= a < 2^(e+1), with e in [-14, 15]. Math.log2 may be one off next to a power of two.
  // `2 ** e` is exact for these e (the tests check every half and a million doubles).
  let e = Math.floor(Math.log2(a))
  if (2 ** e > a) e--
  else if (2 ** (e + 1) <= a) e++
  // a / 2^(e - 10) is in [1024, 2048); rounding may give 2048, which carries into the exponent
  // (and into infinity above 65504, which OVERFLOW already caught).
  const m = roundEven((a / 2 ** e) * 1024)
  return sign | (((e + 15) << 10) + (m - 1024))
}

/** Converts IEEE 754 half-precision bits to the number they hold (exactly). */
export function fromHalfBits(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1
  const exp = (bits >>> 10) & 0x1f
  const mant = bits & 0x3ff
  if (exp === 0) return sign * mant * 2 ** -24
  if (exp === 0x1f) return mant ? NaN : sign * Infinity
  return sign * (1 + mant / 1024) * 2 ** (exp - 15)
}
