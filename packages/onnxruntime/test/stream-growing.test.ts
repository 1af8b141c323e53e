// Many conversations in one StreamingSession over a growing KV cache: every stream's rows are as
// long as the store's (the model appends each run's positions after all of them), padded with
// masked positions. Oracle: the same weights run without any cache on each conversation's whole
// history alone (helpers/decoders.ts `noCacheDecoder`), at every step.
import { type HostTensor, type StreamKey, decodeSnapshot, orThrow } from "@statesaver/core"
import type * as common from "onnxruntime-common"
import * as ortNode from "onnxruntime-node"
import * as ortWeb from "onnxruntime-web"
import { describe, expect, it } from "vitest"
import {
  type OrtBackend,
  type OrtSession,
  type StreamingSession,
  createStreamingSession,
  ortBackend,
} from "../src/index.js"
import {
  growingDecoder,
  mergedDecoder,
  noCacheDecoder,
  oracleLogits,
  tinyDecoderConfig,
  seededTokens,
} from "./helpers/decoders.js"
import type { Runtime } from "./helpers/harness.js"

ortWeb.env.wasm.numThreads = 1

const cfg = tinyDecoderConfig()
const TOL = 1e-5
const SEQ = "past_sequence_length"
const MASK = "cache_mask"

const runtimes: readonly [string, Runtime][] = [
  ["onnxruntime-node", ortNode as unknown as Runtime],
  ["onnxruntime-web wasm", ortWeb as unknown as Runtime],
]
const models = [
  { name: "growing decoder", bytes: growingDecoder(cfg), merged: false },
  { name: "merged decoder (use_cache_branch derived)", bytes: mergedDecoder(cfg), merged: true },
] as const

/** Deterministic tokens in [0, vocab). */
const tokens = (n: number, seed: number): number[] => seededTokens(n, seed, cfg.vocab)

/** The session, seen through its runs: the `use_cache_branch` and the past length of each. */
function recorded(session: common.InferenceSession) {
  const flags: boolean[] = []
  const pasts: number[] = []
  const seen: OrtSession = {
    inputNames: session.inputNames,
    outputNames: session.outputNames,
    inputMetadata: session.inputMetadata,
    outputMetadata: session.outputMetadata,
    run: ((feeds: Record<string, common.Tensor>, options?: common.InferenceSession.RunOptions) => {
      const flag = feeds["use_cache_branch"]
      if (flag !== undefined) flags.push((flag.data as Uint8Array)[0] === 1)
      pasts.push(feeds["past_key_values.0.key"]?.dims[2] as number)
      return options === undefined ? session.run(feeds) : session.run(feeds, options)
    }) as OrtSession["run"],
  }
  return { seen, flags, pasts }
}

/**
 * A growing-cache session of `capacity` conversations and the history of each, with a step that
 * runs the listed conversations (n new tokens each) and checks every one's logits against the
 * oracle on its whole history alone.
 */
