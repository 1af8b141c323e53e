/**
 * StatefulSession.run against a hand-written loop that feeds the state outputs back as inputs:
 * a 2-layer LSTM (hidden 128), batch 8, one step per run, on onnxruntime-web (wasm) and on
 * onnxruntime-node, same model and session options, both loops interleaved in this process.
 */
import { spawnSync } from "node:child_process"
import { fileURLToPath } from "node:url"
import { orThrow } from "@statesaver/core"
import { type OrtTensor, createStatefulSession, ortBackend } from "@statesaver/onnxruntime"
import * as ortNode from "onnxruntime-node"
import * as ortWeb from "onnxruntime-web"
import type { Runtime } from "../../packages/onnxruntime/test/helpers/harness.js"
import { lstm2 } from "../../packages/onnxruntime/test/helpers/models.js"
import { benchRuntimes, median } from "./harness.js"

const HIDDEN = 128
const INPUT = 64
const BATCH = 8
const ROUNDS = 21
const STEPS_PER_ROUND = 200
const WARMUP = 300

async function bench(label: string, ort: Runtime): Promise<void> {
  const model = lstm2(INPUT, HIDDEN)
  const session = await ort.InferenceSession.create(model, {
    executionProviders: [label.includes("node") ? "cpu" : "wasm"],
  })
  const x = new ort.Tensor("float32", new Float32Array(BATCH * INPUT).fill(0.1), [1, BATCH, INPUT])
  const names = ["0", "1"].flatMap(
    (l) =>
      [
        [`initial_h.${l}`, `Y_h.${l}`],
        [`initial_c.${l}`, `Y_c.${l}`],
      ] as const,
  )

  // The baseline: state tensors fed by hand, outputs fed back, the replaced ones disposed.
  let state: Record<string, OrtTensor> = Object.fromEntries(
    names.map(([input]) => [
      input,
      new ort.Tensor("float32", new Float32Array(BATCH * HIDDEN), [1, BATCH, HIDDEN]),
    ]),
  )
  const handStep = async () => {
    const out = (await session.run({ X: x, ...state })) as Record<string, OrtTensor>
    const next: Record<string, OrtTensor> = {}
    for (const [input, output] of names) {
      state[input]?.dispose()
      next[input] = out[output] as OrtTensor
    }
    state = next
    out["Y"]?.dispose()
  }

  const backend = ortBackend({ ort })
  const stateful = orThrow(createStatefulSession({ session, backend, batchSize: BATCH }))
  const statefulStep = async () => {
    const out = orThrow(await stateful.run({ X: x }))
    out["Y"]?.dispose()
  }

  const time = async (step: () => Promise<void>) => {
    const t0 = process.hrtime.bigint()
    for (let i = 0; i < STEPS_PER_ROUND; i++) await step()
    return Number(process.hrtime.bigint() - t0) / STEPS_PER_ROUND / 1000
  }
  for (let i = 0; i < WARMUP; i++) {
    await handStep()
    await statefulStep()
  }
  const copiedBefore = backend.bytesCopied()
  const hand: number[] = []
  const ours: number[] = []
  for (let r = 0; r < ROUNDS; r++) {
    // Alternate which side goes first so that drift in machine load falls on both.
    if (r % 2 === 0) {
      hand.push(await time(handStep))
      ours.push(await time(statefulStep))
    } else {
      ours.push(await time(statefulStep))
      hand.push(await time(handStep))
    }
  }
  const copied = backend.bytesCopied() - copiedBefore
  const h = median(hand)
  const o = median(ours)
  console.log(
    `  ${label.padEnd(24)} hand-written ${h.toFixed(1).padStart(7)} µs/step   StatefulSession ${o.toFixed(1).padStart(7)} µs/step   ratio ${(o / h).toFixed(3)}   bytes copied carrying state: ${copied}`,
  )
  stateful.dispose()
  for (const t of Object.values(state)) t.dispose()
}

/** Runs the ONNX Runtime benchmark and prints one line per runtime. */
export async function main(): Promise<void> {
  process.env["ORT_DISABLE_TELEMETRY"] ??= "1"
  const only = process.env["STATESAVER_BENCH_RUNTIME"]
  if (only === undefined) {
    const runtimes = benchRuntimes(process.env["STATESAVER_BENCH_RUNTIMES"] ?? "web,node")
    console.log(
      `ONNX Runtime: StatefulSession.run vs hand-written loop (LSTM 2x${HIDDEN}, input ${INPUT}, batch ${BATCH}, 1 step; median of ${ROUNDS} rounds of ${STEPS_PER_ROUND} steps; ratio = ours / hand, target <= 1.03)`,
    )
    // One process per runtime: both loops of a comparison share a process, the runtimes do not
    // (a wasm heap left behind slows the next runtime's loops unevenly).
    for (const runtime of runtimes) {
      const child = spawnSync(
        process.execPath,
        ["--import", "tsx", fileURLToPath(import.meta.url)],
        {
          encoding: "utf8",
          env: { ...process.env, STATESAVER_BENCH_RUNTIME: runtime },
        },
      )
      process.stdout.write(child.stdout)
      if (child.status !== 0) process.stderr.write(child.stderr)
    }
    return
  }
  if (only === "web") {
    ortWeb.env.wasm.numThreads = 1
    await bench("onnxruntime-web (wasm)", ortWeb as unknown as Runtime)
  } else {
    await bench("onnxruntime-node (cpu)", ortNode as unknown as Runtime)
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await main()
