// KV caches held by a StatefulSession with per-row lengths: fixed-capacity (written in place at
// each row's length) and growing (adopted, with a per-row mask). Oracle: the same weights run
// without any cache on each row's whole history alone (helpers/decoders.ts `noCacheDecoder`).
import {
  HostTensor,
  type StreamKey,
  decodeSnapshot,
  encodeSnapshot,
  orThrow,
} from "@statesaver/core"
import type * as common from "onnxruntime-common"
import * as ortNode from "onnxruntime-node"
import * as ortWeb from "onnxruntime-web"
import { describe, expect, it } from "vitest"
import {
  type InputRule,
  type KvCacheOptions,
  type OrtBackend,
  type StatefulSession,
  type StreamingSession,
  createStatefulSession,
  createStreamingSession,
  ortBackend,
} from "../src/index.js"
import {
  fixedCacheDecoder,
  growingDecoder,
  noCacheDecoder,
  oracleLogits,
  tinyDecoderConfig,
  seededTokens,
} from "./helpers/decoders.js"
import { counting } from "./helpers/rules.js"
import type { Runtime } from "./helpers/harness.js"

ortWeb.env.wasm.numThreads = 1

const cfg = tinyDecoderConfig()
const TOL = 1e-5
const CAPACITY = 24

interface Kind {
  readonly name: string
  readonly bytes: Uint8Array
  readonly cache: KvCacheOptions
}
const kinds: readonly Kind[] = [
  { name: "fixed", bytes: fixedCacheDecoder(cfg), cache: { kind: "fixed", capacity: CAPACITY } },
  { name: "growing", bytes: growingDecoder(cfg), cache: { kind: "growing" } },
]
const runtimes: readonly [string, Runtime][] = [
  ["onnxruntime-node", ortNode as unknown as Runtime],
  ["onnxruntime-web wasm", ortWeb as unknown as Runtime],
]

/** Deterministic tokens in [0, vocab). */
const tokens = (n: number, seed: number): number[] => seededTokens(n, seed, cfg.vocab)

/** A growing cache's model run as a fixed one, 2 rows of 2 tokens: its whole cache refused. */
const wholeCacheRefused = {
  _tag: "Left",
  left: {
    _tag: "ShapeMismatchError",
    path: "present.0.key",
    actual: [2, cfg.heads, CAPACITY + 2, cfg.headDim],
  },
}

/**
 * A session and the history of each row (the tokens its cache holds), with a step that feeds
 * one chunk per row and checks every row's logits against the oracle on its history alone.
 */
async function harness(
  ort: Runtime,
  kind: Kind,
  batchSize: number,
  backend = ortBackend({ ort }) as OrtBackend,
  rules: readonly InputRule[] = [],
) {
  const session = await ort.InferenceSession.create(kind.bytes)
  const oracle = await ort.InferenceSession.create(noCacheDecoder(cfg))
  const s = orThrow(
    createStatefulSession({
      session,
      backend,
      batchSize,
      cache: kind.cache,
      outputs: ["logits"],
      rules,
    }),
  )
  let history: number[][] = Array.from({ length: batchSize }, () => [])
  let worst = 0
  const step = async (chunk: readonly (readonly number[])[]) => {
    const n = chunk[0]?.length ?? 0
    const ids = new ort.Tensor("int64", BigInt64Array.from(chunk.flat(), BigInt), [chunk.length, n])
    const out = orThrow(await s.run({ input_ids: ids }))
    // The outputs listed, nothing else (the cache's outputs are the session's).
    expect(Object.keys(out)).toEqual(["logits"])
    const logits = out.logits.data as Float32Array
    history = history.map((h, r) => [...h, ...(chunk[r] as number[])])
    const expected = await oracleLogits(ort, oracle, history)
    for (let r = 0; r < chunk.length; r++) {
      const want = expected[r] as Float32Array
      const T = (history[r] as number[]).length
      for (let i = 0; i < n; i++)
        for (let v = 0; v < cfg.vocab; v++) {
          const got = logits[(r * n + i) * cfg.vocab + v] as number
          const exp = want[(T - n + i) * cfg.vocab + v] as number
          worst = Math.max(worst, Math.abs(got - exp))
        }
    }
    out.logits.dispose()
    return worst
  }
  return {
    s: s as StatefulSession<"logits">,
    backend,
    step,
    history: () => history,
    setHistory: (h: number[][]) => {
      history = h
    },
    worst: () => worst,
  }
}

