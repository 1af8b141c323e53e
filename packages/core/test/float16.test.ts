import { getFloat16, setFloat16 } from "@petamoriken/float16"
import { describe, expect, it } from "vitest"
import {
  type HostTensor,
  createStateSaver,
  float16BitsToFloat32,
  float32ToFloat16Bits,
  hostBackend,
  hostTensor,
  init,
  orThrow,
} from "@statesaver/core"

// The reference: @petamoriken/float16 writing and reading half floats through a DataView.
const view = new DataView(new ArrayBuffer(2))
const refBits = (x: number): number => {
  setFloat16(view, 0, x)
  return view.getUint16(0)
}
const refValue = (bits: number): number => {
  view.setUint16(0, bits)
  return getFloat16(view, 0)
}
const isNaNBits = (bits: number): boolean => (bits & 0x7c00) === 0x7c00 && (bits & 0x3ff) !== 0

// Doubles by their bits, to step to the neighbouring double exactly.
const f64 = new Float64Array(1)
const u64 = new BigUint64Array(f64.buffer)
const nextUp = (x: number): number => {
  if (x === 0) return Number.MIN_VALUE
  f64[0] = x
  u64[0] = x > 0 ? (u64[0] as bigint) + 1n : (u64[0] as bigint) - 1n
  return f64[0] as number
}
const nextDown = (x: number): number => -nextUp(-x)

/** mulberry32: a small seeded PRNG, 32-bit unsigned ints. */
function prng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return (t ^ (t >>> 14)) >>> 0
  }
}

describe("float16 conversion", () => {
  it("rounds once from the double: the cases float32 rounding got wrong", () => {
    expect(float32ToFloat16Bits(65519.99999)).toBe(0x7bff)
    expect(float32ToFloat16Bits(-65519.99999)).toBe(0xfbff)
    expect(float32ToFloat16Bits(1 + 2 ** -11 + 2 ** -40)).toBe(0x3c01)
    expect(float32ToFloat16Bits(1 + 2 ** -11)).toBe(0x3c00) // a tie goes to even
    expect(float32ToFloat16Bits(1 + 3 * 2 ** -11)).toBe(0x3c02)
    expect(float32ToFloat16Bits(65520)).toBe(0x7c00)
    expect(float32ToFloat16Bits(nextDown(65520))).toBe(0x7bff)
    expect(float32ToFloat16Bits(-0)).toBe(0x8000)
    expect(float32ToFloat16Bits(0)).toBe(0)
    expect(float32ToFloat16Bits(2 ** -25)).toBe(0) // half the smallest subnormal: a tie to 0
    expect(float32ToFloat16Bits(nextUp(2 ** -25))).toBe(1)
    expect(float32ToFloat16Bits(-Infinity)).toBe(0xfc00)
    expect(isNaNBits(float32ToFloat16Bits(Number.NaN))).toBe(true)
    // The named cases against the reference too, so a wrong expectation here cannot hide.
    for (const x of [65519.99999, 1 + 2 ** -11 + 2 ** -40, 65520, 2 ** -25]) {
      expect(float32ToFloat16Bits(x)).toBe(refBits(x))
    }
  })

  it("round-trips all 65,536 half bit patterns; NaNs stay NaN", () => {
    let nans = 0
    for (let bits = 0; bits < 0x10000; bits++) {
      const value = float16BitsToFloat32(bits)
      const ref = refValue(bits)
      if (isNaNBits(bits)) {
        nans++
        expect(Number.isNaN(value)).toBe(true)
        expect(Number.isNaN(ref)).toBe(true)
        expect(isNaNBits(float32ToFloat16Bits(value))).toBe(true)
        continue
      }
      if (!Object.is(value, ref)) expect({ bits, value }).toEqual({ bits, value: ref })
      const back = float32ToFloat16Bits(value)
      if (back !== bits) expect({ value, back }).toEqual({ value, back: bits })
    }
    expect(nans).toBe(2 * 1023)
  })

  it("agrees with @petamoriken/float16 on 1,000,000 seeded doubles around every rounding boundary", () => {
    const next = prng(0x5eed16)
    const unit = (): number => next() / 2 ** 32
    const halfValue = (bits: number): number => float16BitsToFloat32(bits)
    let checked = 0
    let mismatches = 0
    const first: { x: number; got: number; want: number }[] = []
    const check = (x: number): void => {
      checked++
      const got = float32ToFloat16Bits(x)
      const want = refBits(x)
      if (got === want || (Number.isNaN(x) && isNaNBits(got) && isNaNBits(want))) return
      mismatches++
      if (first.length < 5) first.push({ x, got, want })
    }
    // Every finite half and its negation: the exact midpoints to the next half, and the doubles
    // just either side of them (the ties and the nearest non-ties).
    for (let bits = 0; bits < 0x7c00; bits++) {
      const lo = halfValue(bits)
      const hi = bits === 0x7bff ? 65536 : halfValue(bits + 1)
      const mid = (lo + hi) / 2
      for (const x of [lo, mid, nextUp(mid), nextDown(mid)]) {
        check(x)
        check(-x)
      }
    }
    // The overflow edge and the subnormal range.
    for (const x of [65504, 65519, 65519.99999, nextDown(65520), 65520, nextUp(65520), 65536]) {
      check(x)
      check(-x)
    }
    while (checked < 400_000) check(unit() * 2 ** -14 * (next() & 1 ? 1 : -1))
    // Doubles with a random mantissa and an exponent across the half range and beyond.
    while (checked < 700_000) {
      u64[0] = (BigInt(next() & 0xfffff) << 32n) | BigInt(next())
      u64[0] = (u64[0] as bigint) | (BigInt(1023 + (next() % 60) - 40) << 52n)
      const x = f64[0] as number
      check(next() & 1 ? x : -x)
    }
    // Random midpoints nudged by a random relative amount (2^-53 .. 2^-11).
    while (checked < 900_000) {
      const bits = next() % 0x7bff
      const mid = (halfValue(bits) + halfValue(bits + 1)) / 2
      const nudge = mid * 2 ** -(11 + (next() % 43)) * (next() & 1 ? 1 : -1)
      check(mid + nudge)
    }
    // Random float32 values, what most state holds.
    while (checked < 999_996)
      check(Math.fround(((next() | 0) / 2 ** 31) * 2 ** ((next() % 40) - 24)))
    for (const x of [-0, Infinity, -Infinity, Number.NaN]) check(x)
    expect(first).toEqual([])
    expect(mismatches).toBe(0)
    expect(checked).toBe(1_000_000)
  })

  it("hostTensor and init constants store the exactly rounded words", () => {
    const t = hostTensor("float16", [3], [65519.99999, 1 + 2 ** -11 + 2 ** -40, -0])
    expect(Array.from(t.data)).toEqual([0x7bff, 0x3c01, 0x8000])
    const saver = orThrow(
      createStateSaver({
        spec: { h: { shape: ["batch", 2], dtype: "float16", init: init.constant(65519.99999) } },
        backend: hostBackend(),
        batchSize: 2,
      }),
    )
    const h = (saver.state() as { h: HostTensor<"float16"> }).h
    expect(Array.from(h.data)).toEqual([0x7bff, 0x7bff, 0x7bff, 0x7bff])
    saver.dispose()
  })
})
