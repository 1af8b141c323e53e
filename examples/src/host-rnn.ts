/**
 * A tiny Elman RNN in plain TypeScript, its state kept by a StateSaver on the host backend:
 * carrying state across chunks, resetting one row when its sequence ends, and selecting rows.
 */
import { HostTensor, createStateSaver, hostBackend, orThrow, rnnSpec } from "@statesaver/core"

const H = 4
const X = 2

/** Deterministic weights: h' = tanh(W x + U h + b). */
const W = Float32Array.from({ length: H * X }, (_, i) => Math.sin(i + 1) * 0.5)
const U = Float32Array.from({ length: H * H }, (_, i) => Math.cos(i * 0.7) * 0.4)
const b = Float32Array.from({ length: H }, (_, i) => 0.1 * (i - 1))

/** One step for every row of the batch; returns a new [batch, H] tensor's data. */
function step(h: Float32Array, x: Float32Array, batch: number): Float32Array {
  const out = new Float32Array(batch * H)
  for (let r = 0; r < batch; r++) {
    for (let j = 0; j < H; j++) {
      let s = b[j] as number
      for (let k = 0; k < X; k++) s += (W[j * X + k] as number) * (x[r * X + k] as number)
      for (let k = 0; k < H; k++) s += (U[j * H + k] as number) * (h[r * H + k] as number)
      out[r * H + j] = Math.tanh(s)
    }
  }
  return out
}

/** Input of stream `row` at time `t`. */
const input = (row: number, t: number): [number, number] => [
  Math.sin(t * 0.3 + row),
  row % 2 === 0 ? 1 : -1,
]

const fmt = (data: HostTensor["data"], row: number): string =>
  Array.from({ length: H }, (_, j) =>
    Number(data[row * H + j])
      .toFixed(3)
      .padStart(7),
  ).join(" ")

export async function main(): Promise<void> {
  console.log("\n## Carry, reset and select on the host backend (a 1-layer Elman RNN, 3 streams)")
  const backend = hostBackend()
  const saver = orThrow(createStateSaver({ spec: rnnSpec([H]), backend, batchSize: 3 }))

  /** Runs `steps` steps from the saver's state, saving the new state after each. */
  const run = (from: number, steps: number) => {
    for (let t = from; t < from + steps; t++) {
      const batch = saver.batchSize
      const [h] = saver.state() as HostTensor[]
      const x = new Float32Array(batch * X)
      for (let r = 0; r < batch; r++) x.set(input(r, t), r * X)
      const next = step((h as HostTensor).data as Float32Array, x, batch)
      // The saver owns what it is given and frees the tensor it replaces.
      orThrow(saver.save([new HostTensor("float32", [batch, H], next)]))
    }
  }

  // 1. Carry: 12 steps in chunks of 5, 4 and 3 equal 12 steps in one go.
  run(0, 5)
  run(5, 4)
  run(9, 3)
  const chunked = ((saver.state() as HostTensor[])[0] as HostTensor).data.slice()
  const whole = orThrow(createStateSaver({ spec: rnnSpec([H]), backend, batchSize: 3 }))
  let h = ((whole.state() as HostTensor[])[0] as HostTensor).data as Float32Array
  for (let t = 0; t < 12; t++) {
    const x = new Float32Array(3 * X)
    for (let r = 0; r < 3; r++) x.set(input(r, t), r * X)
    h = step(h, x, 3)
  }
  whole.dispose()
  console.log("chunked 5+4+3 steps, row 0:", fmt(chunked, 0))
  console.log("one run of 12 steps, row 0:", fmt(h, 0))
  console.log(
    "chunked equals whole:",
    chunked.every((v, i) => v === h[i]),
  )

  // 2. Reset: stream 1's sequence ends; its row starts over at zeros, the others carry on.
  orThrow(saver.reset([1]))
  const afterReset = ((saver.state() as HostTensor[])[0] as HostTensor).data
  console.log("\nafter reset([1]):")
  for (let r = 0; r < 3; r++) console.log(`  row ${r}:`, fmt(afterReset, r))

  // 3. Select: drop stream 0, keep stream 2 twice (two beams), and add a fresh row.
  orThrow(saver.select([2, 2, null]))
  const selected = ((saver.state() as HostTensor[])[0] as HostTensor).data
  console.log("\nafter select([2, 2, null]) the batch has", saver.batchSize, "rows:")
  for (let r = 0; r < saver.batchSize; r++) console.log(`  row ${r}:`, fmt(selected, r))

  // 4. Errors name the leaf, the expected and the actual value, and change nothing.
  const bad = saver.save([new HostTensor("float32", [3, H + 1])])
  if (bad._tag === "Left")
    console.log(`\na bad save is refused: ${bad.left._tag}: ${bad.left.message}`)
  const r = saver.reset([7])
  if (r._tag === "Left") console.log(`a bad reset is refused: ${r.left._tag}: ${r.left.message}`)

  // 5. Snapshot: safetensors bytes that restore bit-exactly (and that Python can read).
  const bytes = orThrow(await saver.snapshot())
  const copy = orThrow(createStateSaver({ spec: rnnSpec([H]), backend, batchSize: 3 }))
  orThrow(copy.restore(bytes))
  console.log(
    `\nsnapshot: ${bytes.length} bytes; restored copy equals:`,
    ((copy.state() as HostTensor[])[0] as HostTensor).data.every((v, i) => v === selected[i]),
  )
  copy.dispose()
  saver.dispose()
  console.log("live tensors after dispose:", backend.liveTensors())
}