describe.each(runtimes)("KV caches with lengths on %s", (_, ort) => {
  describe.each(kinds)("$name cache", (kind) => {
    it("a prefill then single tokens equal the oracle at every step; lengths and masks derived", async () => {
      const h = await harness(ort, kind, 3)
      // The caller feeds only input_ids: the session derives the mask and positions.
      await h.step([tokens(4, 1), tokens(4, 2), tokens(4, 3)])
      for (let t = 0; t < 6; t++)
        await h.step([tokens(1, 10 + t), tokens(1, 20 + t), tokens(1, 30 + t)])
      expect(h.worst()).toBeLessThan(TOL)
      const state = h.s.state()
      if (kind.name === "fixed") {
        expect(Array.from(state["cache_length"]?.data as Int32Array)).toEqual([10, 10, 10])
        expect(state["past_key_values.0.key"]?.dims).toEqual([3, cfg.heads, CAPACITY, cfg.headDim])
      } else {
        expect(state["cache_mask"]?.dims).toEqual([3, 10])
        expect(h.s.dims()).toEqual({ past_sequence_length: 10 })
      }
      h.s.dispose()
      expect(h.backend.liveTensors()).toBe(0)
    })

    it("rows at different lengths: a reset row restarts and a new row joins mid-flight", async () => {
      const h = await harness(ort, kind, 2)
      for (let t = 0; t < 3; t++) await h.step([tokens(1, 40 + t), tokens(1, 50 + t)])
      // Row 1 ends its conversation; row 0 goes on. Row 1 starts over at length 0.
      orThrow(h.s.reset([1]))
      h.setHistory([h.history()[0] as number[], []])
      for (let t = 0; t < 4; t++) await h.step([tokens(1, 60 + t), tokens(1, 70 + t)])
      // A third row joins (select with null: a fresh row).
      orThrow(h.s.select([0, 1, null]))
      h.setHistory([...h.history(), []])
      for (let t = 0; t < 3; t++)
        await h.step([tokens(1, 80 + t), tokens(1, 90 + t), tokens(1, 100 + t)])
      expect(h.worst()).toBeLessThan(TOL)
      h.s.dispose()
    })

    it("beams reordered and forked with select, then rewound, each equal the oracle on its history", async () => {
      const h = await harness(ort, kind, 2)
      await h.step([tokens(3, 5), tokens(3, 6)])
      // Prefix sharing: row 0's cache forked into three rows.
      orThrow(h.s.select([0, 0, 1]))
      const [a, b] = h.history() as [number[], number[]]
      h.setHistory([a, [...a], b])
      await h.step([[1], [2], [3]])
      // Beam reorder: rows 2, 0, 0.
      orThrow(h.s.select([2, 0, 0]))
      const [r0, r1, r2] = h.history() as [number[], number[], number[]]
      void r1
      h.setHistory([r2, [...r0], [...r0]])
      await h.step([[4], [5], [6]])
      // Speculative rollback: row 1 drops its last 2 tokens, row 2 its last one.
      orThrow(h.s.rewind([1, 2], [2, 1]))
      const hist = h.history()
      h.setHistory([
        hist[0] as number[],
        (hist[1] as number[]).slice(0, -2),
        (hist[2] as number[]).slice(0, -1),
      ])
      for (let t = 0; t < 3; t++)
        await h.step([tokens(1, 110 + t), tokens(1, 120 + t), tokens(1, 130 + t)])
      expect(h.worst()).toBeLessThan(TOL)
      h.s.dispose()
    })

    it("a snapshot carries the cache and its lengths: restored elsewhere, it goes on equal", async () => {
      const h = await harness(ort, kind, 2)
      await h.step([tokens(5, 7), tokens(5, 8)])
      orThrow(h.s.rewind([0], 2))
      const [x, y] = h.history() as [number[], number[]]
      const bytes = orThrow(await h.s.snapshot())
      const other = await harness(ort, kind, 2)
      orThrow(other.s.restore(bytes))
      other.setHistory([x.slice(0, -2), y])
      for (let t = 0; t < 3; t++) await other.step([tokens(1, 140 + t), tokens(1, 150 + t)])
      expect(other.worst()).toBeLessThan(TOL)
      h.s.dispose()
      other.s.dispose()
    })

    it("refuses bad input with typed errors and the state unchanged", async () => {
      const h = await harness(ort, kind, 2)
      await h.step([tokens(3, 9), tokens(3, 10)])
      const before = orThrow(await h.s.snapshot())
      const ids = (n: number) => new ort.Tensor("int64", new BigInt64Array(2 * n), [2, n])
      // A derived input fed by hand.
      const mask = new ort.Tensor("int64", new BigInt64Array(8), [2, 4])
      const fed = await h.s.run({ input_ids: ids(1), attention_mask: mask } as never)
      expect(fed).toMatchObject({
        _tag: "Left",
        left: { _tag: "StructureMismatchError", path: "attention_mask" },
      })
      // Token ids without a row per batch row, or without a token axis: refused before the run.
      for (const [data, dims] of [
        [new BigInt64Array(3), [3, 1]],
        [new BigInt64Array(2), [2]],
      ] as const) {
        const wrong = await h.s.run({ input_ids: new ort.Tensor("int64", data, dims) })
        expect(wrong).toMatchObject({
          _tag: "Left",
          left: { _tag: "ShapeMismatchError", path: "input_ids", actual: dims },
        })
      }
      // Calls refused by the general checks that a cache's lean step leaves to them: run options
      // that are not a record, a disposed feed, an unknown feed, ids of another type, no feed.
      const gone = ids(1)
      gone.dispose()
      const floats = new ort.Tensor("float32", new Float32Array(2), [2, 1])
      for (const [call, tag, path] of [
        [() => h.s.run({ input_ids: ids(1) }, null as never), "OptionError", "options"],
        [() => h.s.run({ input_ids: gone }), "DisposedError", "input_ids"],
        [
          () => h.s.run({ input_ids: ids(1), extra: ids(1) } as never),
          "StructureMismatchError",
          "extra",
        ],
        [() => h.s.run({ input_ids: floats }), "DTypeMismatchError", "input_ids"],
        [() => h.s.run({} as never), "StructureMismatchError", "input_ids"],
      ] as const) {
        expect(await call()).toMatchObject({ _tag: "Left", left: { _tag: tag, path } })
      }
      // Rewinding past the start, bad rows, bad n.
      expect(h.s.rewind([0], 4)).toMatchObject({
        _tag: "Left",
        left: { _tag: "ShapeMismatchError" },
      })
      expect(h.s.rewind([2], 1)).toMatchObject({ _tag: "Left", left: { _tag: "RowIndexError" } })
      expect(h.s.rewind([0, 0], 1)).toMatchObject({ _tag: "Left", left: { _tag: "RowIndexError" } })
      expect(h.s.rewind([0, 1], [1])).toMatchObject({
        _tag: "Left",
        left: { _tag: "OptionError", path: "n" },
      })
      expect(h.s.rewind([0], -1)).toMatchObject({
        _tag: "Left",
        left: { _tag: "OptionError", path: "n" },
      })
      if (kind.name === "fixed") {
        // Capacity: 3 held + 22 new > 24, refused before anything runs.
        const over = await h.s.run({ input_ids: ids(CAPACITY - 2) })
        expect(over).toMatchObject({
          _tag: "Left",
          left: {
            _tag: "ShapeMismatchError",
            path: "cache_length",
            actual: CAPACITY + 1,
          },
        })
        expect((over as { left: Error }).left.message).toContain("capacity")
      }
      // A snapshot whose lengths (or mask) are out of range: refused, naming the leaf.
      const snap = orThrow(decodeSnapshot(before))
      const leaf = kind.name === "fixed" ? "cache_length" : "cache_mask"
      const t = snap.tensors.get(leaf) as HostTensor
      const data = t.data.slice() as Int32Array
      data[1] = kind.name === "fixed" ? CAPACITY + 1 : 2
      const forged = encodeSnapshot({
        ...snap,
        tensors: new Map([...snap.tensors, [leaf, new HostTensor(t.dtype, t.shape, data)]]),
      })
      expect(h.s.restore(forged)).toMatchObject({
        _tag: "Left",
        left: {
          _tag: "SnapshotFormatError",
          path: leaf,
          detail: kind.name === "fixed" ? "row 1" : "row 0",
        },
      })
      expect(orThrow(await h.s.snapshot())).toEqual(before)
      h.s.dispose()
    })
  })
})

