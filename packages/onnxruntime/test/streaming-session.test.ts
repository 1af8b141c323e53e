// Many streams through one session: batched runs equal each stream run alone.
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { type StreamKey, orThrow } from "@statesaver/core"
import fc from "fast-check"
import * as ortNode from "onnxruntime-node"
import * as ortWeb from "onnxruntime-web"
import { describe, expect, it } from "vitest"
import {
  type OrtTensor,
  type StatefulSession,
  type StreamingSession,
  createStatefulSession,
  createStreamingSession,
  ortBackend,
  sileroContext,
} from "../src/index.js"
import type { Runtime } from "./helpers/harness.js"
import { lstm2 } from "./helpers/models.js"
import { seededFloats } from "./helpers/onnx-builder.js"
import {
  FRAME as SILERO_FRAME,
  framesOf,
  frameTensor,
  vadDist,
  vadWebProbabilities,
  worstGap,
} from "./helpers/silero.js"
import { readWav } from "./helpers/wav.js"

ortWeb.env.wasm.numThreads = 1

const INPUT = 3
const HIDDEN = 8
const LEAVES = 4
const TOL = 1e-5
const model = lstm2(INPUT, HIDDEN)

const runtimes: [string, Runtime][] = [
  ["onnxruntime-web (wasm)", ortWeb as unknown as Runtime],
  ["onnxruntime-node", ortNode as unknown as Runtime],
]

/** One stream's LSTM input for `steps` steps: `[steps, 1, INPUT]`. */
const x = (ort: Runtime, steps: number, seed: number): OrtTensor =>
  new ort.Tensor("float32", seededFloats(steps * INPUT, seed), [steps, 1, INPUT])

const values = (t: OrtTensor | undefined): number[] => Array.from(t?.data as Float32Array)

function expectNear(actual: OrtTensor | undefined, expected: OrtTensor | undefined, what: string) {
  expect(actual?.dims, what).toEqual(expected?.dims)
  expect(actual?.type, what).toBe("float32")
  const e = values(expected)
  const worst = values(actual).reduce((m, v, i) => Math.max(m, Math.abs(v - (e[i] as number))), 0)
  expect(worst, what).toBeLessThanOrEqual(TOL)
}

const disposeAll = (outs: Map<StreamKey, Record<string, OrtTensor>>) => {
  for (const o of outs.values()) for (const t of Object.values(o)) t.dispose()
}

/** The state snapshots of `keys`, to prove a failed call changed nothing. */
const snapshots = (s: StreamingSession, keys: readonly StreamKey[]) =>
  Promise.all(keys.map(async (k) => orThrow(await s.snapshot(k))))

const KEYS: readonly StreamKey[] = ["alice", "bob", "carol", "dave", 7]

interface Step {
  readonly runs: StreamKey[]
  readonly leaves: StreamKey[]
  readonly steps: number
  readonly seed: number
}

const schedule = fc.array(
  fc.record({
    runs: fc.shuffledSubarray([...KEYS]),
    leaves: fc.subarray([...KEYS], { maxLength: 2 }),
    steps: fc.integer({ min: 1, max: 3 }),
    seed: fc.integer({ min: 0, max: 1_000_000 }),
  }),
  { minLength: 1, maxLength: 7 },
)

