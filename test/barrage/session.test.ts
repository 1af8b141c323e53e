import { createRequire } from "node:module"
import { dirname, join } from "node:path"
import * as ort from "onnxruntime-node"
import { describe, expect, it } from "vitest"
import { orThrow } from "@statesaver/core"
import {
  type OrtTensor,
  type StatefulSession,
  type StreamingSession,
  createStatefulSession,
  createStreamingSession,
  ortBackend,
} from "@statesaver/onnxruntime"
import { type BadInput, errorOf, expectRefused } from "./harness.js"

// Silero VAD v5 as shipped in @ricky0123/vad-web: input [B, T], state [2, B, 128], sr -> output, stateN.
const model = join(
  dirname(createRequire(import.meta.url).resolve("@ricky0123/vad-web")),
  "silero_vad_v5.onnx",
)
const FRAME = 512
const B = 2
const runtime = ort as never
const sr = () => new ort.Tensor("int64", BigInt64Array.from([16000n]), [])
const frame = (batch: number, seed: number) =>
  new ort.Tensor(
    "float32",
    Float32Array.from({ length: batch * FRAME }, (_, i) => Math.sin((i + seed) / 7) * 0.3),
    [batch, FRAME],
  )

async function stateful(): Promise<{ s: StatefulSession; live: () => number }> {
  const backend = ortBackend({ ort: runtime })
  const session = await ort.InferenceSession.create(model)
  const s = orThrow(createStatefulSession({ session: session as never, backend, batchSize: B }))
  for (const t of Object.values(orThrow(await s.run({ input: frame(B, 1), sr: sr() })))) t.dispose()
  return { s, live: () => backend.liveTensors() }
}

async function streaming(): Promise<{ s: StreamingSession; live: () => number }> {
  const backend = ortBackend({ ort: runtime })
  const session = await ort.InferenceSession.create(model)
  const s = orThrow(createStreamingSession({ session: session as never, ort: runtime, backend }))
  const out = orThrow(
    await s.run(
      [
        { key: "a", feeds: { input: frame(1, 1) } },
        { key: "b", feeds: { input: frame(1, 2) } },
      ],
      { shared: { sr: sr() } },
    ),
  )
  for (const o of out.values()) for (const t of Object.values(o)) t.dispose()
  return { s, live: () => backend.liveTensors() }
}

const shared = () => ({ shared: { sr: sr() } })

const tensorProbe = async (x: unknown) => {
  const t = x as OrtTensor
  try {
    return `${t.type}${JSON.stringify(t.dims)}${String(t.data as Float32Array)}`
  } catch {
    return undefined
  }
}

describe("barrage: StatefulSession (Silero VAD v5 on onnxruntime-node)", () => {
  const input = frame(B, 3)
  const cases: BadInput<StatefulSession>[] = [
    {
      name: "run(null)",
      category: 1,
      call: (s) => s.run(null as never),
      tag: "StructureMismatchError",
    },
    { name: "run(5)", category: 1, call: (s) => s.run(5 as never), tag: "StructureMismatchError" },
    {
      name: 'run("feeds")',
      category: 1,
      call: (s) => s.run("feeds" as never),
      tag: "StructureMismatchError",
    },
    {
      name: "run with a raw Float32Array feed",
      category: 1,
      call: (s) => s.run({ input: new Float32Array(B * FRAME), sr: sr() } as never),
      tag: "StructureMismatchError",
      path: "input",
    },
    {
      name: "run with a null feed",
      category: 1,
      call: (s) => s.run({ input: null, sr: sr() } as never),
      tag: "StructureMismatchError",
      path: "input",
    },
    {
      name: "run without a model input",
      category: 2,
      call: (s) => s.run({ sr: sr() }),
      tag: "StructureMismatchError",
      path: "input",
      given: () => [],
    },
    {
      name: "run feeding the state by hand",
      category: 2,
      call: (s) => s.run({ input, sr: sr(), state: input }),
      tag: "StructureMismatchError",
      path: "state",
      given: () => [input],
    },
    {
      name: "run with an unknown feed",
      category: 2,
      call: (s) => s.run({ input, sr: sr(), extra: input }),
      tag: "StructureMismatchError",
      path: "extra",
      given: () => [input],
    },
    { name: "reset(null)", category: 1, call: (s) => s.reset(null as never), tag: "RowIndexError" },
    {
      name: "saver.reset(true)",
      category: 2,
      call: (s) => s.saver.reset(true as never),
      tag: "RowIndexError",
    },
    {
      name: "select(null)",
      category: 1,
      call: (s) => s.select(null as never),
      tag: "RowIndexError",
    },
    {
      name: "saver.select([2])",
      category: 2,
      call: (s) => s.saver.select([2]),
      tag: "RowIndexError",
    },
    {
      name: "save(null)",
      category: 1,
      call: (s) => s.save(null as never),
      tag: "StructureMismatchError",
    },
    {
      name: "saver.saveLeaves(null)",
      category: 1,
      call: (s) => s.saver.saveLeaves(null as never),
      tag: "StructureMismatchError",
    },
    {
      name: "restore(null)",
      category: 1,
      call: (s) => s.restore(null as never),
      tag: "SnapshotFormatError",
    },
    {
      name: "saver.restore(5)",
      category: 1,
      call: (s) => s.saver.restore(5 as never),
      tag: "SnapshotFormatError",
    },
  ]
  for (const c of cases) {
    it(`[${c.category}] ${c.name} is refused with ${c.tag}, nothing changed`, async () => {
      const { s, live } = await stateful()
      const e = await expectRefused(
        s,
        { state: async () => orThrow(await s.snapshot()), live, probe: tensorProbe },
        c,
      )
      expect(e.path === "" || e.message.includes(e.path)).toBe(true)
      s.dispose()
    })
  }

  it("[4] no call through the session or its saver changes the state while a run is in flight", async () => {
    const { s } = await stateful()
    const { s: oracle } = await stateful()
    const before = orThrow(await s.snapshot())
    const pending = s.run({ input: frame(B, 9), sr: sr() })
    const attempts: [string, () => unknown][] = [
      ["saver.reset()", () => s.saver.reset()],
      ["saver.reset([0])", () => s.saver.reset([0])],
      ["saver.select([1, 0])", () => s.saver.select([1, 0])],
      ["saver.save(state)", () => s.saver.save(s.state())],
      ["saver.restore(bytes)", () => s.saver.restore(before)],
      ["reset()", () => s.reset()],
      ["select([0, 0])", () => s.select([0, 0])],
      ["restore(bytes)", () => s.restore(before)],
      ["run(...)", () => s.run({ input: frame(B, 9), sr: sr() })],
    ]
    for (const [name, call] of attempts) {
      const e = await errorOf(call)
      expect(e._tag, name).toBe("BusyError")
    }
    const ours = orThrow(await pending)
    const theirs = orThrow(await oracle.run({ input: frame(B, 9), sr: sr() }))
    expect(ours["output"]?.data).toEqual(theirs["output"]?.data)
    expect(orThrow(await s.snapshot())).toEqual(orThrow(await oracle.snapshot()))
    expect(orThrow(s.saver.reset([0]))).toBeUndefined()
    s.dispose()
    oracle.dispose()
  })
})