describe.each(runtimes)("a fixed cache's lengths on %s", (_, ort) => {
  it("advance in place: a borrowed state() sees them move; a failed block write leaves them where they were", async () => {
    const real = ortBackend({ ort }) as OrtBackend
    const writeAt = real.writeAt as NonNullable<OrtBackend["writeAt"]>
    // The block write that throws (0 = none): a backend fault halfway through a step's writes.
    let failOn = 0
    let calls = 0
    // One write per cache (a key and a value per layer) per step.
    const writes = 2 * cfg.layers
    const backend: OrtBackend = {
      ...real,
      writeAt(...args) {
        if (++calls === failOn) throw new Error("device lost")
        writeAt(...args)
      },
    }
    const h = await harness(ort, kinds[0] as Kind, 2, backend)
    await h.step([tokens(3, 1), tokens(3, 2)])
    const lengths = h.s.state()["cache_length"] as common.Tensor
    await h.step([tokens(1, 3), tokens(1, 4)])
    expect(calls).toBe(2 * writes)
    expect(h.s.state()["cache_length"]).toBe(lengths)
    expect(Array.from(lengths.data as Int32Array)).toEqual([4, 4])
    // The second write fails: the first cache holds this step's block at the rows' lengths,
    // but the lengths stay where they were, so that block is past them and unread.
    failOn = calls + 2
    const ids = new ort.Tensor("int64", BigInt64Array.from([5n, 6n]), [2, 1])
    const failed = await h.s.run({ input_ids: ids })
    expect(failed).toMatchObject({
      _tag: "Left",
      left: { _tag: "BackendError", operation: "writeAt", path: `["past_key_values.0.value"]` },
    })
    expect(calls).toBe(failOn)
    expect(Array.from(lengths.data as Int32Array)).toEqual([4, 4])
    const before = calls
    failOn = 0
    // The next steps write over it and equal the oracle on the history without the failed step.
    for (let t = 0; t < 3; t++) await h.step([tokens(1, 160 + t), tokens(1, 170 + t)])
    expect(calls).toBe(before + 3 * writes)
    expect(h.worst()).toBeLessThan(TOL)
    h.s.dispose()
    expect(real.liveTensors()).toBe(0)
  })

  it("beside a rule of the caller's, they advance with its leaf through the rules' next", async () => {
    // A per-row count of the runs, a leaf beside the cache's lengths.
    const backend = ortBackend({ ort }) as OrtBackend
    const h = await harness(ort, kinds[0] as Kind, 2, backend, [counting()])
    await h.step([tokens(3, 11), tokens(3, 12)])
    const first = h.s.state()["cache_length"]
    for (let t = 0; t < 4; t++) await h.step([tokens(1, 180 + t), tokens(1, 190 + t)])
    orThrow(h.s.reset([1]))
    h.setHistory([h.history()[0] as number[], []])
    for (let t = 0; t < 2; t++) await h.step([tokens(1, 200 + t), tokens(1, 210 + t)])
    expect(h.worst()).toBeLessThan(TOL)
    const state = h.s.state()
    // New lengths tensors from the rule's next (the other leaf is not advanced in place).
    expect(state["cache_length"]).not.toBe(first)
    expect(Array.from(state["cache_length"]?.data as Int32Array)).toEqual([9, 2])
    expect(Array.from(state["count"]?.data as Int32Array)).toEqual([7, 2])
    h.s.dispose()
    expect(backend.liveTensors()).toBe(0)
  })

  it("a model that outputs the whole cache, not the step's blocks, is refused after its run: the state unchanged", async () => {
    // A growing cache's model run as a fixed one: present.N.* hold capacity + s positions.
    const wrong: Kind = { ...(kinds[0] as Kind), bytes: growingDecoder(cfg) }
    const backend = ortBackend({ ort }) as OrtBackend
    const h = await harness(ort, wrong, 2, backend)
    const before = orThrow(await h.s.snapshot())
    const lengths = h.s.state()["cache_length"]
    const ids = new ort.Tensor("int64", BigInt64Array.from([1n, 2n, 3n, 4n]), [2, 2])
    const refused = await h.s.run({ input_ids: ids })
    expect(refused).toMatchObject(wholeCacheRefused)
    expect(h.s.state()["cache_length"]).toBe(lengths)
    expect(Array.from(lengths?.data as Int32Array)).toEqual([0, 0])
    expect(orThrow(await h.s.snapshot())).toEqual(before)
    h.s.dispose()
    expect(backend.liveTensors()).toBe(0)
  })
})