for (const [runtimeName, ort] of runtimes) {
  describe(`StreamingSession on the 2-layer LSTM, ${runtimeName}`, () => {
    it("for random interleavings of streams (joining, skipping calls, leaving), each stream's outputs equal that stream run alone with batch 1", async () => {
      const session = await ort.InferenceSession.create(model)
      await fc.assert(
        fc.asyncProperty(schedule, async (calls: Step[]) => {
          const backend = ortBackend({ ort })
          const streaming = orThrow(
            createStreamingSession({ session, ort, backend, initialSlots: 1 }),
          )
          const alone = new Map<StreamKey, StatefulSession>()
          const refBackend = ortBackend({ ort })
          for (const [c, call] of calls.entries()) {
            for (const k of call.leaves) {
              expect(orThrow(streaming.delete(k))).toBe(alone.has(k))
              alone.get(k)?.dispose()
              alone.delete(k)
            }
            if (call.runs.length === 0) continue
            const feeds = call.runs.map((k, i) => ({
              key: k,
              feeds: { X: x(ort, call.steps, call.seed + 31 * c + i) },
            }))
            const outs = orThrow(await streaming.run(feeds))
            expect([...outs.keys()]).toEqual(call.runs)
            for (const { key, feeds: f } of feeds) {
              let ref = alone.get(key)
              if (ref === undefined) {
                ref = orThrow(createStatefulSession({ session, backend: refBackend, batchSize: 1 }))
                alone.set(key, ref)
              }
              const expected = orThrow(await ref.run(f))
              const got = outs.get(key)
              expect(Object.keys(got ?? {})).toEqual(["Y"])
              expectNear(got?.["Y"], expected["Y"], `stream ${String(key)}, call ${c}`)
              expect(got?.["Y"]?.dims).toEqual([call.steps, 1, HIDDEN])
              expected["Y"]?.dispose()
            }
            disposeAll(outs)
            expect(streaming.size).toBe(alone.size)
            expect(backend.liveTensors()).toBe(LEAVES)
          }
          // The state left in each stream equals its run alone, too.
          for (const [k, ref] of alone) {
            const bytes = orThrow(await streaming.snapshot(k))
            const check = orThrow(
              createStatefulSession({ session, backend: refBackend, batchSize: 1 }),
            )
            orThrow(check.restore(bytes))
            for (const [name, t] of Object.entries(check.state()))
              expectNear(t, ref.state()[name], `state ${name} of ${String(k)}`)
            check.dispose()
            ref.dispose()
          }
          streaming.dispose()
          expect(backend.liveTensors()).toBe(0)
          expect(refBackend.liveTensors()).toBe(0)
        }),
        { seed: 20240611, numRuns: 25 },
      )
    })

    it("live ORT tensors stay at one slab per state leaf over 150 calls of changing stream sets", async () => {
      const session = await ort.InferenceSession.create(model)
      const backend = ortBackend({ ort })
      const streaming = orThrow(createStreamingSession({ session, ort, backend, capacity: 6 }))
      const counts: number[] = []
      for (let c = 0; c < 150; c++) {
        const keys = Array.from({ length: 1 + (c % 5) }, (_, i) => `s${(c * 3 + i * 7) % 11}`)
        const outs = orThrow(
          await streaming.run(keys.map((key, i) => ({ key, feeds: { X: x(ort, 1, c + i) } }))),
        )
        disposeAll(outs)
        if (c % 10 === 9) orThrow(streaming.delete(keys[0] as string))
        counts.push(backend.liveTensors())
      }
      expect(new Set(counts)).toEqual(new Set([LEAVES]))
      expect(streaming.size).toBeLessThanOrEqual(6)
      streaming.dispose()
      expect(backend.liveTensors()).toBe(0)
    })

    it("each stream's output is its rows of the run's output: a view when nothing comes before the batch axis, a copy otherwise; freeing one keeps the others", async () => {
      const session = await ort.InferenceSession.create(model)
      const streaming = orThrow(
        createStreamingSession({ session, ort, backend: ortBackend({ ort }) }),
      )
      const alone = orThrow(createStreamingSession({ session, ort, backend: ortBackend({ ort }) }))
      for (const steps of [1, 3]) {
        const feeds = ["a", "b", "c"].map((key, i) => ({
          key,
          feeds: { X: x(ort, steps, 40 + i) },
        }))
        const outs = orThrow(await streaming.run(feeds))
        const [a, b, c] = ["a", "b", "c"].map((k) => outs.get(k)?.["Y"] as OrtTensor)
        const buffers = [a, b, c].map((t) => (t?.data as Float32Array).buffer)
        // Y is [steps, batch, hidden]: one run of memory per stream only for one step.
        expect(new Set(buffers).size, `steps ${steps}`).toBe(steps === 1 ? 1 : 3)
        a?.dispose()
        for (const [i, key] of ["b", "c"].entries()) {
          const ref = orThrow(await alone.run([feeds[i + 1] as (typeof feeds)[number]]))
          expectNear(outs.get(key)?.["Y"], ref.get(key)?.["Y"], `${key}, steps ${steps}`)
          disposeAll(ref)
        }
        b?.dispose()
        c?.dispose()
      }
      streaming.dispose()
      alone.dispose()
    })
  })
}

