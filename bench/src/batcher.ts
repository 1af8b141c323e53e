/**
 * The stream batcher against a synchronous loop: 64 concurrent clients, each awaiting
 * `batcher.push()` for its next Silero VAD v5 frame (maxBatch 64, maxWaitMs 2), against one
 * caller running the same 64 streams' frames through `StreamingSession.run` tick after tick.
 * Both on onnxruntime-node (1 thread), the same frames, fed with the 64-sample context rule;
 * rounds interleaved in this process. Also the push latency p99 against maxWait + two batch runs.
 */
import { type StreamKey, orThrow } from "@statesaver/core"
import {
  type OrtTensor,
  createStreamBatcher,
  createStreamingSession,
  ortBackend,
  sileroContext,
} from "@statesaver/onnxruntime"
import * as ort from "onnxruntime-node"
import { sileroV5Path, speechFixture } from "../../examples/src/speech.js"
import { median } from "./harness.js"

const CLIENTS = 64
const FRAME = 512
const MAX_WAIT_MS = 2
const ROUNDS = 11
const TICKS_PER_ROUND = 10
const WARMUP_TICKS = 10

const quantile = (xs: readonly number[], q: number): number => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor(q * s.length))] as number
}

/** Runs the benchmark and prints frames/s of both sides, their ratio, and push latencies. */
export async function main(): Promise<void> {
  process.env["ORT_DISABLE_TELEMETRY"] ??= "1"
  const { samples, sampleRate } = speechFixture()
  const session = await ort.InferenceSession.create(sileroV5Path(), {
    executionProviders: ["cpu"],
    intraOpNumThreads: 1,
    interOpNumThreads: 1,
  })
  const sr = new ort.Tensor("int64", BigInt64Array.from([BigInt(sampleRate)]), [])
  const framesPerStream = Math.floor(samples.length / FRAME)
  const frame = (s: number, tick: number): OrtTensor => {
    const start = ((s * 37 + tick) % framesPerStream) * FRAME
    return new ort.Tensor("float32", samples.slice(start, start + FRAME), [1, FRAME])
  }
  const streaming = () =>
    orThrow(
      createStreamingSession({
        session,
        ort,
        backend: ortBackend({ ort }),
        capacity: CLIENTS,
        rules: [sileroContext()],
      }),
    )

  // The baseline: one caller, one run of every stream per tick.
  const loop = streaming()
  const loopKeys: StreamKey[] = Array.from({ length: CLIENTS }, (_, s) => `loop-${s}`)
  const runMs: number[] = []
  const loopTick = async (tick: number) => {
    const t0 = performance.now()
    const outs = orThrow(
      await loop.run(
        loopKeys.map((key, s) => ({ key, feeds: { frame: frame(s, tick) } })),
        { shared: { sr } },
      ),
    )
    runMs.push(performance.now() - t0)
    for (const o of outs.values()) o["output"]?.dispose()
  }

  // The subject: 64 clients pushing concurrently, each its next frame after its last reply.
  const batched = streaming()
  const batches: number[] = []
  const batcher = orThrow(
    createStreamBatcher({
      session: batched,
      maxBatch: CLIENTS,
      maxWaitMs: MAX_WAIT_MS,
      shared: { sr },
      onMetric: (e) => {
        if (e.type === "batch") batches.push(e.size)
      },
    }),
  )
  const latencies: number[] = []
  const clientsTick = async (tick: number, record: boolean) => {
    await Promise.all(
      Array.from({ length: CLIENTS }, async (_, s) => {
        const t0 = performance.now()
        const r = orThrow(
          await batcher.push(`push-${s}`, { frame: frame(s, tick) }, { start: tick === 0 }),
        )
        if (record) latencies.push(performance.now() - t0)
        r.outputs["output"]?.dispose()
      }),
    )
  }

  let loopTicks = 0
  let pushTicks = 0
  const rate = async (step: () => Promise<void>) => {
    const t0 = process.hrtime.bigint()
    for (let i = 0; i < TICKS_PER_ROUND; i++) await step()
    return (TICKS_PER_ROUND * CLIENTS) / (Number(process.hrtime.bigint() - t0) / 1e9)
  }
  for (let i = 0; i < WARMUP_TICKS; i++) {
    await loopTick(loopTicks++)
    await clientsTick(pushTicks++, false)
  }
  runMs.length = 0
  batches.length = 0
  const loopRates: number[] = []
  const pushRates: number[] = []
  for (let r = 0; r < ROUNDS; r++) {
    const sides: [number[], () => Promise<void>][] = [
      [loopRates, () => loopTick(loopTicks++)],
      [pushRates, () => clientsTick(pushTicks++, true)],
    ]
    for (let i = 0; i < sides.length; i++) {
      const [into, step] = sides[(r + i) % sides.length] as (typeof sides)[number]
      into.push(await rate(step))
    }
  }
  const paired = median(pushRates.map((x, r) => x / (loopRates[r] as number)))
  const run = median(runMs)
  const p50 = quantile(latencies, 0.5)
  const p99 = quantile(latencies, 0.99)
  const bound = MAX_WAIT_MS + 2 * run
  console.log(
    `Stream batcher: ${CLIENTS} concurrent clients, Silero VAD v5 with its context rule (onnxruntime-node cpu, 1 thread; median of ${ROUNDS} rounds of ${TICKS_PER_ROUND} frames per client; target ratio >= 0.9)`,
  )
  console.log(
    `  synchronous StreamingSession loop (${CLIENTS} streams per run) ${median(loopRates).toFixed(0).padStart(7)} frames/s   batcher.push from ${CLIENTS} clients ${median(pushRates).toFixed(0).padStart(7)} frames/s   ratio ${paired.toFixed(2)}`,
  )
  console.log(
    `  push latency p50 ${p50.toFixed(1)} ms, p99 ${p99.toFixed(1)} ms; bound maxWait + 2 batch runs = ${MAX_WAIT_MS} + 2 x ${run.toFixed(1)} = ${bound.toFixed(1)} ms (${p99 <= bound ? "met" : "NOT met"}); mean batch ${(batches.reduce((a, b) => a + b, 0) / Math.max(1, batches.length)).toFixed(1)} streams`,
  )
  console.log(
    `  for scale, the loop's own runs: p50 ${run.toFixed(1)} ms, p99 ${quantile(runMs, 0.99).toFixed(1)} ms`,
  )
  orThrow(await batcher.close())
  batched.dispose()
  loop.dispose()
}

if (import.meta.url === `file://${process.argv[1]}`) await main()
