// The async batcher over a StreamingSession running Silero VAD v5 (shipped in @ricky0123/vad-web),
// fed with its context window; the oracle is vad-web's own Silero class, one stream alone.
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { type StreamKey, orThrow } from "@statesaver/core"
import * as ort from "onnxruntime-web"
import { beforeAll, describe, expect, it } from "vitest"
import {
  AbortedError,
  type BatcherEvent,
  type OrtTensor,
  type StreamingSession,
  createStreamBatcher,
  createStreamingSession,
  ortBackend,
  sileroContext,
} from "../src/index.js"
import { FRAME, vadDist, vadWebProbabilities } from "./helpers/silero.js"
import { readWav } from "./helpers/wav.js"

ort.env.wasm.numThreads = 1

const here = dirname(fileURLToPath(import.meta.url))
const { samples } = readWav(join(here, "fixtures", "speech.wav"))
const sr = new ort.Tensor("int64", BigInt64Array.from([16000n]), [])

/** Samples of frame `i` of stream `s`: the fixture from the stream's own offset. */
function samplesOf(s: number, i: number): Float32Array {
  const at = ((s * 7 + i) * FRAME) % (samples.length - FRAME)
  return samples.slice(at, at + FRAME)
}

/** Frame `i` of stream `s` as the `frame` feed. */
const frame = (s: number, i: number): OrtTensor =>
  new ort.Tensor("float32", samplesOf(s, i), [1, FRAME])

let model: ort.InferenceSession
beforeAll(async () => {
  model = await ort.InferenceSession.create(join(vadDist, "silero_vad_v5.onnx"))
})

function streaming(
  extra: { capacity?: number; idleTtlMs?: number } = {},
): StreamingSession<"output"> {
  return orThrow(
    createStreamingSession({
      session: model,
      ort,
      backend: ortBackend({ ort }),
      outputs: ["output"],
      rules: [sileroContext()],
      ...extra,
    }),
  )
}

/** The oracle: stream `s` alone through vad-web's Silero class, frames 0..n-1. */
const alone = (s: number, n: number): Promise<number[]> =>
  vadWebProbabilities(
    "silero_vad_v5.onnx",
    Array.from({ length: n }, (_, i) => samplesOf(s, i)),
  )

const prob = (t: OrtTensor): number => {
  const p = (t.data as Float32Array)[0] as number
  t.dispose()
  return p
}

