/**
 * statesaver's own work per step, whatever the model's size: each session runs against a stand-in
 * for the InferenceSession that answers every run with the outputs the real model gave once
 * (fresh tensor objects over the same data), so the time is the session's alone: checking the
 * feeds, gathering and scattering state, derived inputs, block writes, splitting outputs. The
 * hand-written loops run against stand-ins of the same model, so their times are their own work too.
 * onnxruntime-node; medians of rounds.
 */
import { orThrow } from "@statesaver/core"
import {
  type OrtSession,
  type OrtTensor,
  createStatefulSession,
  createStreamingSession,
  ortBackend,
  sileroContext,
} from "@statesaver/onnxruntime"
import * as ort from "onnxruntime-node"
import {
  fixedCacheDecoder,
  tinyDecoderConfig,
} from "../../packages/onnxruntime/test/helpers/decoders.js"
import { sileroV5Path, speechFixture } from "../../examples/src/speech.js"
import type { Runtime } from "../../packages/onnxruntime/test/helpers/harness.js"
import { handFixed as handBatched } from "./decoders.js"
import { handFixed } from "./kv.js"
import { median } from "./harness.js"

const ROUNDS = 7
const options = { executionProviders: ["cpu"], intraOpNumThreads: 1, interOpNumThreads: 1 }

/** The model for one run, then a stand-in answering every later run with that run's outputs. */
function standIn(model: ort.InferenceSession): { session: OrtSession } {
  let recorded: Record<string, OrtTensor> | undefined
  const session = {
    inputNames: model.inputNames,
    outputNames: model.outputNames,
    inputMetadata: model.inputMetadata,
    outputMetadata: model.outputMetadata,
    release: () => model.release(),
    run: async (feeds: Record<string, OrtTensor>) => {
      if (recorded === undefined) {
        const out = await model.run(feeds)
        recorded = {}
        for (const [k, v] of Object.entries(out))
          recorded[k] = new ort.Tensor(
            v.type as "float32",
            (v.data as Float32Array).slice(),
            v.dims,
          )
        return out
      }
      const out: Record<string, OrtTensor> = {}
      for (const [k, v] of Object.entries(recorded))
        out[k] = new ort.Tensor(v.type as "float32", v.data as Float32Array, v.dims)
      return out
    },
  } as unknown as OrtSession
  return { session }
}

/** µs per step of `step`, `n` steps per round (then `between()`), median of rounds after a warm-up. */
async function time(step: () => Promise<void>, n: number, between: () => void): Promise<number> {
  // Warm up well past the JIT's tiers: a few thousand steps.
  for (let w = 0; w < Math.ceil(3000 / n); w++) {
    for (let i = 0; i < n; i++) await step()
    between()
  }
  const us: number[] = []
  for (let r = 0; r < ROUNDS; r++) {
    const t0 = process.hrtime.bigint()
    for (let i = 0; i < n; i++) await step()
    us.push(Number(process.hrtime.bigint() - t0) / 1e3 / n)
    between()
  }
  return median(us)
}

/** A StatefulSession's fixed-cache decoder step (batch 4, capacity 160), and by hand. */
async function decoderStep(): Promise<string> {
  const cfg = tinyDecoderConfig({ vocab: 64, hidden: 64, heads: 4, headDim: 16, layers: 2 })
  const B = 4
  const CAP = 160
  const STEPS = 90
  const model = await ort.InferenceSession.create(fixedCacheDecoder(cfg), options)
  const ids = (n: number) => new ort.Tensor("int64", new BigInt64Array(B * n).fill(3n), [B, n])
  // A prompt run on the model itself, whose state the timed session starts from.
  const s = orThrow(
    createStatefulSession({
      session: model,
      backend: ortBackend({ ort }),
      batchSize: B,
      cache: { kind: "fixed", capacity: CAP },
      outputs: ["logits"],
    }),
  )
  orThrow(await s.run({ input_ids: ids(64) })).logits.dispose()
  // The stand-in records a one-token step (on an empty cache), then replays it.
  const one = standIn(model)
  const session = orThrow(
    createStatefulSession({
      session: one.session,
      backend: ortBackend({ ort }),
      batchSize: B,
      cache: { kind: "fixed", capacity: CAP },
      outputs: ["logits"],
    }),
  )
  orThrow(await session.run({ input_ids: ids(1) })).logits.dispose()
  orThrow(session.rewind([0, 1, 2, 3], 1))
  orThrow(session.restore(orThrow(await s.snapshot())))
  s.dispose()
  const ours = await time(
    async () => orThrow(await session.run({ input_ids: ids(1) })).logits.dispose(),
    STEPS,
    () => orThrow(session.rewind([0, 1, 2, 3], STEPS)),
  )
  // By hand (kv.ts's loop: the same mask, positions and block copies), against the same stand-in.
  const byHand = handFixed(ort as unknown as Runtime, one.session as never, CAP, 64)
  const hand = await time(() => byHand.step(0), STEPS, byHand.rewind)
  session.dispose()
  return `  StatefulSession, fixed-cache decoder step (batch 4, capacity ${CAP}): ${ours.toFixed(1)} µs; the hand-written loop's own work ${hand.toFixed(1)} µs`
}