describe.each(runtimes)("a growing cache's mask on %s", (_, ort) => {
  it("each step's mask takes the memory of the mask two steps back: no new memory per step", async () => {
    const h = await harness(ort, kinds[1] as Kind, 2)
    await h.step([tokens(3, 15), tokens(3, 16)])
    const masks: Uint8Array[] = []
    const expectMask = (rows: number[][]) =>
      expect(Array.from(h.s.state()["cache_mask"]?.data as Uint8Array)).toEqual(rows.flat())
    for (let t = 0; t < 24; t++) {
      await h.step([tokens(1, 200 + t), tokens(1, 300 + t)])
      const mask = h.s.state()["cache_mask"]?.data as Uint8Array
      // Never the memory of the mask it was grown from.
      if (t > 0) expect(mask.buffer).not.toBe(masks[t - 1]?.buffer)
      masks.push(mask)
      expectMask([Array(4 + t).fill(1), Array(4 + t).fill(1)])
    }
    // Two arrays in turn, made again only to grow (by half): far fewer than the steps.
    const made = new Set(masks.map((m) => m.buffer)).size
    expect(made).toBeLessThanOrEqual(8)
    // A reset row: its positions masked in the memory shared with the earlier masks, the
    // other row's kept; both go on equal to the oracle.
    orThrow(h.s.reset([1]))
    h.setHistory([h.history()[0] as number[], []])
    for (let t = 0; t < 3; t++) await h.step([tokens(1, 400 + t), tokens(1, 500 + t)])
    expectMask([Array(30).fill(1), [...Array(27).fill(0), 1, 1, 1]])
    expect(h.worst()).toBeLessThan(TOL)
    h.s.dispose()
  })

  it("while every position is valid, the mask and positions fed are written into memory kept from step to step", async () => {
    const model = await ort.InferenceSession.create(growingDecoder(cfg))
    // What each run is fed: the derived inputs' values and the memory they are in.
    const fed: {
      mask: bigint[]
      dims: readonly number[]
      at: number[]
      memory: ArrayBufferLike
    }[] = []
    const run = model.run.bind(model) as (f: Record<string, common.Tensor>) => Promise<unknown>
    const watched = Object.assign(Object.create(model) as typeof model, {
      run: (feeds: Record<string, common.Tensor>) => {
        const mask = feeds["attention_mask"] as common.Tensor
        fed.push({
          mask: Array.from(mask.data as BigInt64Array),
          dims: mask.dims,
          at: Array.from(feeds["position_ids"]?.data as BigInt64Array, Number),
          memory: (mask.data as BigInt64Array).buffer,
        })
        return run(feeds)
      },
    })
    const backend = ortBackend({ ort }) as OrtBackend
    const s = orThrow(
      createStatefulSession({
        session: watched,
        backend,
        batchSize: 2,
        cache: { kind: "growing" },
        outputs: ["logits"],
      }),
    )
    const step = async (n: number, seed: number) => {
      const ids = new ort.Tensor("int64", BigInt64Array.from(tokens(2 * n, seed), BigInt), [2, n])
      orThrow(await s.run({ input_ids: ids })).logits.dispose()
    }
    const ones = (rows: number, w: number) => Array<bigint>(rows * w).fill(1n)
    await step(3, 1)
    const start = orThrow(await s.snapshot())
    for (let t = 0; t < 20; t++) await step(t % 5 === 4 ? 2 : 1, 10 + t)
    let past = 0
    for (const [i, f] of fed.entries()) {
      const n = (f.dims[1] as number) - past
      expect(f.mask).toEqual(ones(2, past + n))
      expect(f.at).toEqual([0, 1].flatMap(() => Array.from({ length: n }, (_, j) => past + j)))
      past += n
      // Made again only to grow: the memory of the step before, most steps.
      if (i > 0 && f.memory !== fed[i - 1]?.memory)
        expect(f.mask.length).toBeGreaterThan(fed[i - 1]?.mask.length as number)
    }
    expect(new Set(fed.map((f) => f.memory)).size).toBeLessThanOrEqual(6)
    // A reset row: its positions fed masked (0), then the whole mask again once every position
    // is valid (a snapshot from before).
    orThrow(s.reset([0]))
    await step(1, 90)
    const held = past
    expect(fed.at(-1)?.mask).toEqual([...Array<bigint>(held).fill(0n), 1n, ...ones(1, held + 1)])
    expect(fed.at(-1)?.at).toEqual([0, held])
    orThrow(s.restore(start))
    await step(1, 91)
    expect(fed.at(-1)?.mask).toEqual(ones(2, 4))
    expect(fed.at(-1)?.at).toEqual([3, 3])
    s.dispose()
    expect(backend.liveTensors()).toBe(0)
  })

  it("a model that outputs only the step's blocks, not the whole cache, is refused after its run: the state unchanged", async () => {
    // A fixed cache's model run as a growing one: present.N.* hold the new positions only, which
    // fit the first step (an empty past) and not the next.
    const wrong: Kind = { ...(kinds[1] as Kind), bytes: fixedCacheDecoder(cfg) }
    const backend = ortBackend({ ort }) as OrtBackend
    const h = await harness(ort, wrong, 2, backend)
    await h.step([tokens(3, 13), tokens(3, 14)])
    const before = orThrow(await h.s.snapshot())
    const state = h.s.state()
    const ids = new ort.Tensor("int64", BigInt64Array.from([1n, 2n]), [2, 1])
    const refused = await h.s.run({ input_ids: ids })
    expect(refused).toMatchObject({
      _tag: "Left",
      left: {
        _tag: "ShapeMismatchError",
        path: '["past_key_values.0.key"]',
        actual: [2, cfg.heads, 1, cfg.headDim],
      },
    })
    // The sizes that disagree: the mask grown by the step, the model's block of one position.
    const error = (refused as { left: { message: string } }).left
    expect(error.message).toContain("is 4 at leaf cache_mask, 1 here")
    // Every leaf is the one held before, and the snapshot is byte for byte the same.
    for (const name in state) expect(h.s.state()[name]).toBe(state[name])
    expect(orThrow(await h.s.snapshot())).toEqual(before)
    h.s.dispose()
    expect(backend.liveTensors()).toBe(0)
  })
})