describe("StreamingSession eviction with a fake clock (onnxruntime-node)", () => {
  it("idle and capacity evictions hand onEvict a snapshot that restores bit-exactly into another streaming session and carries on", async () => {
    const ort = ortNode as unknown as Runtime
    const session = await ort.InferenceSession.create(model)
    let now = 0
    const evicted: [StreamKey, Uint8Array, string][] = []
    const backend = ortBackend({ ort })
    const streaming = orThrow(
      createStreamingSession({
        session,
        ort,
        backend,
        capacity: 3,
        idleTtlMs: 1000,
        clock: () => now,
        onEvict: (key, bytes, reason) => {
          evicted.push([key, bytes, reason])
        },
      }),
    )
    const ref = orThrow(
      createStatefulSession({ session, backend: ortBackend({ ort }), batchSize: 1 }),
    )
    const step = async (keys: StreamKey[], seed: number) =>
      disposeAll(
        orThrow(
          await streaming.run(keys.map((key, i) => ({ key, feeds: { X: x(ort, 2, seed + i) } }))),
        ),
      )
    await step(["a", "b", "c"], 1)
    orThrow(await ref.run({ X: x(ort, 2, 1) })) // what "a" saw
    const aBefore = orThrow(await streaming.snapshot("a"))
    now = 500
    await step(["b", "c"], 10)
    now = 1200
    await step(["b", "c"], 20) // "a" was last used at 0: idle past 1000 ms
    await streaming.flush()
    expect(evicted.map(([k, , r]) => [k, r])).toEqual([["a", "idle"]])
    expect(streaming.has("a")).toBe(false)
    expect(evicted[0]?.[1]).toEqual(aBefore)

    now = 1300
    await step(["d"], 30) // b, c, d held: full
    await step(["e"], 40) // evicts the least recently used of b, c, d not in this call
    await streaming.flush()
    expect(evicted.map(([k, , r]) => [k, r])).toEqual([
      ["a", "idle"],
      ["b", "capacity"],
    ])
    expect(streaming.keys()).toEqual(["c", "d", "e"])

    const other = orThrow(
      createStreamingSession({ session, ort, backend: ortBackend({ ort }), capacity: 3 }),
    )
    orThrow(other.restore("a", evicted[0]?.[1] as Uint8Array))
    expect(orThrow(await other.snapshot("a"))).toEqual(aBefore)
    const next = x(ort, 3, 99)
    const outs = orThrow(await other.run([{ key: "a", feeds: { X: next } }]))
    const expected = orThrow(await ref.run({ X: next }))
    expectNear(outs.get("a")?.["Y"], expected["Y"], "stream a after moving")
    disposeAll(outs)
    for (const s of [streaming, other]) s.dispose()
    ref.dispose()
    expect(backend.liveTensors()).toBe(0)
  })
})

