/**
 * Silero VAD v5 over 64 audio streams on onnxruntime-node, fed as its authors feed it (each
 * frame after the previous frame's last 64 samples): a StreamingSession running 16 streams per
 * call against one StatefulSession of batch 1 per stream run one by one, and against the same
 * batches run by hand (context prepended and carried by hand: the ceiling). Same session
 * options, all sides interleaved in this process, warmed up; frames/s are medians of rounds.
 */
import { type StreamKey, orThrow } from "@statesaver/core"
import {
  type OrtTensor,
  createStatefulSession,
  createStreamingSession,
  ortBackend,
  sileroContext,
} from "@statesaver/onnxruntime"
import * as ort from "onnxruntime-node"
import { sileroV5Path, speechFixture } from "../../examples/src/speech.js"
import { median, modelMicros, timedRuns } from "./harness.js"

const STREAMS = 64
const PER_CALL = 16
const FRAME = 512
/** Samples of the previous frame prepended to each frame (16 kHz). */
const CONTEXT = 64
const ROUNDS = 15
const TICKS_PER_ROUND = 8
/** V8 optimizes the session's code only after a few thousand calls: 800 ticks are 3,200 calls per side. */
const WARMUP_TICKS = Number(process.env["STATESAVER_BENCH_WARMUP"] ?? 800)