describe.each(["fixed", "growing"] as const)(
  "1,000 beam tokens (%s cache, onnxruntime-node)",
  (kindName) => {
    it("live tensors stay flat while beams are reordered and forked with select at every step", async () => {
      const ort = ortNode as unknown as Runtime
      const long = tinyDecoderConfig({ maxPosition: 1100 })
      const bytes = kindName === "fixed" ? fixedCacheDecoder(long) : growingDecoder(long)
      const cache: KvCacheOptions =
        kindName === "fixed" ? { kind: "fixed", capacity: 1024 } : { kind: "growing" }
      const backend = ortBackend({ ort }) as OrtBackend
      const s = orThrow(
        createStatefulSession({
          session: await ort.InferenceSession.create(bytes),
          backend,
          batchSize: 4,
          cache,
          outputs: ["logits"],
        }),
      )
      const ids = (t: number) =>
        new ort.Tensor("int64", BigInt64Array.from(tokens(4, t), BigInt), [4, 1])
      let live = -1
      for (let t = 0; t < 1000; t++) {
        const out = orThrow(await s.run({ input_ids: ids(t) }))
        out.logits.dispose()
        // A beam step: reorder, fork and drop rows, as beam search does.
        orThrow(s.select([(t + 1) % 4, (t + 1) % 4, t % 4, (t + 3) % 4]))
        if (t === 0) live = backend.liveTensors()
        else expect(backend.liveTensors(), `after token ${t}`).toBe(live)
      }
      expect(s.dims()).toEqual(
        kindName === "fixed" ? { capacity: 1024 } : { past_sequence_length: 1000 },
      )
      s.dispose()
      expect(backend.liveTensors()).toBe(0)
    })
  },
)

