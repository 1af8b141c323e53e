// The public additions of input rules, KV caches, crossed pairs and snapshot metadata called as a
// hostile user would: nulls, wrong types, NaN, out of range, misbehaving rules, calls during a
// run. Each is a typed error naming what is wrong, and the state is exactly as it was.
import {
  type HostTensor,
  RowIndexError,
  createStateSaver,
  hostBackend,
  orThrow,
} from "@statesaver/core"
import type * as common from "onnxruntime-common"
import * as ortNode from "onnxruntime-node"
import { describe, expect, it } from "vitest"
import {
  type InputRule,
  createStatefulSession,
  createStreamingSession,
  ortBackend,
  pairStateNames,
  sileroContext,
} from "../src/index.js"
import { fixedCacheDecoder, tinyDecoderConfig } from "./helpers/decoders.js"
import type { Runtime } from "./helpers/harness.js"
import { counting } from "./helpers/rules.js"
import { modelBytes } from "./helpers/silero.js"

const ort = ortNode as unknown as Runtime
const FRAME = 512

const left = (r: unknown) => {
  const e = r as { _tag: string; left?: unknown }
  expect(e._tag, "a Left").toBe("Left")
  return e.left as { _tag: string; path: string; message: string }
}

const silero = () => ort.InferenceSession.create(modelBytes("silero_vad_v5.onnx"))
const frame = (rows = 1, width = FRAME) =>
  new ort.Tensor("float32", new Float32Array(rows * width).fill(0.01), [rows, width])
const sr = () => new ort.Tensor("int64", BigInt64Array.from([16000n]), [1])

describe("sileroContext refuses bad options with an OptionError naming each", () => {
  it.each([
    [null, "options"],
    ["fast", "options"],
    [{ context: Number.NaN }, "context"],
    [{ context: -1 }, "context"],
    [{ context: 0 }, "context"],
    [{ frame: 1.5 }, "frame"],
    [{ frame: Number.POSITIVE_INFINITY }, "frame"],
    [{ context: 600 }, "context"],
    [{ input: "" }, "input"],
    [{ feed: 3 }, "feed"],
  ])("%j", (options, path) => {
    expect(() => sileroContext(options as never)).toThrow(
      expect.objectContaining({ _tag: "OptionError", path }),
    )
  })
})

describe("the rules option is checked when the session is created", () => {
  const derive = () => ({})
  const next = () => ({})
  it.each([
    ["not an array", "x", "rules"],
    ["a null rule", [null], "rules[0]"],
    ["a rule without derive", [{ name: "r", inputs: [], next }], "rules[0]"],
    ["a state input derived", [{ name: "r", inputs: ["state"], derive, next }], "rules[0].inputs"],
    ["an unknown input", [{ name: "r", inputs: ["nope"], derive, next }], "rules[0].inputs"],
    [
      "one input derived twice",
      [
        { name: "a", inputs: ["input"], derive, next },
        { name: "b", inputs: ["input"], derive, next },
      ],
      "rules[1].inputs",
    ],
    [
      "a feed named as an input",
      [{ name: "r", inputs: [], feeds: { sr: 0 }, derive, next }],
      "rules[0].feeds",
    ],
    [
      "a NaN feed axis",
      [{ name: "r", inputs: [], feeds: { f: Number.NaN }, derive, next }],
      "rules[0].feeds.f",
    ],
    [
      "feeds that are not a record",
      [{ name: "r", inputs: [], feeds: [1], derive, next }],
      "rules[0].feeds",
    ],
    [
      "a state leaf named as a state input",
      [{ name: "r", inputs: [], state: { state: { row: [], dtype: "int32" } }, derive, next }],
      "rules[0].state",
    ],
    [
      "a null state leaf",
      [{ name: "r", inputs: [], state: { c: null }, derive, next }],
      "rules[0].state.c",
    ],
    [
      "reads of an unknown input",
      [{ name: "r", inputs: [], reads: ["nope"], derive, next }],
      "rules[0].reads",
    ],
    [
      "outputs that are not names",
      [{ name: "r", inputs: [], outputs: [1], derive, next }],
      "rules[0].outputs",
    ],
  ])("%s", async (_, rules, path) => {
    const made = createStatefulSession({
      session: await silero(),
      backend: ortBackend({ ort }),
      batchSize: 1,
      rules: rules as never,
    })
    expect(left(made)).toMatchObject({ _tag: "OptionError", path })
  })

  it("a bookkeeping leaf of an unknown dtype is a DTypeMismatchError or SpecError naming it", async () => {
    const made = createStatefulSession({
      session: await silero(),
      backend: ortBackend({ ort }),
      batchSize: 1,
      rules: [counting({ state: { count: { row: [], dtype: "float64" as never } } })],
    })
    expect(["SpecError", "DTypeMismatchError"]).toContain(left(made)._tag)
    expect(left(made).path).toBe("count")
  })
})