describe("StreamingSession errors (onnxruntime-node)", () => {
  const ort = ortNode as unknown as Runtime
  async function open(capacity?: number) {
    const session = await ort.InferenceSession.create(model)
    const backend = ortBackend({ ort })
    const streaming = orThrow(
      createStreamingSession({
        session,
        ort,
        backend,
        ...(capacity === undefined ? {} : { capacity }),
      }),
    )
    disposeAll(
      orThrow(
        await streaming.run([
          { key: "a", feeds: { X: x(ort, 2, 1) } },
          { key: "b", feeds: { X: x(ort, 2, 2) } },
        ]),
      ),
    )
    return { streaming, backend, before: await snapshots(streaming, ["a", "b"]) }
  }

  it("bad keys, feeds and batch sizes are typed errors naming the key and input; no stream changes and no new key is kept", async () => {
    const { streaming, backend, before } = await open(3)
    const cases: [string, Parameters<StreamingSession["run"]>[0], string, string][] = [
      [
        "duplicate key",
        [
          { key: "a", feeds: { X: x(ort, 1, 3) } },
          { key: "a", feeds: { X: x(ort, 1, 4) } },
        ],
        "KeyError",
        "",
      ],
      ["no streams", [], "KeyError", ""],
      [
        "feeds of different shapes",
        [
          { key: "a", feeds: { X: x(ort, 1, 3) } },
          { key: "new", feeds: { X: x(ort, 2, 4) } },
        ],
        "ShapeMismatchError",
        "new.X",
      ],
      [
        "a feed with two rows",
        [
          { key: "new", feeds: { X: new ort.Tensor("float32", new Float32Array(6), [1, 2, 3]) } },
          { key: "b", feeds: { X: x(ort, 1, 4) } },
        ],
        "BatchSizeMismatchError",
        "new.X",
      ],
      [
        "a missing feed",
        [
          { key: "a", feeds: { X: x(ort, 1, 3) } },
          { key: "new", feeds: {} },
        ],
        "StructureMismatchError",
        "new.X",
      ],
      [
        "a feed of a state input",
        [{ key: "b", feeds: { X: x(ort, 1, 3), "initial_h.0": x(ort, 1, 3) } }],
        "StructureMismatchError",
        'b["initial_h.0"]',
      ],
      [
        "a feed the model does not take",
        [{ key: 7, feeds: { X: x(ort, 1, 3), Z: x(ort, 1, 3) } }],
        "StructureMismatchError",
        "[7].Z",
      ],
      [
        "more streams than the capacity",
        ["a", "b", "new", "new2"].map((key) => ({ key, feeds: { X: x(ort, 1, 5) } })),
        "KeyError",
        "",
      ],
      [
        "a feed of another element type than the model declares (int32 X)",
        [
          { key: "a", feeds: { X: new ort.Tensor("int32", new Int32Array(3), [1, 1, 3]) } },
          { key: "new", feeds: { X: new ort.Tensor("int32", new Int32Array(3), [1, 1, 3]) } },
        ],
        "DTypeMismatchError",
        "a.X",
      ],
      [
        "a run that throws (X of another input size)",
        [
          { key: "a", feeds: { X: new ort.Tensor("float32", new Float32Array(5), [1, 1, 5]) } },
          { key: "new", feeds: { X: new ort.Tensor("float32", new Float32Array(5), [1, 1, 5]) } },
        ],
        "BackendError",
        "",
      ],
    ]
    for (const [what, streams, tag, path] of cases) {
      const r = await streaming.run(streams)
      expect(r._tag, what).toBe("Left")
      if (r._tag === "Right") continue
      expect(r.left._tag, what).toBe(tag)
      expect(r.left.path, what).toBe(path)
      // A run that reached the model counts as use of its held streams (eviction order).
      expect(streaming.keys().sort(), what).toEqual(["a", "b"])
      expect(await snapshots(streaming, ["a", "b"]), what).toEqual(before)
      expect(backend.liveTensors(), what).toBe(LEAVES)
    }
    const dup = await streaming.run([
      { key: "a", feeds: { X: x(ort, 1, 3) } },
      { key: "a", feeds: { X: x(ort, 1, 4) } },
    ])
    expect(dup._tag === "Left" && dup.left.message).toContain('"a" twice')
    const rows = await streaming.run([
      { key: "a", feeds: { X: new ort.Tensor("float32", new Float32Array(6), [1, 2, 3]) } },
    ])
    expect(rows._tag === "Left" && [rows.left.expected, rows.left.actual]).toEqual([1, 2])
    expect(streaming.reset(["nobody"])).toMatchObject({ _tag: "Left", left: { _tag: "KeyError" } })
    expect(await streaming.snapshot("nobody")).toMatchObject({
      _tag: "Left",
      left: { _tag: "KeyError" },
    })
    expect(orThrow(streaming.delete("nobody"))).toBe(false)
    streaming.dispose()
  })

  it("a second call while a run is in flight is a BusyError and the first run completes", async () => {
    const { streaming, before } = await open()
    const first = streaming.run([{ key: "a", feeds: { X: x(ort, 1, 3) } }])
    expect(streaming.busy).toBe(true)
    const second = await streaming.run([{ key: "b", feeds: { X: x(ort, 1, 4) } }])
    expect(second).toMatchObject({ _tag: "Left", left: { _tag: "BusyError" } })
    for (const r of [streaming.reset(["b"]), streaming.delete("b"), await streaming.snapshot("b")])
      expect(r).toMatchObject({ _tag: "Left", left: { _tag: "BusyError" } })
    const done = orThrow(await first)
    expect(done.get("a")?.["Y"]?.dims).toEqual([1, 1, HIDDEN])
    disposeAll(done)
    expect(streaming.busy).toBe(false)
    expect((await snapshots(streaming, ["b"]))[0]).toEqual(before[1])
    streaming.dispose()
  })

  it("a refused run that adds streams to a full store evicts nothing; the same call done right evicts the least recently used and starts the new stream at init", async () => {
    const session = await ort.InferenceSession.create(model)
    const backend = ortBackend({ ort })
    const evicted: StreamKey[] = []
    const streaming = orThrow(
      createStreamingSession({
        session,
        ort,
        backend,
        capacity: 2,
        onEvict: (key) => void evicted.push(key),
      }),
    )
    disposeAll(
      orThrow(
        await streaming.run([
          { key: "a", feeds: { X: x(ort, 2, 1) } },
          { key: "b", feeds: { X: x(ort, 2, 2) } },
        ]),
      ),
    )
    const before = await snapshots(streaming, ["a", "b"])
    // The model refuses the feed (another input size): the run fails after the rows are read.
    const wrong = new ort.Tensor("float32", new Float32Array(INPUT + 2), [1, 1, INPUT + 2])
    for (const call of [
      [{ key: "c", feeds: { X: wrong } }],
      [
        { key: "c", feeds: { X: wrong } },
        { key: "b", feeds: { X: wrong } },
      ],
    ]) {
      expect(await streaming.run(call)).toMatchObject({
        _tag: "Left",
        left: { _tag: "BackendError", operation: "run" },
      })
      expect(streaming.keys()).toEqual(["a", "b"])
      expect(evicted).toEqual([])
      expect(await snapshots(streaming, ["a", "b"])).toEqual(before)
    }
    // Done right: "a" (least recently used) makes room; "c" starts at init, "b" carries on.
    const outs = orThrow(
      await streaming.run([
        { key: "c", feeds: { X: x(ort, 1, 5) } },
        { key: "b", feeds: { X: x(ort, 1, 6) } },
      ]),
    )
    await streaming.store.flush()
    expect(evicted).toEqual(["a"])
    expect(streaming.keys()).toEqual(["c", "b"])
    const alone = orThrow(createStreamingSession({ session, ort, backend: ortBackend({ ort }) }))
    const c = orThrow(await alone.run([{ key: "c", feeds: { X: x(ort, 1, 5) } }]))
    expect(values(outs.get("c")?.["Y"])).toEqual(values(c.get("c")?.["Y"]))
    orThrow(alone.restore("b", before[1] as Uint8Array))
    const b = orThrow(await alone.run([{ key: "b", feeds: { X: x(ort, 1, 6) } }]))
    expectNear(outs.get("b")?.["Y"], b.get("b")?.["Y"], "b")
    for (const o of [outs, c, b]) disposeAll(o)
    alone.dispose()
    streaming.dispose()
    expect(backend.liveTensors()).toBe(0)
  })

  it("reset(keys) sets those streams back to init before their next run; others carry on", async () => {
    const { streaming } = await open()
    orThrow(streaming.reset(["a"]))
    const fresh = orThrow(
      createStreamingSession({ session: streaming.session, ort, backend: ortBackend({ ort }) }),
    )
    const feeds = { X: x(ort, 2, 9) }
    const outs = orThrow(await streaming.run([{ key: "a", feeds }]))
    const init = orThrow(await fresh.run([{ key: "a", feeds }]))
    expect(values(outs.get("a")?.["Y"])).toEqual(values(init.get("a")?.["Y"]))
    for (const o of [outs, init]) disposeAll(o)
    for (const s of [streaming, fresh]) s.dispose()
  })
})

