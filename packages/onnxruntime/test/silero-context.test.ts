// Silero VAD v5 and v6 fed as their authors feed them: 64 samples of context ⧺ the 512-sample
// frame. The oracle is @ricky0123/vad-web's own `Silero` model class (dist/models/silero.js),
// run frame by frame on one stream: none of statesaver's code is in it.
import { readFileSync } from "node:fs"
import { createRequire } from "node:module"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { type StreamKey, decodeSnapshot, orThrow } from "@statesaver/core"
import * as ortWeb from "onnxruntime-web"
import { describe, expect, it } from "vitest"
import {
  type OrtTensor,
  createStatefulSession,
  createStreamingSession,
  ortBackend,
  sileroContext,
} from "../src/index.js"
import { readWav } from "./helpers/wav.js"

ortWeb.env.wasm.numThreads = 1

const require = createRequire(import.meta.url)
const vadDist = dirname(require.resolve("@ricky0123/vad-web"))
const here = dirname(fileURLToPath(import.meta.url))
const { samples } = readWav(join(here, "fixtures", "speech.wav"))
const FRAME = 512

interface VadWebSilero {
  process(frame: Float32Array): Promise<{ isSpeech: number }>
  reset_state(): void
}
const { Silero } = require(join(vadDist, "models", "silero.js")) as {
  Silero: { new: (ort: unknown, fetch: () => Promise<ArrayBuffer>) => Promise<VadWebSilero> }
}

const modelBytes = (file: string): Uint8Array => readFileSync(join(vadDist, file))
const session = (file: string) => ortWeb.InferenceSession.create(modelBytes(file))
const sr = () => new ortWeb.Tensor("int64", BigInt64Array.from([16000n]), [1])

/** `count` frames of the fixture from `offset` (zero-padded past the end). */
function frames(offset: number, count: number): Float32Array[] {
  return Array.from({ length: count }, (_, i) => {
    const f = new Float32Array(FRAME)
    f.set(samples.subarray(offset + i * FRAME, Math.min(samples.length, offset + (i + 1) * FRAME)))
    return f
  })
}

/** Speech probabilities from vad-web's Silero class, one fresh instance per stream. */
async function oracle(file: string, stream: readonly Float32Array[]): Promise<number[]> {
  const bytes = modelBytes(file)
  const model = await Silero.new(ortWeb, async () => Uint8Array.from(bytes).buffer)
  const out: number[] = []
  // vad-web keeps a view-free copy of the frame tail; pass copies so nothing is shared.
  for (const f of stream) out.push((await model.process(f.slice())).isSpeech)
  return out
}

const frameTensor = (rows: readonly Float32Array[]) => {
  const data = new Float32Array(rows.length * FRAME)
  rows.forEach((r, i) => data.set(r, i * FRAME))
  return new ortWeb.Tensor("float32", data, [rows.length, FRAME])
}

describe.each(["silero_vad_v5.onnx", "silero_vad_v6.onnx"])(
  "%s with its context window",
  (file) => {
    const all = frames(0, Math.floor(samples.length / FRAME))

    it("a StatefulSession with sileroContext() equals vad-web's Silero class frame for frame", async () => {
      const expected = await oracle(file, all)
      const backend = ortBackend({ ort: ortWeb })
      const vad = orThrow(
        createStatefulSession({
          session: await session(file),
          backend,
          batchSize: 1,
          outputs: ["output"],
          rules: [sileroContext()],
        }),
      )
      expect(Object.keys(vad.state()).sort()).toEqual(["context", "state"])
      const ours: number[] = []
      for (const f of all) {
        const out = orThrow(await vad.run({ frame: frameTensor([f]), sr: sr() }))
        ours.push((out.output.data as Float32Array)[0] as number)
        out.output.dispose()
      }
      expect(ours).toEqual(expected)
      // The context is the previous frame's last 64 samples.
      expect(Array.from(vad.state()["context"]?.data as Float32Array)).toEqual(
        Array.from((all[all.length - 1] as Float32Array).subarray(FRAME - 64)),
      )
      expect(backend.liveTensors()).toBe(2)
      vad.dispose()
      expect(backend.liveTensors()).toBe(0)
    })

    it("without the context the probabilities differ (the omission this rule fixes)", async () => {
      const expected = await oracle(file, all.slice(0, 200))
      const s = await session(file)
      let state: OrtTensor = new ortWeb.Tensor("float32", new Float32Array(256), [2, 1, 128])
      let worst = 0
      for (let t = 0; t < 200; t++) {
        const out = (await s.run({
          input: frameTensor([all[t] as Float32Array]),
          state,
          sr: sr(),
        })) as Record<string, OrtTensor>
        const p = (out["output"]?.data as Float32Array)[0] as number
        worst = Math.max(worst, Math.abs(p - (expected[t] as number)))
        state = out["stateN"] as OrtTensor
      }
      expect(worst).toBeGreaterThan(1e-3)
    })
  },
)