/** A StreamingSession call of 16 Silero streams with the context rule, and 16 conversations. */
async function streamingSteps(): Promise<string[]> {
  const lines: string[] = []
  {
    const { samples, sampleRate } = speechFixture()
    const model = await ort.InferenceSession.create(sileroV5Path(), options)
    const stand = standIn(model)
    const sr = new ort.Tensor("int64", BigInt64Array.from([BigInt(sampleRate)]), [])
    const s = orThrow(
      createStreamingSession({
        session: stand.session,
        ort,
        backend: ortBackend({ ort }),
        capacity: 64,
        rules: [sileroContext()],
      }),
    )
    const keys = Array.from({ length: 16 }, (_, i) => `s${i}`)
    const frame = (i: number) =>
      new ort.Tensor("float32", samples.subarray(i * 512, i * 512 + 512), [1, 512])
    const call = async () => {
      const outs = orThrow(
        await s.run(
          keys.map((key, i) => ({ key, feeds: { frame: frame(i) } })),
          { shared: { sr } },
        ),
      )
      for (const o of outs.values()) o["output"]?.dispose()
    }
    const us = await time(call, 1000, () => undefined)
    lines.push(
      `  StreamingSession, Silero VAD call of 16 streams with the context rule: ${us.toFixed(1)} µs (${(us / 16).toFixed(1)} µs per stream)`,
    )
    s.dispose()
  }
  {
    const CAP = 288
    const cfg = tinyDecoderConfig({
      vocab: 64,
      hidden: 64,
      heads: 4,
      headDim: 16,
      layers: 2,
      maxPosition: CAP,
    })
    const model = await ort.InferenceSession.create(fixedCacheDecoder(cfg), options)
    const keys = Array.from({ length: 16 }, (_, i) => `chat-${i}`)
    const chats = orThrow(
      createStreamingSession({
        session: model,
        ort,
        backend: ortBackend({ ort }),
        capacity: 16,
        cache: { kind: "fixed", capacity: CAP },
        outputs: ["logits"],
      }),
    )
    // Prompts run on the model itself; the timed session holds the same caches, and its
    // stand-in records its first 16-row step, then replays it.
    const step1 = standIn(model)
    const s = orThrow(
      createStreamingSession({
        session: step1.session,
        ort,
        backend: ortBackend({ ort }),
        capacity: 16,
        cache: { kind: "fixed", capacity: CAP },
        outputs: ["logits"],
      }),
    )
    for (const [i, key] of keys.entries()) {
      const ids = new ort.Tensor("int64", new BigInt64Array(16 + i).fill(2n), [1, 16 + i])
      for (const o of orThrow(await chats.run([{ key, feeds: { input_ids: ids } }])).values())
        o.logits.dispose()
      orThrow(s.restore(key, orThrow(await chats.snapshot(key))))
    }
    chats.dispose()
    const step = async () => {
      const outs = orThrow(
        await s.run(
          keys.map((key) => ({ key, feeds: { input_ids: new ort.Tensor("int64", [3n], [1, 1]) } })),
        ),
      )
      for (const o of outs.values()) o.logits.dispose()
    }
    const us = await time(step, 32, () => orThrow(s.rewind(keys, 32)))
    // The same step with the tokens in one tensor and the logits handed back as one (runBatch).
    const batchStep = async () => {
      const input_ids = new ort.Tensor("int64", new BigInt64Array(16).fill(3n), [16, 1])
      orThrow(await s.runBatch(keys, { input_ids })).logits.dispose()
    }
    const batchUs = await time(batchStep, 32, () => orThrow(s.rewind(keys, 32)))
    // By hand (decoders.ts's ceiling: one run over the 16 rows, the mask, positions and block
    // copies written by hand), against a stand-in of its own.
    const handStand = standIn(model)
    const byHand = handBatched(
      ort as unknown as Runtime,
      handStand.session as never,
      16,
      () => new Float32Array(16 * cfg.heads * CAP * cfg.headDim),
      keys.map((_, i) => 16 + i),
    )
    const hand = await time(() => byHand.step(0), 32, byHand.rewind)
    lines.push(
      `  StreamingSession, step of 16 conversations (fixed cache ${CAP}): run ${us.toFixed(1)} µs (${(us / 16).toFixed(1)} µs per conversation), runBatch ${batchUs.toFixed(1)} µs; the hand-batched loop's own work ${hand.toFixed(1)} µs`,
    )
    s.dispose()
  }
  return lines
}

/** Runs the benchmark and prints µs per step of each case. */
export async function main(): Promise<void> {
  process.env["ORT_DISABLE_TELEMETRY"] ??= "1"
  console.log(
    `statesaver's own work per step (the model replaced by a stand-in that replays its recorded outputs; onnxruntime-node; median of ${ROUNDS} rounds)`,
  )
  console.log(await decoderStep())
  for (const line of await streamingSteps()) console.log(line)
}

if (import.meta.url === `file://${process.argv[1]}`) await main()
