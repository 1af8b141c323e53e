// Silero VAD (v5 and legacy, shipped in @ricky0123/vad-web) over committed espeak-ng speech.
import { createRequire } from "node:module"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { orThrow } from "@statesaver/core"
import * as ortWeb from "onnxruntime-web"
import { describe, expect, it } from "vitest"
import { type OrtTensor, createStatefulSession, ortBackend } from "../src/index.js"
import { readWav } from "./helpers/wav.js"

ortWeb.env.wasm.numThreads = 1

const vadDist = dirname(createRequire(import.meta.url).resolve("@ricky0123/vad-web"))
const here = dirname(fileURLToPath(import.meta.url))
const { samples, sampleRate } = readWav(join(here, "fixtures", "speech.wav"))
const FRAME = 512
const sr = () => new ortWeb.Tensor("int64", BigInt64Array.from([BigInt(sampleRate)]), [])

/** Frames of `FRAME` samples of the fixture starting at `offset` (zero-padded at the end). */
function frames(offset: number, count: number): Float32Array[] {
  return Array.from({ length: count }, (_, i) => {
    const f = new Float32Array(FRAME)
    f.set(samples.subarray(offset + i * FRAME, Math.min(samples.length, offset + (i + 1) * FRAME)))
    return f
  })
}

const session = (file: string) => ortWeb.InferenceSession.create(join(vadDist, file))

describe("Silero VAD v5 through StatefulSession", () => {
  it("the fixture is 16 kHz speech with silence around it", () => {
    expect(sampleRate).toBe(16000)
    expect(samples.length).toBeGreaterThan(3 * 16000)
  })

  it("per-frame speech probabilities equal a hand-written loop feeding stateN back into state", async () => {
    const s = await session("silero_vad_v5.onnx")
    const backend = ortBackend({ ort: ortWeb })
    const vad = orThrow(createStatefulSession({ session: s, backend, batchSize: 1 }))
    expect(vad.pairs).toEqual([{ input: "state", output: "stateN" }])
    expect(vad.state()["state"]?.dims).toEqual([2, 1, 128])
    const all = frames(0, Math.floor(samples.length / FRAME))
    const ours: number[] = []
    for (const f of all) {
      const out = orThrow(
        await vad.run({ input: new ortWeb.Tensor("float32", f, [1, FRAME]), sr: sr() }),
      )
      ours.push((out["output"]?.data as Float32Array)[0] as number)
      out["output"]?.dispose()
    }
    let state: OrtTensor = new ortWeb.Tensor("float32", new Float32Array(2 * 128), [2, 1, 128])
    const hand: number[] = []
    for (const f of all) {
      const out = (await s.run({
        input: new ortWeb.Tensor("float32", f, [1, FRAME]),
        state,
        sr: sr(),
      })) as Record<string, OrtTensor>
      hand.push((out["output"]?.data as Float32Array)[0] as number)
      state = out["stateN"] as OrtTensor
    }
    expect(ours).toEqual(hand)
    // The speech is found: some frames well above 0.5, the leading silence well below.
    expect(Math.max(...ours)).toBeGreaterThan(0.9)
    expect(Math.max(...ours.slice(0, 10))).toBeLessThan(0.2)
    expect(backend.liveTensors()).toBe(1)
    vad.dispose()
  })

  it("three streams batched in one session equal the same streams run one by one", async () => {
    const s = await session("silero_vad_v5.onnx")
    const offsets = [0, 7 * FRAME + 100, 40 * FRAME]
    const count = 120
    const streams = offsets.map((o) => frames(o, count))
    const alone: number[][] = []
    for (const stream of streams) {
      const vad = orThrow(
        createStatefulSession({ session: s, backend: ortBackend({ ort: ortWeb }), batchSize: 1 }),
      )
      const probs: number[] = []
      for (const f of stream) {
        const out = orThrow(
          await vad.run({ input: new ortWeb.Tensor("float32", f, [1, FRAME]), sr: sr() }),
        )
        probs.push((out["output"]?.data as Float32Array)[0] as number)
      }
      alone.push(probs)
      vad.dispose()
    }
    const vad = orThrow(
      createStatefulSession({ session: s, backend: ortBackend({ ort: ortWeb }), batchSize: 3 }),
    )
    const batched: number[][] = [[], [], []]
    for (let t = 0; t < count; t++) {
      const input = new Float32Array(3 * FRAME)
      streams.forEach((stream, b) => input.set(stream[t] as Float32Array, b * FRAME))
      const out = orThrow(
        await vad.run({ input: new ortWeb.Tensor("float32", input, [3, FRAME]), sr: sr() }),
      )
      const p = out["output"]?.data as Float32Array
      for (let b = 0; b < 3; b++) batched[b]?.push(p[b] as number)
    }
    for (let b = 0; b < 3; b++) {
      const worst = Math.max(
        ...(batched[b] as number[]).map((p, t) => Math.abs(p - (alone[b]?.[t] as number))),
      )
      expect(worst, `stream ${b}`).toBeLessThan(1e-4)
    }
    vad.dispose()
  })
})

describe("Silero VAD legacy (h, c → hn, cn) through StatefulSession", () => {
  it("pairs hn/cn with h/c on the named batch dim and matches a hand-written loop", async () => {
    const s = await session("silero_vad_legacy.onnx")
    const vad = orThrow(
      createStatefulSession({ session: s, backend: ortBackend({ ort: ortWeb }), batchSize: 1 }),
    )
    expect(vad.pairs).toEqual([
      { input: "h", output: "hn" },
      { input: "c", output: "cn" },
    ])
    expect(vad.saver.spec.leaves.map((l) => l.spec.shape)).toEqual([
      [2, "batch", 64],
      [2, "batch", 64],
    ])
    let h: OrtTensor = new ortWeb.Tensor("float32", new Float32Array(128), [2, 1, 64])
    let c: OrtTensor = new ortWeb.Tensor("float32", new Float32Array(128), [2, 1, 64])
    for (const f of frames(30 * FRAME, 40)) {
      const input = new ortWeb.Tensor("float32", f, [1, FRAME])
      const ours = orThrow(await vad.run({ input, sr: sr() }))
      const hand = (await s.run({ input, sr: sr(), h, c })) as Record<string, OrtTensor>
      h = hand["hn"] as OrtTensor
      c = hand["cn"] as OrtTensor
      expect(Array.from(ours["output"]?.data as Float32Array)).toEqual(
        Array.from(hand["output"]?.data as Float32Array),
      )
    }
    vad.dispose()
  })
})