describe("Silero v5 streams with context through a StreamingSession", () => {
  const file = "silero_vad_v5.onnx"

  const count = 90
  const starts: Record<string, number> = { a: 0, b: 5, c: 30 } // the step each joins at
  const offsets: Record<string, number> = { a: 0, b: 9 * FRAME + 37, c: 41 * FRAME }
  const streams = Object.fromEntries(Object.entries(offsets).map(([k, o]) => [k, frames(o, count)]))
  const active = (step: number) =>
    Object.keys(streams).filter((k) => {
      const t = step - (starts[k] as number)
      return t >= 0 && t < count
    })
  const frameOf = (k: string, step: number) =>
    frameTensor([streams[k]?.[step - (starts[k] as number)] as Float32Array])
  const expectedAll = async () => {
    const expected: Record<string, number[]> = {}
    for (const k of Object.keys(streams)) expected[k] = await oracle(file, streams[k] ?? [])
    return expected
  }

  it.each(["run", "runBatch"] as const)(
    "streams joining late and leaving, batched in one run per step (%s), each equal vad-web run alone",
    async (how) => {
      const expected = await expectedAll()
      const backend = ortBackend({ ort: ortWeb })
      const vad = orThrow(
        createStreamingSession({
          session: await session(file),
          ort: ortWeb,
          backend,
          capacity: 3,
          outputs: ["output"],
          rules: [sileroContext()],
        }),
      )
      const got: Record<string, number[]> = { a: [], b: [], c: [] }
      for (let step = 0; step < count + 30; step++) {
        const batch = active(step)
        if (batch.length === 0) continue
        if (how === "runBatch") {
          // The frames stacked by the caller, one row per key, and `sr` among the feeds.
          const frame = frameTensor(
            batch.map((k) => streams[k]?.[step - (starts[k] as number)] as Float32Array),
          )
          const { output } = orThrow(await vad.runBatch(batch, { frame, sr: sr() }))
          expect(output.dims).toEqual([batch.length, 1])
          for (const [i, k] of batch.entries())
            got[k]?.push((output.data as Float32Array)[i] as number)
          output.dispose()
        } else {
          const outs = orThrow(
            await vad.run(
              batch.map((k) => ({ key: k, feeds: { frame: frameOf(k, step) } })),
              { shared: { sr: sr() } },
            ),
          )
          for (const [k, out] of outs) {
            got[k as string]?.push((out.output.data as Float32Array)[0] as number)
            out.output.dispose()
          }
        }
        // A stream that has ended leaves.
        for (const k of Object.keys(streams)) {
          if (step - (starts[k] as number) === count - 1) orThrow(vad.delete(k))
        }
      }
      for (const k of Object.keys(streams)) {
        const e = expected[k] as number[]
        expect(got[k]?.length, k).toBe(e.length)
        // Batched rows may differ from a batch of one in the last bits of a sum.
        const worst = Math.max(
          ...(got[k] as number[]).map((p, t) => Math.abs(p - (e[t] as number))),
        )
        expect(worst, k).toBeLessThan(1e-5)
      }
      expect(vad.size).toBe(0)
      vad.dispose()
      expect(backend.liveTensors()).toBe(0)
    },
  )

  it("streams evicted to bytes every step and restored carry their context: each equals vad-web", async () => {
    const expected = await expectedAll()
    const evicted = new Map<StreamKey, Uint8Array>()
    const vad = orThrow(
      createStreamingSession({
        session: await session(file),
        ort: ortWeb,
        backend: ortBackend({ ort: ortWeb }),
        capacity: 1, // one slot: each run of another stream evicts the last one
        outputs: ["output"],
        rules: [sileroContext()],
        onEvict: (key, bytes) => {
          evicted.set(key, bytes)
        },
      }),
    )
    const got: Record<string, number[]> = { a: [], b: [], c: [] }
    let restores = 0
    for (let step = 0; step < count + 30; step++) {
      for (const k of active(step)) {
        await vad.flush()
        const bytes = evicted.get(k)
        if (bytes !== undefined) {
          // The snapshot holds the context beside the model state.
          const snap = orThrow(decodeSnapshot(bytes))
          expect(snap.leaves.map((l) => l.path)).toEqual(["context", "state"])
          orThrow(vad.restore(k, bytes))
          evicted.delete(k)
          restores++
        }
        const outs = orThrow(
          await vad.run([{ key: k, feeds: { frame: frameOf(k, step) } }], {
            shared: { sr: sr() },
          }),
        )
        const out = outs.get(k)
        got[k]?.push((out?.output.data as Float32Array)[0] as number)
        out?.output.dispose()
      }
    }
    expect(restores).toBeGreaterThan(100)
    for (const k of Object.keys(streams)) expect(got[k], k).toEqual(expected[k])
    vad.dispose()
  })

  it("reset zeroes a stream's context with its state: the stream starts over like a new one", async () => {
    const stream = frames(11 * FRAME, 40)
    const expected = await oracle(file, stream)
    const vad = orThrow(
      createStreamingSession({
        session: await session(file),
        ort: ortWeb,
        backend: ortBackend({ ort: ortWeb }),
        capacity: 4,
        outputs: ["output"],
        rules: [sileroContext()],
      }),
    )
    const run = async (f: Float32Array) => {
      const outs = orThrow(
        await vad.run([{ key: "s", feeds: { frame: frameTensor([f]) } }], { shared: { sr: sr() } }),
      )
      const out = outs.get("s")
      const p = (out?.output.data as Float32Array)[0] as number
      out?.output.dispose()
      return p
    }
    for (const f of frames(0, 25)) await run(f)
    orThrow(vad.reset(["s"]))
    const after: number[] = []
    for (const f of stream) after.push(await run(f))
    expect(after).toEqual(expected)
    vad.dispose()
  })

  it("refuses a hand-fed input, a missing frame and a wrong frame, with the state unchanged", async () => {
    const vad = orThrow(
      createStreamingSession({
        session: await session(file),
        ort: ortWeb,
        backend: ortBackend({ ort: ortWeb }),
        capacity: 4,
        outputs: ["output"],
        rules: [sileroContext()],
      }),
    )
    const first = frames(20 * FRAME, 1)
    orThrow(
      await vad.run([{ key: "s", feeds: { frame: frameTensor(first) } }], { shared: { sr: sr() } }),
    )
    const before = orThrow(await vad.snapshot("s"))
    const fed = await vad.run(
      [
        {
          key: "s",
          feeds: { input: new ortWeb.Tensor("float32", new Float32Array(576), [1, 576]) },
        },
      ],
      { shared: { sr: sr() } },
    )
    expect(fed).toMatchObject({
      _tag: "Left",
      left: { _tag: "StructureMismatchError", path: "s.input" },
    })
    expect((fed as { left: Error }).left.message).toContain("rule sileroContext computes it")
    const missing = await vad.run([{ key: "s", feeds: {} }], { shared: { sr: sr() } })
    expect(missing).toMatchObject({ _tag: "Left", left: { _tag: "StructureMismatchError" } })
    const short = await vad.run(
      [
        {
          key: "s",
          feeds: { frame: new ortWeb.Tensor("float32", new Float32Array(500), [1, 500]) },
        },
      ],
      { shared: { sr: sr() } },
    )
    expect(short).toMatchObject({
      _tag: "Left",
      left: { _tag: "ShapeMismatchError", path: "frame", actual: [1, 500] },
    })
    // A new key refused mid-call is not left behind.
    const stranger = await vad.run(
      [{ key: "new", feeds: { frame: new ortWeb.Tensor("float32", new Float32Array(8), [1, 8]) } }],
      { shared: { sr: sr() } },
    )
    expect(stranger).toMatchObject({ _tag: "Left", left: { _tag: "ShapeMismatchError" } })
    expect(vad.has("new")).toBe(false)
    expect(orThrow(await vad.snapshot("s"))).toEqual(before)
    vad.dispose()
  })
})