describe("a misbehaving rule fails the run with a typed error, the state unchanged", () => {
  const cases: [string, Partial<InputRule>, string][] = [
    [
      "derive throws",
      {
        derive: () => {
          throw new Error("boom")
        },
      },
      "BackendError",
    ],
    [
      "derive returns an error that is not a rule's",
      { derive: (() => new RowIndexError({ expected: "x", actual: 1 })) as never },
      "BackendError",
    ],
    [
      "next throws",
      {
        next: () => {
          throw new TypeError("boom")
        },
      },
      "BackendError",
    ],
    [
      "next returns the leaf it was given",
      { next: ({ state }) => ({ count: state["count"] as HostTensor }) },
      "BackendError",
    ],
    ["next returns nothing for its leaf", { next: () => ({}) }, "BackendError"],
    [
      "next returns a leaf of the wrong shape",
      {
        next: ({ state }) => ({
          count: new (state["count"]?.constructor as typeof HostTensor)(
            "int32",
            [3],
            new Int32Array(3),
          ),
        }),
      },
      "BatchSizeMismatchError",
    ],
  ]
  it.each(cases)("%s", async (_, misbehave, tag) => {
    const backend = ortBackend({ ort })
    const vad = orThrow(
      createStatefulSession({
        session: await silero(),
        backend,
        batchSize: 1,
        outputs: ["output"],
        rules: [sileroContext(), counting()],
      }),
    )
    orThrow(await vad.run({ frame: frame(), sr: sr() })).output.dispose()
    const bad = orThrow(
      createStatefulSession({
        session: await silero(),
        backend,
        batchSize: 1,
        outputs: ["output"],
        rules: [sileroContext(), counting(misbehave)],
      }),
    )
    orThrow(bad.restore(orThrow(await vad.snapshot())))
    const before = orThrow(await bad.snapshot())
    const live = backend.liveTensors()
    const r = await bad.run({ frame: frame(), sr: sr() })
    expect(left(r)._tag).toBe(tag)
    if (tag === "BackendError") expect(left(r).message).toContain("rule counting")
    expect(orThrow(await bad.snapshot())).toEqual(before)
    expect(backend.liveTensors()).toBe(live)
    // Still usable afterwards.
    expect(bad.busy).toBe(false)
    vad.dispose()
    bad.dispose()
  })
})