/** Runs the benchmark and prints frames/s of both sides and their ratio. */
export async function main(): Promise<void> {
  process.env["ORT_DISABLE_TELEMETRY"] ??= "1"
  const { samples, sampleRate } = speechFixture()
  const model = sileroV5Path()
  // Every side's model runs are timed: a call's time outside them is its own work.
  const session = timedRuns(
    await ort.InferenceSession.create(model, {
      executionProviders: ["cpu"],
      intraOpNumThreads: 1,
      interOpNumThreads: 1,
    }),
  )
  const sr = new ort.Tensor("int64", BigInt64Array.from([BigInt(sampleRate)]), [])
  const framesPerStream = Math.floor(samples.length / FRAME)
  // Stream s reads the fixture from its own offset, wrapping around.
  const frame = (s: number, tick: number): OrtTensor => {
    const start = (((s * 37 + tick) % framesPerStream) * FRAME) % samples.length
    return new ort.Tensor("float32", samples.slice(start, start + FRAME), [1, FRAME])
  }
  const keys: StreamKey[] = Array.from({ length: STREAMS }, (_, s) => `stream-${s}`)

  const oneByOne = Array.from({ length: STREAMS }, () =>
    orThrow(
      createStatefulSession({
        session,
        backend: ortBackend({ ort }),
        batchSize: 1,
        rules: [sileroContext()],
      }),
    ),
  )
  const aloneTick = async (tick: number) => {
    for (let s = 0; s < STREAMS; s++) {
      const out = orThrow(
        await (oneByOne[s] as (typeof oneByOne)[number]).run({ frame: frame(s, tick), sr }),
      )
      out["output"]?.dispose()
    }
  }

  const streaming = orThrow(
    createStreamingSession({
      session,
      ort,
      backend: ortBackend({ ort }),
      capacity: STREAMS,
      rules: [sileroContext()],
    }),
  )
  const batchedTick = async (tick: number) => {
    for (let first = 0; first < STREAMS; first += PER_CALL) {
      const streams = keys
        .slice(first, first + PER_CALL)
        .map((key, i) => ({ key, feeds: { frame: frame(first + i, tick) } }))
      const outs = orThrow(await streaming.run(streams, { shared: { sr } }))
      for (const o of outs.values()) o["output"]?.dispose()
    }
  }

  // The same session fed as the ceiling is fed: each group's frames stacked by the caller into
  // one tensor, its output handed back as one tensor (`runBatch`).
  const batchTick = async (tick: number) => {
    for (let first = 0; first < STREAMS; first += PER_CALL) {
      const frames = new Float32Array(PER_CALL * FRAME)
      for (let i = 0; i < PER_CALL; i++)
        frames.set(frame(first + i, tick).data as Float32Array, i * FRAME)
      const out = orThrow(
        await streaming.runBatch(keys.slice(first, first + PER_CALL), {
          frame: new ort.Tensor("float32", frames, [PER_CALL, FRAME]),
          sr,
        }),
      )
      out["output"]?.dispose()
    }
  }

  // The ceiling: the same batches of 16 run by hand, each group's state fed back as it is and
  // its context windows prepended and carried in place.
  const WIDTH = CONTEXT + FRAME
  const handCeiling = () => {
    const handState: OrtTensor[] = Array.from(
      { length: STREAMS / PER_CALL },
      () => new ort.Tensor("float32", new Float32Array(2 * PER_CALL * 128), [2, PER_CALL, 128]),
    )
    const handContext: Float32Array[] = Array.from(
      { length: STREAMS / PER_CALL },
      () => new Float32Array(PER_CALL * CONTEXT),
    )
    const handTick = async (tick: number) => {
      for (let g = 0; g < STREAMS / PER_CALL; g++) {
        const context = handContext[g] as Float32Array
        const frames = Array.from(
          { length: PER_CALL },
          (_, i) => frame(g * PER_CALL + i, tick).data as Float32Array,
        )
        const input = new Float32Array(PER_CALL * WIDTH)
        for (let i = 0; i < PER_CALL; i++) {
          input.set(context.subarray(i * CONTEXT, (i + 1) * CONTEXT), i * WIDTH)
          input.set(frames[i] as Float32Array, i * WIDTH + CONTEXT)
        }
        const out = await session.run({
          input: new ort.Tensor("float32", input, [PER_CALL, WIDTH]),
          sr,
          state: handState[g] as OrtTensor,
        })
        handState[g]?.dispose()
        handState[g] = out["stateN"] as OrtTensor
        out["output"]?.dispose()
        for (let i = 0; i < PER_CALL; i++)
          context.set((frames[i] as Float32Array).subarray(FRAME - CONTEXT), i * CONTEXT)
      }
    }
    return { handTick, dispose: () => handState.forEach((t) => t.dispose()) }
  }
  const ceiling = handCeiling()
  const handTick = ceiling.handTick
  // A second, identical ceiling in the same rounds: its ratio to the first is the noise floor.
  const again = handCeiling()

  let tick = 0
  /** Each round's µs per call of 16 streams outside the model's run, by side. */
  const own = new Map<(tick: number) => Promise<void>, number[]>()
  const framesPerSecond = async (step: (tick: number) => Promise<void>) => {
    const m0 = modelMicros()
    const t0 = process.hrtime.bigint()
    for (let i = 0; i < TICKS_PER_ROUND; i++) await step(tick++)
    const us = Number(process.hrtime.bigint() - t0) / 1e3
    const calls = (TICKS_PER_ROUND * STREAMS) / PER_CALL
    let rounds = own.get(step)
    if (rounds === undefined) own.set(step, (rounds = []))
    rounds.push((us - (modelMicros() - m0)) / calls)
    return (TICKS_PER_ROUND * STREAMS) / (us / 1e6)
  }
  for (let i = 0; i < WARMUP_TICKS; i++) {
    await aloneTick(i)
    await batchedTick(i)
    await batchTick(i)
    await handTick(i)
    await again.handTick(i)
  }
  const alone: number[] = []
  const batched: number[] = []
  const whole: number[] = []
  const hand: number[] = []
  const hand2: number[] = []
  for (let r = 0; r < ROUNDS; r++) {
    // Rotate which side goes first so that drift in machine load falls on every side.
    const sides: [number[], (tick: number) => Promise<void>][] = [
      [alone, aloneTick],
      [batched, batchedTick],
      [whole, batchTick],
      [hand, handTick],
      [hand2, again.handTick],
    ]
    for (let i = 0; i < sides.length; i++) {
      const [into, step] = sides[(r + i) % sides.length] as (typeof sides)[number]
      into.push(await framesPerSecond(step))
    }
  }
  const a = median(alone)
  const b = median(batched)
  const h = median(hand)
  // Rounds pair the sides in time: the median of per-round ratios shrugs off load drift.
  const paired = median(batched.map((x, r) => x / (hand[r] as number)))
  const pairedWhole = median(whole.map((x, r) => x / (hand[r] as number)))
  const floor = median(hand2.map((x, r) => x / (hand[r] as number)))
  console.log(
    `Silero VAD v5 with its ${CONTEXT}-sample context, ${STREAMS} streams (onnxruntime-node cpu, 1 thread; median of ${ROUNDS} rounds of ${TICKS_PER_ROUND} frames per stream; target ratio >= 4)`,
  )
  console.log(
    `  one by one (StatefulSession, batch 1) ${a.toFixed(0).padStart(7)} frames/s   StreamingSession, ${PER_CALL} per call ${b.toFixed(0).padStart(7)} frames/s   ratio ${(b / a).toFixed(2)}`,
  )
  console.log(
    `  ceiling: the same batches run by hand (InferenceSession.run, state fed back, context carried) ${h.toFixed(0).padStart(7)} frames/s   ratio ${(h / a).toFixed(2)}`,
  )
  console.log(
    `  StreamingSession / ceiling ${paired.toFixed(3)} (median of per-round ratios; ratio of medians ${(b / h).toFixed(3)}; target >= 0.95); A/A: a second ceiling / the first ${floor.toFixed(3)} (the noise floor)`,
  )
  console.log(
    `  StreamingSession.runBatch (each group's frames stacked by the caller, as the ceiling does) / ceiling ${pairedWhole.toFixed(3)} (ratio of medians ${(median(whole) / h).toFixed(3)})`,
  )
  const outside = (step: (tick: number) => Promise<void>) => median(own.get(step) ?? []).toFixed(1)
  console.log(
    `  µs per call of ${PER_CALL} streams outside the model's run (median): ceiling ${outside(handTick)}, the second ceiling ${outside(again.handTick)}, StreamingSession.run ${outside(batchedTick)}, runBatch ${outside(batchTick)}`,
  )
  streaming.dispose()
  ceiling.dispose()
  again.dispose()
  for (const s of oneByOne) s.dispose()
}

if (import.meta.url === `file://${process.argv[1]}`) await main()