describe("createStreamBatcher", () => {
  it("collects concurrent pushes into one run, and each stream gets its own outputs and step", async () => {
    const events: BatcherEvent[] = []
    const session = streaming()
    const b = orThrow(
      createStreamBatcher({
        session,
        shared: { sr },
        maxBatch: 8,
        maxWaitMs: 5,
        onMetric: (e) => events.push(e),
      }),
    )
    const STREAMS = 8
    const STEPS = 4
    const got: number[][] = Array.from({ length: STREAMS }, () => [])
    for (let i = 0; i < STEPS; i++) {
      const rs = await Promise.all(
        Array.from({ length: STREAMS }, (_, s) =>
          b.push(`s${s}`, { frame: frame(s, i) }, { start: i === 0 }),
        ),
      )
      for (const [s, r] of rs.entries()) {
        const { outputs, step } = orThrow(r)
        expect(step).toBe(i)
        got[s]?.push(prob(outputs.output))
      }
    }
    const batches = events.filter((e) => e.type === "batch")
    expect(batches.map((e) => e.type === "batch" && e.size)).toEqual([8, 8, 8, 8])
    for (let s = 0; s < STREAMS; s++) {
      const want = await alone(s, STEPS)
      for (let i = 0; i < STEPS; i++) expect(got[s]?.[i]).toBeCloseTo(want[i] as number, 5)
    }
    orThrow(await b.close())
  })

  it("runs a full batch at once, without waiting for maxWaitMs", async () => {
    const session = streaming()
    const b = orThrow(
      createStreamBatcher({ session, shared: { sr }, maxBatch: 2, maxWaitMs: 600_000 }),
    )
    // With the wait honoured this would hang past the test's timeout.
    const rs = await Promise.all(
      [0, 1].map((s) => b.push(`full${s}`, { frame: frame(s, 0) }, { start: true })),
    )
    expect(rs.map((r) => orThrow(r).step)).toEqual([0, 0])
    for (const r of rs) orThrow(r).outputs.output.dispose()
    orThrow(await b.close())
  })

  it("runs a stream's frames in order, never two in one run", async () => {
    const events: BatcherEvent[] = []
    const b = orThrow(
      createStreamBatcher({
        session: streaming(),
        shared: { sr },
        onMetric: (e) => events.push(e),
      }),
    )
    const rs = await Promise.all(
      Array.from({ length: 5 }, (_, i) =>
        b.push("one", { frame: frame(3, i) }, { start: i === 0 }),
      ),
    )
    const want = await alone(3, 5)
    for (const [i, r] of rs.entries()) {
      const { outputs, step } = orThrow(r)
      expect(step).toBe(i)
      expect(prob(outputs.output)).toBeCloseTo(want[i] as number, 5)
    }
    const sizes = events.filter((e) => e.type === "batch").map((e) => e.type === "batch" && e.size)
    expect(sizes).toEqual([1, 1, 1, 1, 1])
  })

  it("an unknown stream without start is a KeyError; an evicted one too (its state is gone)", async () => {
    const b = orThrow(createStreamBatcher({ session: streaming({ capacity: 1 }), shared: { sr } }))
    const r = await b.push("nobody", { frame: frame(0, 0) })
    expect(r._tag === "Left" && [r.left._tag, r.left.path]).toEqual(["KeyError", "nobody"])
    orThrow(await b.push("a", { frame: frame(0, 0) }, { start: true }))
    orThrow(await b.push("b", { frame: frame(1, 0) }, { start: true })) // evicts "a"
    const again = await b.push("a", { frame: frame(0, 1) })
    expect(again._tag === "Left" && again.left._tag).toBe("KeyError")
    expect(again._tag === "Left" && again.left.detail).toMatch(/evicted/)
  })

  it("one stream's bad feed fails only its own push, never its batch-mates", async () => {
    const session = streaming()
    const b = orThrow(createStreamBatcher({ session, shared: { sr }, maxWaitMs: 5 }))
    const [good1, wrong, good2] = await Promise.all([
      b.push("g1", { frame: frame(1, 0) }, { start: true }),
      b.push("w", { audio: frame(0, 0) }, { start: true }),
      b.push("g2", { frame: frame(2, 0) }, { start: true }),
    ])
    expect(wrong?._tag === "Left" && [wrong.left._tag, wrong.left.path]).toEqual([
      "StructureMismatchError",
      "w.audio",
    ])
    expect(prob(orThrow(good1 as NonNullable<typeof good1>).outputs.output)).toBeCloseTo(
      (await alone(1, 1))[0] as number,
      5,
    )
    expect(good2?._tag).toBe("Right")
    // The failed stream did not advance: its next frame is still step 0.
    const retry = orThrow(await b.push("w", { frame: frame(4, 0) }, { start: true }))
    expect(retry.step).toBe(0)
    expect(prob(retry.outputs.output)).toBeCloseTo((await alone(4, 1))[0] as number, 5)
  })

  it("a full queue refuses with a BusyError (backpressure); an aborted push is removed before it runs", async () => {
    const b = orThrow(createStreamBatcher({ session: streaming(), shared: { sr }, maxQueue: 3 }))
    const ctl = new AbortController()
    const pending = [
      b.push("q1", { frame: frame(0, 0) }, { start: true }),
      b.push("q2", { frame: frame(1, 0) }, { start: true, signal: ctl.signal }),
      b.push("q3", { frame: frame(2, 0) }, { start: true }),
    ]
    const full = await b.push("q4", { frame: frame(3, 0) }, { start: true })
    expect(full._tag === "Left" && full.left._tag).toBe("BusyError")
    ctl.abort("client went away")
    const [r1, r2, r3] = await Promise.all(pending)
    expect(r1?._tag).toBe("Right")
    expect(r3?._tag).toBe("Right")
    const e = r2?._tag === "Left" ? r2.left : undefined
    expect(e).toBeInstanceOf(AbortedError)
    expect(e?.actual).toBe("client went away")
    // q2 never ran: it is unknown.
    const q2 = await b.push("q2", { frame: frame(1, 0) })
    expect(q2._tag === "Left" && q2.left._tag).toBe("KeyError")
  })

  it("reset, delete and snapshot go through the stream's order, with no BusyError to handle", async () => {
    const session = streaming()
    const b = orThrow(createStreamBatcher({ session, shared: { sr } }))
    const p0 = b.push("r", { frame: frame(5, 0) }, { start: true })
    const p1 = b.push("r", { frame: frame(5, 1) })
    const snap = b.snapshot("r")
    const reset = b.reset("r")
    const p2 = b.push("r", { frame: frame(5, 0) })
    const del = b.delete("r")
    const after = b.push("r", { frame: frame(5, 1) })
    const [r0, r1, s, z, r2, d, a] = await Promise.all([p0, p1, snap, reset, p2, del, after])
    const want = await alone(5, 2)
    expect(prob(orThrow(r0 as NonNullable<typeof r0>).outputs.output)).toBeCloseTo(
      want[0] as number,
      5,
    )
    expect(orThrow(r1 as NonNullable<typeof r1>).step).toBe(1)
    expect(s?._tag).toBe("Right")
    expect(z).toEqual({ _tag: "Right", right: undefined })
    const again = orThrow(r2 as NonNullable<typeof r2>)
    expect(again.step).toBe(0)
    expect(prob(again.outputs.output)).toBeCloseTo(want[0] as number, 5)
    expect(d).toEqual({ _tag: "Right", right: true })
    expect(a._tag === "Left" && a.left._tag).toBe("KeyError")
    expect(session.has("r")).toBe(false)
  })

  it("close drains the queue, then refuses pushes with a DisposedError", async () => {
    const b = orThrow(createStreamBatcher({ session: streaming(), shared: { sr } }))
    const pending = Array.from({ length: 6 }, (_, s) =>
      b.push(`c${s}`, { frame: frame(s, 0) }, { start: true }),
    )
    const closed = b.close()
    const rs = await Promise.all(pending)
    expect(rs.every((r) => r._tag === "Right")).toBe(true)
    expect(await closed).toEqual({ _tag: "Right", right: undefined })
    const late = await b.push("late", { frame: frame(0, 0) }, { start: true })
    expect(late._tag === "Left" && late.left._tag).toBe("DisposedError")
  })

  it("evicts idle streams on its own timer on a quiet server", async () => {
    const session = streaming({ idleTtlMs: 20 })
    const b = orThrow(createStreamBatcher({ session, shared: { sr }, sweepEveryMs: 10 }))
    orThrow(await b.push("idle", { frame: frame(0, 0) }, { start: true }))
    expect(session.has("idle")).toBe(true)
    await new Promise((r) => setTimeout(r, 120))
    expect(session.keys()).toEqual([])
    orThrow(await b.close())
  })

  it("checks its options: each bad one is an OptionError naming it", () => {
    const session = streaming()
    const cases: [string, object][] = [
      ["session", { session: {} }],
      ["maxBatch", { session, maxBatch: 0 }],
      ["maxWaitMs", { session, maxWaitMs: -1 }],
      ["maxQueue", { session, maxQueue: 1.5 }],
      ["sweepEveryMs", { session, sweepEveryMs: 0 }],
      ["onMetric", { session, onMetric: "x" }],
      ["tier", { session, tier: { attach: () => undefined } }],
    ]
    for (const [path, options] of cases) {
      const r = createStreamBatcher(options as never)
      expect(r._tag === "Left" && [r.left._tag, r.left.path]).toEqual(["OptionError", path])
    }
  })

  it("refuses a bad key or push option with a typed error", async () => {
    const b = orThrow(createStreamBatcher({ session: streaming(), shared: { sr } }))
    const k = await b.push(Number.NaN as StreamKey, { frame: frame(0, 0) })
    expect(k._tag === "Left" && k.left._tag).toBe("KeyError")
    const o = await b.push("x", { frame: frame(0, 0) }, { start: "yes" as never })
    expect(o._tag === "Left" && [o.left._tag, o.left.path]).toEqual(["OptionError", "start"])
  })
})