describe("many conversations in one StreamingSession (fixed cache)", () => {
  const kind = kinds[0] as Kind
  it("conversations at different lengths share each run, join, leave and are evicted; each equals the oracle alone", async () => {
    const ort = ortNode as unknown as Runtime
    const session = await ort.InferenceSession.create(kind.bytes)
    const oracle = await ort.InferenceSession.create(noCacheDecoder(cfg))
    const evicted = new Map<StreamKey, Uint8Array>()
    const backend = ortBackend({ ort }) as OrtBackend
    const chats = orThrow(
      createStreamingSession({
        session,
        ort,
        backend,
        capacity: 3,
        cache: kind.cache,
        outputs: ["logits"],
        onEvict: (key, bytes) => {
          evicted.set(key, bytes)
        },
      }),
    )
    const history = new Map<StreamKey, number[]>()
    let worst = 0
    // Each step: the conversations listed, one token each (a new one brings a 3-token prompt
    // alone first, since one run takes one length of new tokens).
    const run = async (keys: string[], n: number, seed: number) => {
      await chats.flush()
      for (const k of keys) {
        const bytes = evicted.get(k)
        if (bytes !== undefined && !chats.has(k)) {
          orThrow(chats.restore(k, bytes))
          evicted.delete(k)
        }
      }
      const chunks = keys.map((_, i) => tokens(n, seed + i))
      const outs = orThrow(
        await chats.run(
          keys.map((key, i) => ({
            key,
            feeds: {
              input_ids: new ort.Tensor(
                "int64",
                BigInt64Array.from(chunks[i] as number[], BigInt),
                [1, n],
              ),
            },
          })),
        ),
      )
      for (const [i, k] of keys.entries())
        history.set(k, [...(history.get(k) ?? []), ...(chunks[i] as number[])])
      const expected = await oracleLogits(
        ort,
        oracle,
        keys.map((k) => history.get(k) as number[]),
      )
      for (const [i, k] of keys.entries()) {
        const got = outs.get(k)?.logits.data as Float32Array
        const want = expected[i] as Float32Array
        const T = (history.get(k) as number[]).length
        for (let j = 0; j < n * cfg.vocab; j++)
          worst = Math.max(
            worst,
            Math.abs((got[j] as number) - (want[(T - n) * cfg.vocab + j] as number)),
          )
        outs.get(k)?.logits.dispose()
      }
    }
    await run(["a"], 3, 1)
    await run(["a"], 1, 2)
    await run(["b"], 3, 3) // b joins with its prompt
    for (let t = 0; t < 3; t++) await run(["a", "b"], 1, 10 + t) // a and b at different lengths
    await run(["c"], 2, 20)
    await run(["d"], 2, 21) // capacity 3: the least recently used (a) is evicted
    expect(evicted.has("a")).toBe(true)
    orThrow(chats.delete("d")) // d leaves; a comes back from its bytes into the free slot
    for (let t = 0; t < 3; t++) await run(["a", "b", "c"], 1, 30 + t)
    orThrow(chats.delete("b")) // b leaves
    for (let t = 0; t < 2; t++) await run(["c", "a"], 1, 40 + t)
    // Calls of one and then two rows at one width: the second's rows were last written by
    // other calls (the mask array is the session's, kept from call to call).
    await run(["c"], 2, 50)
    await run(["c"], 1, 51)
    for (let t = 0; t < 2; t++) await run(["a", "c"], 1, 52 + t)
    expect(worst).toBeLessThan(TOL)
    chats.dispose()
    expect(backend.liveTensors()).toBe(0)
  })
})

