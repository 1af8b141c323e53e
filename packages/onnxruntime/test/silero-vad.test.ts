// Silero VAD (v5 and legacy, shipped in @ricky0123/vad-web) over committed espeak-ng speech.
// v5 is fed as its authors feed it (`sileroContext()`: the previous frame's last 64 samples ⧺
// the frame) and compared with vad-web's own Silero class; legacy (h, c) has no context.
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { orThrow } from "@statesaver/core"
import * as ortWeb from "onnxruntime-web"
import { describe, expect, it } from "vitest"
import { type OrtTensor, createStatefulSession, ortBackend, sileroContext } from "../src/index.js"
import {
  FRAME,
  framesOf,
  frameTensor,
  vadDist,
  vadWebProbabilities,
  worstGap,
} from "./helpers/silero.js"
import { readWav } from "./helpers/wav.js"

ortWeb.env.wasm.numThreads = 1

const here = dirname(fileURLToPath(import.meta.url))
const { samples, sampleRate } = readWav(join(here, "fixtures", "speech.wav"))
const sr = () => new ortWeb.Tensor("int64", BigInt64Array.from([BigInt(sampleRate)]), [])
const frames = (offset: number, count: number) => framesOf(samples, offset, count)

const session = (file: string) => ortWeb.InferenceSession.create(join(vadDist, file))

describe("Silero VAD v5 through StatefulSession, with its context window", () => {
  it("the fixture is 16 kHz speech with silence around it", () => {
    expect(sampleRate).toBe(16000)
    expect(samples.length).toBeGreaterThan(3 * 16000)
  })

  it("per-frame speech probabilities equal vad-web's Silero class frame for frame", async () => {
    const all = frames(0, Math.floor(samples.length / FRAME))
    const expected = await vadWebProbabilities("silero_vad_v5.onnx", all)
    const backend = ortBackend({ ort: ortWeb })
    const vad = orThrow(
      createStatefulSession({
        session: await session("silero_vad_v5.onnx"),
        backend,
        batchSize: 1,
        rules: [sileroContext()],
      }),
    )
    expect(vad.pairs).toEqual([{ input: "state", output: "stateN" }])
    expect(vad.state()["state"]?.dims).toEqual([2, 1, 128])
    expect(vad.state()["context"]?.dims).toEqual([1, 64])
    const ours: number[] = []
    for (const f of all) {
      const out = orThrow(await vad.run({ frame: frameTensor(ortWeb, [f]), sr: sr() }))
      ours.push((out["output"]?.data as Float32Array)[0] as number)
      out["output"]?.dispose()
    }
    expect(ours).toEqual(expected)
    // The speech is found: some frames well above 0.5, the leading silence well below.
    expect(Math.max(...ours)).toBeGreaterThan(0.9)
    expect(Math.max(...ours.slice(0, 10))).toBeLessThan(0.2)
    expect(backend.liveTensors()).toBe(2)
    vad.dispose()
    expect(backend.liveTensors()).toBe(0)
  })

  it("three streams batched in one session (batch 3) each equal vad-web's Silero class run alone", async () => {
    const offsets = [0, 7 * FRAME + 100, 40 * FRAME]
    const count = 120
    const streams = offsets.map((o) => frames(o, count))
    const alone: number[][] = []
    for (const stream of streams)
      alone.push(await vadWebProbabilities("silero_vad_v5.onnx", stream))
    const vad = orThrow(
      createStatefulSession({
        session: await session("silero_vad_v5.onnx"),
        backend: ortBackend({ ort: ortWeb }),
        batchSize: 3,
        rules: [sileroContext()],
      }),
    )
    const batched: number[][] = [[], [], []]
    for (let t = 0; t < count; t++) {
      const rows = streams.map((stream) => stream[t] as Float32Array)
      const out = orThrow(await vad.run({ frame: frameTensor(ortWeb, rows), sr: sr() }))
      expect(out["output"]?.dims).toEqual([3, 1])
      const p = out["output"]?.data as Float32Array
      for (let b = 0; b < 3; b++) batched[b]?.push(p[b] as number)
      out["output"]?.dispose()
    }
    for (let b = 0; b < 3; b++) {
      expect(batched[b]?.length, `stream ${b}`).toBe(count)
      // Batched rows may differ from a batch of one in the last bits of a sum.
      expect(worstGap(batched[b] as number[], alone[b] as number[]), `stream ${b}`).toBeLessThan(
        1e-5,
      )
    }
    // Each row carries its own context: rows 1 and 2 hold the tails of their own last frames.
    for (let b = 0; b < 3; b++) {
      expect(
        Array.from((vad.state()["context"]?.data as Float32Array).subarray(b * 64, (b + 1) * 64)),
      ).toEqual(Array.from((streams[b]?.[count - 1] as Float32Array).subarray(FRAME - 64)))
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