describe("StreamingSession on Silero VAD v5 with its context window (onnxruntime-web wasm)", () => {
  const here = dirname(fileURLToPath(import.meta.url))
  const { samples, sampleRate } = readWav(join(here, "fixtures", "speech.wav"))
  const sr = (rate = sampleRate) =>
    new ortWeb.Tensor("int64", BigInt64Array.from([BigInt(rate)]), [])
  const frame = (offset: number, i: number) =>
    frameTensor(ortWeb, framesOf(samples, offset + i * SILERO_FRAME, 1))
  const session = () => ortWeb.InferenceSession.create(join(vadDist, "silero_vad_v5.onnx"))
  // Streams at different offsets into the speech, joining and leaving at different calls.
  const streams = [
    { key: "s0", offset: 0, from: 0, to: 90 },
    { key: "s1", offset: 7 * SILERO_FRAME + 100, from: 0, to: 60 },
    { key: "s2", offset: 40 * SILERO_FRAME, from: 10, to: 90 },
    { key: "s3", offset: 3 * SILERO_FRAME + 17, from: 25, to: 70 },
    { key: "s4", offset: 60 * SILERO_FRAME, from: 30, to: 90 },
  ]

  it("streams batched in one call each equal vad-web's Silero class run alone; sr is a per-call input, not stacked", async () => {
    const alone = new Map<string, number[]>()
    for (const s of streams) {
      const stream = framesOf(samples, s.offset, s.to - s.from)
      alone.set(s.key, await vadWebProbabilities("silero_vad_v5.onnx", stream))
    }
    const backend = ortBackend({ ort: ortWeb })
    const vad = orThrow(
      createStreamingSession({
        session: await session(),
        ort: ortWeb,
        backend,
        rules: [sileroContext()],
      }),
    )
    expect(vad.batchAxes).toEqual({ frame: 0, sr: null, output: 0 })
    const batched = new Map<string, number[]>(streams.map((s) => [s.key, []]))
    for (let t = 0; t < 90; t++) {
      const active = streams.filter((s) => s.from <= t && t < s.to)
      // Even calls give sr once; odd calls give an equal sr in every stream's feeds.
      const outs = orThrow(
        t % 2 === 0
          ? await vad.run(
              new Map(active.map((s) => [s.key, { frame: frame(s.offset, t - s.from) }])),
              { shared: { sr: sr() } },
            )
          : await vad.run(
              active.map((s) => ({
                key: s.key,
                feeds: { frame: frame(s.offset, t - s.from), sr: sr() },
              })),
            ),
      )
      for (const s of active) {
        const out = outs.get(s.key)?.["output"]
        expect(out?.dims).toEqual([1, 1])
        batched.get(s.key)?.push((out?.data as Float32Array)[0] as number)
      }
      disposeAll(outs)
      for (const s of streams) if (s.to === t + 1) orThrow(vad.delete(s.key))
      // The store's two slabs (the model's state and the context windows).
      expect(backend.liveTensors()).toBe(2)
    }
    expect(vad.size).toBe(0)
    for (const s of streams) {
      const a = alone.get(s.key) as number[]
      const b = batched.get(s.key) as number[]
      expect(b.length).toBe(s.to - s.from)
      // Batched rows may differ from a batch of one in the last bits of a sum.
      expect(worstGap(b, a), s.key).toBeLessThan(1e-5)
    }
    // The fixture's speech is found in the batched run too.
    expect(Math.max(...(batched.get("s0") as number[]))).toBeGreaterThan(0.9)
    vad.dispose()
    expect(backend.liveTensors()).toBe(0)
  })

  it("per-call inputs that differ between streams, are missing, or are stacked feeds given once are typed errors", async () => {
    const vad = orThrow(
      createStreamingSession({
        session: await session(),
        ort: ortWeb,
        backend: ortBackend({ ort: ortWeb }),
        rules: [sileroContext()],
      }),
    )
    const differ = await vad.run([
      { key: "a", feeds: { frame: frame(0, 0), sr: sr() } },
      { key: "b", feeds: { frame: frame(0, 1), sr: sr(8000) } },
    ])
    expect(differ).toMatchObject({
      _tag: "Left",
      left: { _tag: "StructureMismatchError", path: "b.sr" },
    })
    const missing = await vad.run([{ key: "a", feeds: { frame: frame(0, 0) } }])
    expect(missing).toMatchObject({
      _tag: "Left",
      left: { _tag: "StructureMismatchError", path: "sr" },
    })
    const once = await vad.run([{ key: "a", feeds: { sr: sr() } }], {
      shared: { frame: frame(0, 0) },
    })
    expect(once).toMatchObject({
      _tag: "Left",
      left: { _tag: "StructureMismatchError", path: "frame" },
    })
    expect(vad.size).toBe(0)
    vad.dispose()
  })
})