describe("rewind, cache and crossedPairs refuse bad values; nothing runs during a run", () => {
  const cfg = tinyDecoderConfig()
  const open = async (cache: unknown = { kind: "fixed", capacity: 16 }) =>
    createStatefulSession({
      session: await ort.InferenceSession.create(fixedCacheDecoder(cfg)),
      backend: ortBackend({ ort }),
      batchSize: 2,
      cache: cache as never,
      outputs: ["logits"],
    })
  const ids = (n = 1) => new ort.Tensor("int64", new BigInt64Array(2 * n).fill(1n), [2, n])

  it.each([
    [null, "cache"],
    [{ kind: "fixed", capacity: Number.NaN }, "cache.capacity"],
    [{ kind: "fixed", capacity: Number.POSITIVE_INFINITY }, "cache.capacity"],
    [{ kind: "fixed", capacity: "8" }, "cache.capacity"],
    [{ kind: "fixed", capacity: -3 }, "cache.capacity"],
    [{ kind: "growing", capacity: 8 }, "cache.capacity"],
    [{ kind: "fixed", capacity: 8, dim: null }, "cache.dim"],
    [{ kind: "fixed", capacity: 8, tokens: 7 }, "cache.tokens"],
  ])("cache %j", async (cache, path) => {
    expect(left(await open(cache))).toMatchObject({ _tag: "OptionError", path })
  })

  it("rewind: null, NaN and out-of-range rows, bad counts, no cache", async () => {
    const s = orThrow(await open())
    orThrow(await s.run({ input_ids: ids(3) })).logits.dispose()
    const before = orThrow(await s.snapshot())
    const refusals: [unknown, unknown, string][] = [
      [null, 1, "RowIndexError"],
      [[Number.NaN], 1, "RowIndexError"],
      [[2], 1, "RowIndexError"],
      [[-1], 1, "RowIndexError"],
      [["0"], 1, "RowIndexError"],
      [[0], Number.NaN, "OptionError"],
      [[0], Number.POSITIVE_INFINITY, "OptionError"],
      [[0], "1", "OptionError"],
      [[0], null, "OptionError"],
      [[0, 1], [1, Number.NaN], "OptionError"],
      [[0], 4, "ShapeMismatchError"],
    ]
    for (const [rows, n, tag] of refusals) {
      expect(
        left(s.rewind(rows as never, n as never))._tag,
        `rewind(${String(rows)}, ${String(n)})`,
      ).toBe(tag)
    }
    expect(orThrow(await s.snapshot())).toEqual(before)
    const plain = orThrow(
      createStatefulSession({
        session: await ort.InferenceSession.create(fixedCacheDecoder(cfg)),
        backend: ortBackend({ ort }),
        batchSize: 2,
        dims: { capacity: 4 },
        outputs: ["logits"],
        // Fed by hand without the cache option: every input is the caller's.
      }),
    )
    expect(left(plain.rewind([0], 1))).toMatchObject({ _tag: "OptionError", path: "cache" })
    s.dispose()
    plain.dispose()
  })

  it("during a run: rewind, snapshot with metadata, restore and select are BusyErrors; the run still lands", async () => {
    const s = orThrow(await open())
    const bytes = orThrow(await s.snapshot())
    const pending = s.run({ input_ids: ids() })
    expect(left(s.rewind([0], 0))._tag).toBe("BusyError")
    expect(left(await s.snapshot({ metadata: { a: "b" } }))._tag).toBe("BusyError")
    expect(left(s.restore(bytes))._tag).toBe("BusyError")
    expect(left(s.select([0]))._tag).toBe("BusyError")
    orThrow(await pending).logits.dispose()
    expect(Array.from(s.state()["cache_length"]?.data as Int32Array)).toEqual([1, 1])
    s.dispose()
  })

  it("crossedPairs that is not a boolean is an OptionError, on sessions and pairStateNames", async () => {
    const made = createStatefulSession({
      session: await silero(),
      backend: ortBackend({ ort }),
      batchSize: 1,
      crossedPairs: "yes" as never,
    })
    expect(left(made)).toMatchObject({ _tag: "OptionError", path: "crossedPairs" })
    const streaming = createStreamingSession({
      session: await silero(),
      ort,
      backend: ortBackend({ ort }),
      crossedPairs: 1 as never,
    })
    expect(left(streaming)).toMatchObject({ _tag: "OptionError", path: "crossedPairs" })
    expect(left(pairStateNames(["h"], ["hn"], {}, null as never))).toMatchObject({
      _tag: "OptionError",
      path: "options",
    })
    expect(left(pairStateNames(["h"], ["hn"], {}, { crossedPairs: "no" } as never))).toMatchObject({
      _tag: "OptionError",
      path: "options.crossedPairs",
    })
  })
})

describe("snapshot metadata and host leaves", () => {
  it("metadata null, a number or nested is a SnapshotFormatError naming it; the saver unchanged", async () => {
    const saver = orThrow(
      createStateSaver({
        spec: { h: { shape: ["batch", 2], dtype: "float32" } },
        backend: hostBackend(),
        batchSize: 1,
      }),
    )
    const before = orThrow(await saver.snapshot())
    for (const [metadata, path] of [
      [null, "metadata"],
      [7, "metadata"],
      [{ a: { b: "c" } }, "metadata.a"],
      [{ a: Number.NaN }, "metadata.a"],
      [{ format: "mine" }, "metadata.format"],
    ] as const) {
      expect(left(await saver.snapshot({ metadata: metadata as never }))).toMatchObject({
        _tag: "SnapshotFormatError",
        path,
      })
    }
    expect(orThrow(await saver.snapshot())).toEqual(before)
  })

  it("LeafSpec.host that is not a boolean is a SpecError naming the leaf", () => {
    const made = createStateSaver({
      spec: { h: { shape: ["batch", 2], dtype: "float32", host: "yes" as never } },
      backend: hostBackend(),
      batchSize: 1,
    })
    expect(left(made)).toMatchObject({ _tag: "SpecError", path: "h" })
  })
})

void ({} as common.Tensor)