/** A StreamingSession of 4 streams over the model `bytes` with `cache`, handing back logits. */
async function streamingChats(
  ort: Runtime,
  bytes: Uint8Array,
  backend: OrtBackend,
  cache: KvCacheOptions,
): Promise<StreamingSession<"logits">> {
  const session = await ort.InferenceSession.create(bytes)
  return orThrow(
    createStreamingSession({ session, ort, backend, capacity: 4, cache, outputs: ["logits"] }),
  )
}

describe("a refused StreamingSession step changes nothing", () => {
  it("past a conversation's capacity: a typed error before the run; every stream's state and the order of eviction as they were", async () => {
    const ort = ortNode as unknown as Runtime
    const kind = kinds[0] as Kind
    const backend = ortBackend({ ort }) as OrtBackend
    const chats = await streamingChats(ort, kind.bytes, backend, kind.cache)
    const ids = (n: number, seed: number) =>
      new ort.Tensor("int64", BigInt64Array.from(tokens(n, seed), BigInt), [1, n])
    const capacity = (kind.cache as { capacity: number }).capacity
    for (const [i, key] of ["a", "b", "c"].entries())
      for (const o of orThrow(
        await chats.run([{ key, feeds: { input_ids: ids(i === 1 ? capacity - 1 : 2, i) } }]),
      ).values())
        o.logits.dispose()
    const order = chats.keys()
    const bytes = await Promise.all(order.map(async (k) => orThrow(await chats.snapshot(k))))
    const live = backend.liveTensors()
    // b has one position left: two new tokens each are refused for b (named in an order
    // that a use would make the order of eviction).
    const refused = await chats.run(
      ["c", "a", "b"].map((key, i) => ({ key, feeds: { input_ids: ids(2, 10 + i) } })),
    )
    expect(refused).toMatchObject({
      _tag: "Left",
      left: { _tag: "ShapeMismatchError", path: "cache_length" },
    })
    expect(chats.keys()).toEqual(order)
    for (const [i, k] of order.entries()) expect(orThrow(await chats.snapshot(k))).toEqual(bytes[i])
    expect(backend.liveTensors()).toBe(live)
    chats.dispose()
    expect(backend.liveTensors()).toBe(0)
  })
})