async function conversations(ort: Runtime, bytes: Uint8Array, capacity: number) {
  const model = recorded(await ort.InferenceSession.create(bytes))
  const oracle = await ort.InferenceSession.create(noCacheDecoder(cfg))
  const backend = ortBackend({ ort }) as OrtBackend
  const evicted = new Map<StreamKey, Uint8Array>()
  const chats = orThrow(
    createStreamingSession({
      session: model.seen,
      ort,
      backend,
      capacity,
      cache: { kind: "growing" },
      outputs: ["logits"],
      onEvict: (key, b) => {
        evicted.set(key, b)
      },
    }),
  )
  const history = new Map<StreamKey, number[]>()
  let worst = 0
  let seed = 1
  const run = async (keys: StreamKey[], n: number) => {
    const chunks = keys.map(() => tokens(n, seed++))
    const outs = orThrow(
      await chats.run(
        keys.map((key, i) => ({
          key,
          feeds: {
            input_ids: new ort.Tensor("int64", BigInt64Array.from(chunks[i] as number[], BigInt), [
              1,
              n,
            ]),
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
  return {
    chats: chats as StreamingSession<"logits">,
    backend,
    model,
    evicted,
    history,
    run,
    worst: () => worst,
    seq: () => chats.store.dims()[SEQ] as number,
  }
}

/**
 * Checks that `restored` holds `original` (a snapshot of the same stream taken when the store
 * was shorter) at the start of each leaf's seq axis, bit for bit, and zeros (masked, empty
 * cache) after it.
 */
function expectPrefix(restored: Uint8Array, original: Uint8Array): void {
  const now = orThrow(decodeSnapshot(restored))
  const before = orThrow(decodeSnapshot(original))
  expect(now.leaves.map((l) => l.path)).toEqual(before.leaves.map((l) => l.path))
  for (const { path } of before.leaves) {
    const a = now.tensors.get(path) as HostTensor
    const b = before.tensors.get(path) as HostTensor
    const axis = a.shape.findIndex((d, i) => d !== b.shape[i])
    if (axis < 0) {
      expect(bits(a), path).toEqual(bits(b))
      continue
    }
    // Element e of `a` at multi-index idx: copied from `b` where idx[axis] < its size, else 0.
    const strides = (shape: readonly number[]) =>
      shape.map((_, i) => shape.slice(i + 1).reduce((x, y) => x * y, 1))
    const sa = strides(a.shape)
    const sb = strides(b.shape)
    const bitsA = bits(a)
    const bitsB = bits(b)
    const want: number[] = []
    for (let e = 0; e < bitsA.length; e++) {
      let rest = e
      let at = 0
      let inside = true
      for (let i = 0; i < a.shape.length; i++) {
        const idx = Math.floor(rest / (sa[i] as number))
        rest -= idx * (sa[i] as number)
        if (i === axis && idx >= (b.shape[i] as number)) inside = false
        at += idx * (sb[i] as number)
      }
      want.push(inside ? (bitsB[at] as number) : 0)
    }
    expect(bitsA, path).toEqual(want)
  }
}

/** A tensor's elements as raw bit patterns (exact, -0 and NaN included). */
function bits(t: HostTensor): number[] {
  const data = t.data as Float32Array | Uint8Array
  return data instanceof Float32Array
    ? Array.from(new Uint32Array(data.buffer, data.byteOffset, data.length))
    : Array.from(data)
}

describe.each(runtimes)("a growing KV cache in a StreamingSession on %s", (_, ort) => {
  describe.each(models)("$name", ({ bytes, merged }) => {
    it("conversations at different lengths share each run, join, leave and are evicted; each equals the oracle alone at every step, the store padded to the longest", async () => {
      const c = await conversations(ort, bytes, 3)
      await c.run(["a"], 3) // a's prompt
      expect(c.seq()).toBe(3)
      await c.run(["a"], 1)
      // b joins with its prompt, alone: it runs without the cache (as the store's first run did)
      // and its 2 positions are padded into the store's 4, which does not grow.
      await c.run(["b"], 2)
      expect(c.seq()).toBe(4)
      for (let t = 0; t < 3; t++) await c.run(["a", "b"], 1) // different lengths in one run
      // c joins with a one-token prompt among rows under way (a row with no position).
      await c.run(["c", "a", "b"], 1)
      await c.run(["c"], 2)
      const live = c.backend.liveTensors()
      // a's rows when it is evicted: the store's length now.
      const lengthA = c.seq()
      // d joins alone (no row of the run holds a position, the store does: it runs without the
      // cache); capacity 3: a, the least recently used, is evicted once the run succeeded.
      await c.run(["d"], 1)
      expect(c.seq()).toBe(lengthA)
      await c.chats.flush()
      const bytesA = c.evicted.get("a") as Uint8Array
      expect(bytesA).toBeDefined()
      expect(c.chats.has("a")).toBe(false)
      orThrow(c.chats.delete("b")) // b leaves
      for (let t = 0; t < 3; t++) await c.run(["c", "d"], 1) // the store grows past a
      expect(c.seq()).toBe(lengthA + 3)
      // a comes back from its onEvict bytes into the store that grew: its cache and mask at the
      // start of its rows, bit for bit, masked zeros after.
      orThrow(c.chats.restore("a", bytesA))
      expectPrefix(orThrow(await c.chats.snapshot("a")), bytesA)
      for (let t = 0; t < 3; t++) await c.run(["a", "c", "d"], 1)
      expect(c.worst()).toBeLessThan(TOL)
      expect(c.backend.liveTensors()).toBe(live)
      // use_cache_branch: off on a run whose rows all hold no position (the first, b's and d's
      // prompts, fed an empty past), on whenever a row of the run holds one, also for the rows
      // that hold none (masked: c's prompt).
      const runs = c.model.pasts.length
      expect(runs).toBe(15)
      const off = [0, 2, 8]
      const flags = Array.from({ length: runs }, (_, i) => !off.includes(i))
      expect(c.model.flags).toEqual(merged ? flags : [])
      expect(c.model.pasts.slice(0, 3)).toEqual([0, 3, 0])
      expect(c.model.pasts[8]).toBe(0)
      c.chats.dispose()
      expect(c.backend.liveTensors()).toBe(0)
    })
  })

  it("live tensors stay flat over many steps while the store grows every run", async () => {
    const c = await conversations(ort, growingDecoder(cfg), 4)
    await c.run(["x", "y"], 2)
    const live = c.backend.liveTensors()
    for (let t = 0; t < 30; t++) {
      await c.run(t % 3 === 2 ? ["y"] : ["x", "y"], 1)
      expect(c.backend.liveTensors()).toBe(live)
    }
    expect(c.seq()).toBe(32)
    expect(c.worst()).toBeLessThan(TOL)
    c.chats.dispose()
    expect(c.backend.liveTensors()).toBe(0)
  })
})

describe("a growing cache's snapshots across sessions", () => {
  it("an evicted conversation's bytes restore into a new session bit-exactly and go on equal to the oracle", async () => {
    const ort = ortNode as unknown as Runtime
    const c = await conversations(ort, growingDecoder(cfg), 1)
    await c.run(["a"], 4)
    await c.run(["a"], 1)
    await c.run(["b"], 2) // evicts a
    await c.chats.flush()
    const bytesA = c.evicted.get("a") as Uint8Array
    const d = await conversations(ort, growingDecoder(cfg), 2)
    await d.run(["z"], 3)
    orThrow(d.chats.restore("a", bytesA)) // the store grows to a's 5 positions, z is padded
    expect(d.seq()).toBe(5)
    expect(orThrow(await d.chats.snapshot("a"))).toEqual(bytesA)
    d.history.set("a", c.history.get("a") as number[])
    for (let t = 0; t < 2; t++) await d.run(["z", "a"], 1)
    expect(d.worst()).toBeLessThan(TOL)
    c.chats.dispose()
    d.chats.dispose()
    expect(c.backend.liveTensors() + d.backend.liveTensors()).toBe(0)
  })
})

describe("a growing cache's refusals change nothing", () => {
  it("a snapshot of another model or with a bad mask: typed errors, every stream's state and the order of eviction as they were", async () => {
    const ort = ortNode as unknown as Runtime
    const c = await conversations(ort, growingDecoder(cfg), 4)
    await c.run(["a"], 2)
    await c.run(["b", "a"], 1)
    const other = await conversations(ort, growingDecoder(tinyDecoderConfig({ heads: 1 })), 2)
    const fewer = await conversations(ort, growingDecoder(tinyDecoderConfig({ layers: 1 })), 2)
    await other.run(["x"], 6)
    await fewer.run(["x"], 6)
    const order = c.chats.keys()
    const before = await Promise.all(order.map(async (k) => orThrow(await c.chats.snapshot(k))))
    const live = c.backend.liveTensors()
    const dims = c.chats.store.dims()
    expect(c.chats.restore("x", orThrow(await other.chats.snapshot("x")))).toMatchObject({
      _tag: "Left",
      left: { _tag: "ShapeMismatchError" },
    })
    expect(c.chats.restore("x", orThrow(await fewer.chats.snapshot("x")))).toMatchObject({
      _tag: "Left",
      left: { _tag: "SnapshotFormatError" },
    })
    // A mask entry that is not 0 or 1.
    const snap = orThrow(decodeSnapshot(orThrow(await c.chats.snapshot("a"))))
    ;(snap.tensors.get(MASK)?.data as Uint8Array)[0] = 2
    expect(c.chats.restore("x", snap)).toMatchObject({
      _tag: "Left",
      left: { _tag: "SnapshotFormatError", path: MASK },
    })
    expect(c.chats.keys()).toEqual(order)
    expect(c.chats.store.dims()).toEqual(dims)
    for (const [i, k] of order.entries())
      expect(orThrow(await c.chats.snapshot(k))).toEqual(before[i])
    expect(c.backend.liveTensors()).toBe(live)
    // While a run is in flight the store's size is read, not changed.
    const ids = new ort.Tensor("int64", BigInt64Array.of(1n), [1, 1])
    const pending = c.chats.run([{ key: "a", feeds: { input_ids: ids } }])
    expect(c.chats.store.resizeDim(SEQ, 64)).toMatchObject({ left: { _tag: "BusyError" } })
    expect(c.chats.store.dims()).toEqual(dims)
    for (const out of orThrow(await pending).values()) out.logits.dispose()
    expect(c.chats.store.dims()).toEqual({ [SEQ]: (dims[SEQ] as number) + 1 })
    for (const s of [c, other, fewer]) s.chats.dispose()
  })

  it("a backend without writeAt, or a size for the cache's dim: an OptionError at creation", async () => {
    const ort = ortNode as unknown as Runtime
    const session = await ort.InferenceSession.create(growingDecoder(cfg))
    const { writeAt: _, ...noWriteAt } = ortBackend({ ort })
    expect(
      createStreamingSession({ session, ort, backend: noWriteAt, cache: { kind: "growing" } }),
    ).toMatchObject({ _tag: "Left", left: { _tag: "OptionError", path: "backend" } })
    expect(
      createStreamingSession({
        session,
        ort,
        backend: ortBackend({ ort }),
        cache: { kind: "growing" },
        dims: { [SEQ]: 8 },
      }),
    ).toMatchObject({ _tag: "Left", left: { _tag: "OptionError", path: `dims.${SEQ}` } })
  })
})