describe("barrage: StreamingSession (Silero VAD v5 on onnxruntime-node)", () => {
  const cases: BadInput<StreamingSession>[] = [
    {
      name: "run(null)",
      category: 1,
      call: (s) => s.run(null as never, shared()),
      tag: "StructureMismatchError",
    },
    {
      name: "run(5)",
      category: 1,
      call: (s) => s.run(5 as never, shared()),
      tag: "StructureMismatchError",
    },
    {
      name: "run([null])",
      category: 1,
      call: (s) => s.run([null] as never, shared()),
      tag: "StructureMismatchError",
    },
    {
      name: "run with a stream whose feeds are null",
      category: 1,
      call: (s) => s.run([{ key: "a", feeds: null }] as never, shared()),
      tag: "StructureMismatchError",
    },
    {
      name: "run with a raw Float32Array stream feed",
      category: 1,
      call: (s) =>
        s.run([{ key: "a", feeds: { input: new Float32Array(FRAME) } }] as never, shared()),
      tag: "StructureMismatchError",
    },
    {
      name: "run with a NaN key",
      category: 5,
      call: (s) => s.run([{ key: Number.NaN, feeds: { input: frame(1, 4) } }], shared()),
      tag: "KeyError",
      says: ["NaN"],
    },
    {
      name: "run with the same key twice",
      category: 2,
      call: (s) =>
        s.run(
          [
            { key: "a", feeds: { input: frame(1, 4) } },
            { key: "a", feeds: { input: frame(1, 5) } },
          ],
          shared(),
        ),
      tag: "KeyError",
      says: ['"a"'],
    },
    {
      name: "store.gather(null)",
      category: 1,
      call: (s) => s.store.gather(null as never),
      tag: "KeyError",
    },
    {
      name: "reset([NaN])",
      category: 5,
      call: (s) => s.reset([Number.NaN]),
      tag: "KeyError",
      says: ["NaN"],
    },
    {
      name: "restore of a string",
      category: 1,
      call: (s) => s.restore("a", "bytes" as never),
      tag: "SnapshotFormatError",
    },
  ]
  for (const c of cases) {
    it(`[${c.category}] ${c.name} is refused with ${c.tag}, nothing changed`, async () => {
      const { s, live } = await streaming()
      await expectRefused(
        s,
        {
          state: async () => {
            const parts = [orThrow(await s.snapshot("a")), orThrow(await s.snapshot("b"))]
            return Uint8Array.from(parts.flatMap((p) => [...p]))
          },
          live,
        },
        c,
      )
      expect(s.keys()).toEqual(["a", "b"])
      s.dispose()
    })
  }

  it("[4] the store reachable from the session refuses changes while a run is in flight", async () => {
    const { s } = await streaming()
    const before = orThrow(await s.snapshot("a"))
    const pending = s.run([{ key: "a", feeds: { input: frame(1, 6) } }], { shared: { sr: sr() } })
    for (const [name, call] of [
      ["store.reset", () => s.store.reset(["a"])],
      ["store.gather", () => s.store.gather(["b"])],
      ["store.restore", () => s.store.restore("a", before)],
      ["session.reset", () => s.reset(["a"])],
    ] as const) {
      const e = await errorOf(call)
      expect(e._tag, name).toBe("BusyError")
    }
    const out = orThrow(await pending)
    for (const o of out.values()) for (const t of Object.values(o)) t.dispose()
    expect(orThrow(s.store.reset(["a"]))).toBeUndefined()
    s.dispose()
  })
})
