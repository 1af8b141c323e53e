/**
 * Host backend row operations against the raw typed-array work over the same bytes:
 * `select` (a gather into a new batch) vs `TypedArray.set`, and `reset(rows)` vs `TypedArray.fill`.
 * Throughput ratio = baseline time / statesaver time (target: at least 0.5).
 */
import { createStateSaver, hostBackend, orThrow } from "@statesaver/core"
import { type Comparison, compareSync, report } from "./harness.js"

const ROW = 256 // float32 elements: 1 KiB per row

function shuffled(n: number, seed: number): number[] {
  const out = Array.from({ length: n }, (_, i) => i)
  let s = seed
  for (let i = n - 1; i > 0; i--) {
    s = (s * 1103515245 + 12345) >>> 0
    const j = s % (i + 1)
    ;[out[i], out[j]] = [out[j] as number, out[i] as number]
  }
  return out
}

export async function main(): Promise<Comparison[]> {
  console.log("\n## core: host backend row operations (1 KiB rows, float32)")
  const results: Comparison[] = []
  for (const rows of [64, 256, 1024]) {
    const saver = orThrow(
      createStateSaver({
        spec: { h: { shape: ["batch", ROW], dtype: "float32" } },
        backend: hostBackend(),
        batchSize: rows,
      }),
    )
    const perm = shuffled(rows, rows)
    const src = new Float32Array(rows * ROW).fill(1)
    const dst = new Float32Array(rows * ROW)

    // select of a random permutation: a new batch of `rows` KiB, gathered row by row.
    const select = compareSync(
      `select ${rows} rows (random order) vs one TypedArray.set`,
      () => dst.set(src),
      () => saver.select(perm),
    )
    report(select, `  (${((rows * ROW * 4) / 1024).toFixed(0)} KiB)`)
    results.push(select)

    // The same select against a hand-written per-row copy into a preallocated array.
    const perRow = compareSync(
      `select ${rows} rows (random order) vs a hand-written row loop`,
      () => {
        for (let i = 0; i < rows; i++) {
          const r = perm[i] as number
          dst.set(src.subarray(r * ROW, (r + 1) * ROW), i * ROW)
        }
      },
      () => saver.select(perm),
    )
    report(perRow)
    results.push(perRow)

    const block = Array.from({ length: rows / 2 }, (_, i) => i + rows / 4)
    const resetBlock = compareSync(
      `reset a block of ${rows / 2} of ${rows} rows vs TypedArray.fill`,
      () => dst.fill(0, 0, (rows / 2) * ROW),
      () => saver.reset(block),
    )
    report(resetBlock)
    results.push(resetBlock)

    // reset of every other row: half the batch's bytes, set back to zeros.
    const half = Array.from({ length: rows / 2 }, (_, i) => i * 2)
    const reset = compareSync(
      `reset every other row (${rows / 2} of ${rows}) vs TypedArray.fill`,
      () => dst.fill(0, 0, (rows / 2) * ROW),
      () => saver.reset(half),
    )
    report(reset)
    results.push(reset)

    const mask = Uint8Array.from({ length: rows }, (_, i) => (i % 2 === 0 ? 1 : 0))
    const resetMask = compareSync(
      `reset by mask ${rows / 2} of ${rows} rows vs a hand-written fill loop`,
      () => {
        for (let i = 0; i < rows; i++) if (mask[i] === 1) dst.fill(0, i * ROW, (i + 1) * ROW)
      },
      () => saver.reset(mask),
    )
    report(resetMask)
    results.push(resetMask)
    saver.dispose()
  }
  return results
}
