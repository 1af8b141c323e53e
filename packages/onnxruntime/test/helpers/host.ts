// Host-side array helpers for the tests: slicing and concatenating along an axis, gathering rows,
// comparing with a tolerance.
import { expect } from "vitest"

export interface F32 {
  readonly dims: readonly number[]
  readonly data: Float32Array
}

const size = (dims: readonly number[]) => dims.reduce((a, b) => a * b, 1)
const split = (dims: readonly number[], axis: number) => ({
  outer: size(dims.slice(0, axis)),
  n: dims[axis] as number,
  inner: size(dims.slice(axis + 1)),
})

/** Elements [start, end) along `axis`. */
export function sliceAxis(t: F32, axis: number, start: number, end: number): F32 {
  const { outer, n, inner } = split(t.dims, axis)
  const len = end - start
  const out = new Float32Array(outer * len * inner)
  for (let o = 0; o < outer; o++) {
    out.set(t.data.subarray((o * n + start) * inner, (o * n + end) * inner), o * len * inner)
  }
  const dims = [...t.dims]
  dims[axis] = len
  return { dims, data: out }
}

/** Concatenates along `axis`. */
export function concatAxis(parts: readonly F32[], axis: number): F32 {
  const first = parts[0] as F32
  const total = parts.reduce((a, p) => a + (p.dims[axis] as number), 0)
  const dims = [...first.dims]
  dims[axis] = total
  const { outer, inner } = split(dims, axis)
  const out = new Float32Array(size(dims))
  let at = 0
  for (const p of parts) {
    const len = p.dims[axis] as number
    for (let o = 0; o < outer; o++) {
      out.set(p.data.subarray(o * len * inner, (o + 1) * len * inner), (o * total + at) * inner)
    }
    at += len
  }
  return { dims, data: out }
}

/** Row `rows[i]` along `axis`, or zeros where null. */
export function gatherAxis(t: F32, axis: number, rows: readonly (number | null)[]): F32 {
  const { outer, n, inner } = split(t.dims, axis)
  const dims = [...t.dims]
  dims[axis] = rows.length
  const out = new Float32Array(size(dims))
  for (let o = 0; o < outer; o++) {
    rows.forEach((r, i) => {
      if (r !== null)
        out.set(
          t.data.subarray((o * n + r) * inner, (o * n + r + 1) * inner),
          (o * rows.length + i) * inner,
        )
    })
  }
  return { dims, data: out }
}

/** Deterministic inputs in [-1, 1). */
export function inputs(dims: readonly number[], seed: number): F32 {
  let s = (seed * 2654435761) >>> 0 || 7
  const data = new Float32Array(size(dims))
  for (let i = 0; i < data.length; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0
    data[i] = (s / 2 ** 32) * 2 - 1
  }
  return { dims, data }
}

/** Asserts same dims and every element within `tol`. */
export function expectClose(actual: F32, expected: F32, tol = 1e-5, what = ""): void {
  expect(actual.dims, `dims ${what}`).toEqual(expected.dims)
  let worst = 0
  let at = -1
  for (let i = 0; i < expected.data.length; i++) {
    const d = Math.abs((actual.data[i] as number) - (expected.data[i] as number))
    if (!(d <= worst)) {
      worst = d
      at = i
    }
  }
  expect(
    worst,
    `max |diff| ${what} at ${at}: ${actual.data[at]} vs ${expected.data[at]}`,
  ).toBeLessThanOrEqual(tol)
}