describe.each(runtimes)("a refused StreamingSession step of a fixed cache on %s", (_, ort) => {
  /** A fixed-cache StreamingSession over `bytes` on `backend`, streams a and b prefilled. */
  async function twoChats(bytes: Uint8Array, backend: OrtBackend) {
    const chats = await streamingChats(ort, bytes, backend, { kind: "fixed", capacity: CAPACITY })
    const step = async (n: number, seed: number) =>
      chats.run(
        ["a", "b"].map((key, i) => ({
          key,
          feeds: {
            input_ids: new ort.Tensor("int64", BigInt64Array.from(tokens(n, seed + i), BigInt), [
              1,
              n,
            ]),
          },
        })),
      )
    return { chats, step }
  }
  const snapshots = async (chats: StreamingSession<"logits">) =>
    Promise.all(["a", "b"].map(async (k) => orThrow(await chats.snapshot(k))))

  it("a model that outputs the whole cache, not the step's blocks: refused after its run, every stream as it was", async () => {
    const backend = ortBackend({ ort }) as OrtBackend
    // A growing cache's model run as a fixed one: present.N.* hold capacity + s positions.
    const { chats, step } = await twoChats(growingDecoder(cfg), backend)
    const first = await step(2, 1)
    expect(first).toMatchObject(wholeCacheRefused)
    // The two streams, new to the store, are forgotten again.
    expect(chats.keys()).toEqual([])
    // The store's slabs stay; a second refusal leaks nothing beside them.
    const live = backend.liveTensors()
    expect(await step(1, 3)).toMatchObject({
      _tag: "Left",
      left: { _tag: "ShapeMismatchError", path: "present.0.key" },
    })
    expect(chats.keys()).toEqual([])
    expect(backend.liveTensors()).toBe(live)
    chats.dispose()
    expect(backend.liveTensors()).toBe(0)
  })

  it("a block write that fails halfway: a BackendError naming the leaf, the lengths as they were; the next step equals a session that never failed", async () => {
    const real = ortBackend({ ort }) as OrtBackend
    const writeAt = real.writeAt as NonNullable<OrtBackend["writeAt"]>
    let failOn = 0
    let calls = 0
    // Every tensor the session frees, freed once (views of the store's rows included).
    const freed = new WeakSet<object>()
    let twice = 0
    const backend: OrtBackend = {
      ...real,
      writeAt(...args) {
        if (++calls === failOn) throw new Error("device lost")
        writeAt(...args)
      },
      dispose(t) {
        if (freed.has(t)) twice++
        freed.add(t)
        real.dispose(t)
      },
    }
    const faulty = await twoChats(fixedCacheDecoder(cfg), backend)
    const reference = await twoChats(fixedCacheDecoder(cfg), ortBackend({ ort }) as OrtBackend)
    for (const h of [faulty, reference]) {
      for (const out of orThrow(await h.step(3, 1)).values()) out.logits.dispose()
      for (const out of orThrow(await h.step(1, 5)).values()) out.logits.dispose()
    }
    const before = await snapshots(faulty.chats)
    const live = real.liveTensors()
    failOn = calls + 2
    const failed = await faulty.step(1, 9)
    expect(failed).toMatchObject({
      _tag: "Left",
      left: { _tag: "BackendError", operation: "writeAt", path: `["past_key_values.0.value"]` },
    })
    expect(calls).toBe(failOn)
    expect(real.liveTensors()).toBe(live)
    // The first cache took the step's block past the rows' lengths: the lengths did not move,
    // so it is unread, and the next step writes over it.
    const after = await snapshots(faulty.chats)
    const lengthOf = (bytes: Uint8Array) =>
      Array.from(orThrow(decodeSnapshot(bytes)).tensors.get("cache_length")?.data ?? [], Number)
    expect(lengthOf(before[0] as Uint8Array)).toEqual([4])
    for (const i of [0, 1])
      expect(lengthOf(after[i] as Uint8Array)).toEqual(lengthOf(before[i] as Uint8Array))
    failOn = 0
    const got = orThrow(await faulty.step(1, 13))
    const want = orThrow(await reference.step(1, 13))
    for (const k of ["a", "b"]) {
      const g = got.get(k)?.logits.data as Float32Array
      const w = want.get(k)?.logits.data as Float32Array
      expect(g.length).toBe(cfg.vocab)
      for (let j = 0; j < g.length; j++)
        expect(Math.abs((g[j] as number) - (w[j] as number))).toBeLessThan(TOL)
    }
    for (const m of [got, want]) for (const out of m.values()) out.logits.dispose()
    faulty.chats.dispose()
    reference.chats.dispose()
    expect(real.liveTensors()).toBe(0)
    expect(twice).toBe(0)
  })
})

describe("cache option errors", () => {
  it("a bad kind, capacity or dim is an OptionError naming it", async () => {
    const ort = ortNode as unknown as Runtime
    const session = await ort.InferenceSession.create(fixedCacheDecoder(cfg))
    const make = (cache: unknown) =>
      createStatefulSession({
        session,
        backend: ortBackend({ ort }),
        batchSize: 1,
        cache: cache as never,
      })
    expect(make({ kind: "static" })).toMatchObject({
      left: { _tag: "OptionError", path: "cache.kind" },
    })
    expect(make({ kind: "fixed" })).toMatchObject({
      left: { _tag: "OptionError", path: "cache.capacity" },
    })
    expect(make({ kind: "fixed", capacity: 0 })).toMatchObject({
      left: { _tag: "OptionError", path: "cache.capacity" },
    })
    expect(make({ kind: "fixed", capacity: 8, dim: "nope" })).toMatchObject({
      left: { _tag: "OptionError", path: "cache.dim" },
    })
    expect(make({ kind: "fixed", capacity: 8, tokens: "nope" })).toMatchObject({
      left: { _tag: "OptionError", path: "cache.tokens" },
    })
    const conflicting = createStatefulSession({
      session,
      backend: ortBackend({ ort }),
      batchSize: 1,
      cache: { kind: "fixed", capacity: 8 },
      dims: { capacity: 9 },
    })
    expect(conflicting).toMatchObject({ left: { _tag: "OptionError", path: "dims.capacity" } })
  })
})

void ({} as common.Tensor)
