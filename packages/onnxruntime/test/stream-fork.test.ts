// Streams of a StreamingSession with a fixed KV cache forked (`fork`: one stream's whole state
// copied into others on the backend) and rewound (`rewind`: the last positions of streams
// dropped). Oracles: every stream's logits at every step equal the same weights run without any
// cache on that stream's whole history alone (helpers/decoders.ts `noCacheDecoder`), and a beam
// search spread over streams equals a beam search that never holds a cache (helpers/search.ts).
import { type StreamKey, decodeSnapshot, orThrow } from "@statesaver/core"
import * as ortNode from "onnxruntime-node"
import * as ortWeb from "onnxruntime-web"
import { describe, expect, it } from "vitest"
import {
  type OrtBackend,
  type StreamingSession,
  createStreamingSession,
  ortBackend,
} from "../src/index.js"
import {
  fixedCacheDecoder,
  noCacheDecoder,
  oracleLogits,
  tinyDecoderConfig,
  seededTokens,
} from "./helpers/decoders.js"
import type { Runtime } from "./helpers/harness.js"
import { lstm2 } from "./helpers/models.js"
import { best, logSoftmax, referenceSearch } from "./helpers/search.js"

ortWeb.env.wasm.numThreads = 1

const cfg = tinyDecoderConfig()
const V = cfg.vocab
const TOL = 1e-5
const SCORE_TOL = 1e-4
/** Positions of each stream's cache. */
const POSITIONS = 32

const runtimes: readonly [string, Runtime][] = [
  ["onnxruntime-node", ortNode as unknown as Runtime],
  ["onnxruntime-web wasm", ortWeb as unknown as Runtime],
]

/** Deterministic tokens in [0, vocab). */
const tokens = (n: number, seed: number): number[] => seededTokens(n, seed, V)

/**
 * A StreamingSession over a fixed cache and the history of each stream (the tokens its cache
 * holds), kept beside it by `fork`, `rewind` and `reset`; `step` runs one chunk per stream and
 * checks every stream's logits against the oracle run on its history alone.
 */
async function conversations(
  ort: Runtime,
  options: {
    capacity: number
    onEvict?: (key: StreamKey, bytes: Uint8Array) => void
  },
) {
  const session = await ort.InferenceSession.create(fixedCacheDecoder(cfg))
  const oracle = await ort.InferenceSession.create(noCacheDecoder(cfg))
  const backend = ortBackend({ ort }) as OrtBackend
  const s: StreamingSession<"logits"> = orThrow(
    createStreamingSession({
      session,
      ort,
      backend,
      capacity: options.capacity,
      cache: { kind: "fixed", capacity: POSITIONS },
      outputs: ["logits"],
      ...(options.onEvict === undefined ? {} : { onEvict: options.onEvict }),
    }),
  )
  const history = new Map<StreamKey, number[]>()
  let worst = 0
  /** One run of one chunk per stream (chunks of one length); each stream's logits [n, V], copied. */
  const step = async (chunks: readonly (readonly [StreamKey, readonly number[]])[]) => {
    const n = (chunks[0] as readonly [StreamKey, readonly number[]])[1].length
    const outs = orThrow(
      await s.run(
        chunks.map(([key, chunk]) => ({
          key,
          feeds: { input_ids: new ort.Tensor("int64", BigInt64Array.from(chunk, BigInt), [1, n]) },
        })),
      ),
    )
    for (const [key, chunk] of chunks) history.set(key, [...(history.get(key) ?? []), ...chunk])
    const expected = await oracleLogits(
      ort,
      oracle,
      chunks.map(([key]) => history.get(key) as number[]),
    )
    const logits = new Map<StreamKey, Float32Array>()
    for (const [i, [key]] of chunks.entries()) {
      const out = outs.get(key)?.logits
      expect(out?.dims).toEqual([1, n, V])
      const got = (out?.data as Float32Array).slice()
      out?.dispose()
      const want = expected[i] as Float32Array
      const T = (history.get(key) as number[]).length
      for (let j = 0; j < n * V; j++)
        worst = Math.max(worst, Math.abs((got[j] as number) - (want[(T - n) * V + j] as number)))
      logits.set(key, got)
    }
    return logits
  }
  return {
    s,
    backend,
    step,
    history,
    fork(from: StreamKey, to: readonly StreamKey[]) {
      orThrow(s.fork(from, to))
      for (const k of to) history.set(k, [...(history.get(from) as number[])])
    },
    rewind(keys: readonly StreamKey[], n: number | readonly number[]) {
      orThrow(s.rewind(keys, n))
      for (const [i, k] of keys.entries()) {
        const drop = typeof n === "number" ? n : (n[i] as number)
        const h = history.get(k) as number[]
        history.set(k, h.slice(0, h.length - drop))
      }
    },
    reset(keys: readonly StreamKey[]) {
      orThrow(s.reset(keys))
      for (const k of keys) history.set(k, [])
    },
    worst: () => worst,
  }
}

describe.each(runtimes)("fork and rewind of streams on %s", (_, ort) => {
  it("prefix sharing: a prompt's cache computed once in stream p, forked into 4 streams (one of them held, overwritten), each continuing differently equals the oracle on its own history", async () => {
    const h = await conversations(ort, { capacity: 8 })
    // "d" holds another conversation: the fork replaces it.
    await h.step([["d", tokens(5, 30)]])
    const prompt = tokens(7, 1)
    await h.step([["p", prompt]])
    const live = h.backend.liveTensors()
    // `p` among the targets is left as it is.
    h.fork("p", ["a", "p", "b", "c", "d"])
    expect(h.backend.liveTensors()).toBe(live)
    expect(h.s.keys().sort()).toEqual(["a", "b", "c", "d", "p"])
    // The whole state is copied bit for bit: cache, lengths, everything.
    const bytes = orThrow(await h.s.snapshot("p"))
    for (const k of ["a", "b", "c", "d"]) expect(orThrow(await h.s.snapshot(k))).toEqual(bytes)
    // Each continues differently, and p goes on too, all in one run.
    const keys = ["a", "b", "c", "d", "p"]
    await h.step(keys.map((k, i) => [k, tokens(3, 40 + i)]))
    for (let t = 0; t < 4; t++) await h.step(keys.map((k, i) => [k, tokens(1, 50 + 10 * t + i)]))
    expect(new Set(keys.map((k) => h.history.get(k)?.join())).size).toBe(keys.length)
    for (const k of keys) expect(h.history.get(k)?.slice(0, 7)).toEqual(prompt)
    expect(h.worst()).toBeLessThan(TOL)
    h.s.dispose()
    expect(h.backend.liveTensors()).toBe(0)
  })

  it("beam search (width 4) spread over streams, each beam's state forked from its parent's stream every step, equals beam search without a cache; live tensors flat", async () => {
    const WIDTH = 4
    const STEPS = 12
    const prompt = tokens(6, 4)
    // Two generations of beam streams (g0-*, g1-*) and the prompt's stream.
    const h = await conversations(ort, { capacity: 2 * WIDTH + 1 })
    let logits = await h.step([["prompt", prompt]])
    let keys: StreamKey[] = ["prompt"]
    let n = prompt.length
    let beams: { tokens: number[]; score: number }[] = [{ tokens: [], score: 0 }]
    const parents: number[][] = []
    const live: number[] = []
    for (let t = 0; t < STEPS; t++) {
      const candidates = beams.flatMap((b, parent) => {
        const lp = logSoftmax(logits.get(keys[parent] as StreamKey) as Float32Array, (n - 1) * V, V)
        return Array.from({ length: V }, (_, token) => ({
          parent,
          token,
          score: b.score + (lp[token] as number),
        }))
      })
      const { kept } = best(candidates, WIDTH)
      // Beam i of the next generation lives in stream g{gen}-i, forked from its parent's stream
      // (the streams of two generations ago are overwritten).
      const next = kept.map((_, i) => `g${(t + 1) % 2}-${i}`)
      const children = new Map<number, StreamKey[]>()
      kept.forEach((k, i) =>
        children.set(k.parent, [...(children.get(k.parent) ?? []), next[i] as string]),
      )
      for (const [parent, to] of children) h.fork(keys[parent] as StreamKey, to)
      parents.push(kept.map((k) => k.parent))
      beams = kept.map((k) => ({
        tokens: [...(beams[k.parent] as { tokens: number[] }).tokens, k.token],
        score: k.score,
      }))
      keys = next
      live.push(h.backend.liveTensors())
      if (t < STEPS - 1) {
        logits = await h.step(keys.map((k, i) => [k, [beams[i]?.tokens.at(-1) as number]]))
        n = 1
        live.push(h.backend.liveTensors())
      }
    }
    // The search did reorder: some step kept a beam's parent at another index, or twice.
    expect(parents.slice(1).some((p) => p.some((parent, i) => parent !== i))).toBe(true)
    expect(h.worst()).toBeLessThan(TOL)
    const want = await (await referenceSearch(ort, cfg)).beam(prompt, WIDTH, STEPS)
    expect(want.gap).toBeGreaterThan(SCORE_TOL)
    expect(beams.map((b) => b.tokens)).toEqual(want.beams)
    for (const [i, b] of beams.entries())
      expect(Math.abs(b.score - (want.scores[i] as number))).toBeLessThan(SCORE_TOL)
    // Forks and runs allocate nothing that stays: one slab per leaf.
    expect(new Set(live)).toEqual(new Set([live[0]]))
    h.s.dispose()
    expect(h.backend.liveTensors()).toBe(0)
  })

  it("rewind drops the last positions of streams (one count each, or one for all); continuing then equals the oracle, a fork rewound leaves its source alone", async () => {
    const h = await conversations(ort, { capacity: 4 })
    await h.step([
      ["a", tokens(6, 1)],
      ["b", tokens(6, 2)],
    ])
    await h.step([
      ["a", [1]],
      ["b", [2]],
    ])
    // A draft's rejected tokens: 3 in a, 1 in b. Streams side by side in the store are rewound
    // through views of their rows: only their lengths (an int32 each) are copied, not the caches.
    const copied = h.backend.bytesCopied()
    h.rewind(["a", "b"], [3, 1])
    expect(h.backend.bytesCopied() - copied).toBe(2 * 4)
    // Out of the store's order the rows move once (to lie in that order), with the same result.
    h.rewind(["b", "a"], [1, 1])
    for (let t = 0; t < 3; t++)
      await h.step([
        ["a", tokens(1, 10 + t)],
        ["b", tokens(1, 20 + t)],
      ])
    h.fork("a", ["c"])
    h.rewind(["c"], 2)
    h.rewind(["a", "c"], 0)
    await h.step([
      ["a", tokens(2, 30)],
      ["c", tokens(2, 31)],
    ])
    // Rewound to its start, a stream is a new conversation.
    h.rewind(["b"], h.history.get("b")?.length as number)
    await h.step([
      ["b", tokens(3, 40)],
      ["c", tokens(3, 41)],
      ["a", tokens(3, 42)],
    ])
    expect(h.history.get("b")).toEqual(tokens(3, 40))
    expect(h.worst()).toBeLessThan(TOL)
    h.s.dispose()
    expect(h.backend.liveTensors()).toBe(0)
  })

  it("fork admits new keys as gather does: the least recently used streams are evicted through onEvict (never from); a stream at init forks into streams at init", async () => {
    const evicted = new Map<StreamKey, Uint8Array>()
    const h = await conversations(ort, {
      capacity: 3,
      onEvict: (key, bytes) => evicted.set(key, bytes),
    })
    await h.step([["q", tokens(4, 1)]])
    await h.step([["r", tokens(4, 2)]])
    await h.step([["p", tokens(4, 3)]])
    const q = orThrow(await h.s.snapshot("q"))
    // Full (q, r, p, least recently used first): the new key evicts q, its bytes handed over.
    h.fork("p", ["x"])
    await h.s.flush()
    expect([...evicted.keys()]).toEqual(["q"])
    expect(evicted.get("q")).toEqual(q)
    expect(h.s.keys()).toEqual(["r", "p", "x"])
    // p is now the least recently used, but it is the source: x goes instead.
    await h.step([["r", tokens(1, 4)]])
    expect(h.s.keys()).toEqual(["p", "x", "r"])
    h.fork("p", ["y"])
    await h.s.flush()
    expect([...evicted.keys()]).toEqual(["q", "x"])
    expect(h.s.keys()).toEqual(["r", "p", "y"])
    // A stream reset to init forks into streams at init: they start over.
    h.reset(["p"])
    h.fork("p", ["r"])
    const init = orThrow(await h.s.snapshot("p"))
    expect(orThrow(await h.s.snapshot("r"))).toEqual(init)
    await h.step([
      ["r", tokens(2, 5)],
      ["y", tokens(2, 6)],
      ["p", tokens(2, 7)],
    ])
    expect(h.history.get("r")).toEqual(tokens(2, 5))
    expect(h.worst()).toBeLessThan(TOL)
    h.s.dispose()
    expect(h.backend.liveTensors()).toBe(0)
  })

  it("with idleTtlMs, a refused rewind neither evicts idle streams nor counts as a use; a rewind that succeeds still drops positions", async () => {
    let now = 0
    const evicted: StreamKey[] = []
    const s: StreamingSession<"logits"> = orThrow(
      createStreamingSession({
        session: await ort.InferenceSession.create(fixedCacheDecoder(cfg)),
        ort,
        backend: ortBackend({ ort }),
        cache: { kind: "fixed", capacity: POSITIONS },
        outputs: ["logits"],
        idleTtlMs: 100,
        clock: () => now,
        onEvict: (key) => void evicted.push(key),
      }),
    )
    const run = async (keys: readonly StreamKey[], n: number) => {
      const outs = orThrow(
        await s.run(
          keys.map((key, i) => ({
            key,
            feeds: {
              input_ids: new ort.Tensor("int64", BigInt64Array.from(tokens(n, i), BigInt), [1, n]),
            },
          })),
        ),
      )
      for (const o of outs.values()) o.logits.dispose()
    }
    await run(["a", "b"], 4)
    now = 50
    await run(["b"], 1)
    // At 130, a is idle past the TTL (130 ms), b is not (80 ms).
    now = 130
    expect(s.rewind(["b"], 99)).toMatchObject({ left: { _tag: "ShapeMismatchError" } })
    await s.flush()
    expect(evicted).toEqual([])
    // The refused rewind was no use of b: at 151 both are idle past the TTL.
    now = 151
    expect(s.keys()).toEqual([])
    await s.flush()
    expect(evicted).toEqual(["a", "b"])
    // A rewind that succeeds, streams expiring or not, drops the positions.
    await run(["c"], 5)
    orThrow(s.rewind(["c"], 2))
    const snap = orThrow(decodeSnapshot(orThrow(await s.snapshot("c"))))
    expect(Array.from(snap.tensors.get("cache_length")?.data as Int32Array)).toEqual([3])
    s.dispose()
  })

  it("hostile fork and rewind calls are typed errors naming the key, the option or the stream, and every stream is unchanged (bytes, keys and their order)", async () => {
    const h = await conversations(ort, { capacity: 4 })
    await h.step([
      ["p", tokens(4, 1)],
      ["q", tokens(4, 2)],
    ])
    await h.step([["q", tokens(2, 3)]])
    const keys = h.s.keys()
    expect(keys).toEqual(["p", "q"])
    const before = orThrow(await h.s.store.snapshotMany(keys))
    const unchanged = async (what: string) => {
      expect(h.s.keys(), what).toEqual(keys)
      expect(orThrow(await h.s.store.snapshotMany(keys)), what).toEqual(before)
    }
    const refused = async (r: unknown, left: Record<string, unknown>) => {
      expect(r).toMatchObject({ _tag: "Left", left })
      await unchanged(JSON.stringify(left))
    }
    // fork: a bad or unknown source, bad, repeated or too many targets.
    await refused(h.s.fork("nope", ["a"]), { _tag: "KeyError", actual: "nope", detail: "from" })
    await refused(h.s.fork(Number.NaN, ["a"]), { _tag: "KeyError", detail: "from" })
    await refused(h.s.fork(undefined as never, ["a"]), { _tag: "KeyError", detail: "from" })
    await refused(h.s.fork("p", ["a", "b", "a"]), {
      _tag: "KeyError",
      actual: "a",
      detail: "to[0] and to[2] are the same key",
    })
    await refused(h.s.fork("p", ["a", "q", "q"]), { _tag: "KeyError", actual: "q" })
    await refused(h.s.fork("p", ["a", Number.NaN]), { _tag: "KeyError", detail: "to[1]" })
    await refused(h.s.fork("p", "a" as never), { _tag: "KeyError", detail: "to" })
    await refused(h.s.fork("p", []), { _tag: "KeyError", detail: "to" })
    // Capacity 4: four targets and the source do not fit; five targets do not either.
    await refused(h.s.fork("p", ["a", "b", "c", "d"]), { _tag: "KeyError" })
    await refused(h.s.fork("p", ["a", "b", "c", "d", "e"]), { _tag: "KeyError" })
    expect((h.s.fork("p", ["a", "b", "c", "d"]) as { left: Error }).left.message).toContain(
      "capacity",
    )
    // rewind: past the start, negative, fractional, NaN or miscounted n, bad or unknown keys.
    // p holds 4 positions, q 6.
    // (Keys in the other order than their recency: a read that counted as a use would show.)
    await refused(h.s.rewind(["q", "p"], 5), {
      _tag: "ShapeMismatchError",
      path: "p.cache_length",
      actual: 4,
      detail: "keys[1]",
    })
    await refused(h.s.rewind(["p", "q"], [1, 7]), {
      _tag: "ShapeMismatchError",
      path: "q.cache_length",
      actual: 6,
      detail: "keys[1]",
    })
    for (const n of [-1, 1.5, Number.NaN, [1], [1, -1], "1"]) {
      await refused(h.s.rewind(["p", "q"], n as never), { _tag: "OptionError", path: "n" })
    }
    await refused(h.s.rewind(["p", "nope"], 1), {
      _tag: "KeyError",
      actual: "nope",
      detail: "keys[1]",
    })
    await refused(h.s.rewind(["p", "p"], 1), { _tag: "KeyError", actual: "p" })
    await refused(h.s.rewind([Number.NaN], 1), { _tag: "KeyError", detail: "keys[0]" })
    // During a run: refused through the session and through its store.
    const pending = h.s.run([
      { key: "p", feeds: { input_ids: new ort.Tensor("int64", new BigInt64Array(1), [1, 1]) } },
    ])
    expect(h.s.fork("p", ["a"])).toMatchObject({
      left: { _tag: "BusyError", operation: "fork" },
    })
    expect(h.s.store.fork("p", ["a"])).toMatchObject({
      left: { _tag: "BusyError", operation: "fork" },
    })
    expect(h.s.store.peek(["p"])).toMatchObject({ left: { _tag: "BusyError", operation: "peek" } })
    expect(h.s.rewind(["p"], 1)).toMatchObject({
      left: { _tag: "BusyError", operation: "rewind" },
    })
    for (const out of orThrow(await pending).values()) out.logits.dispose()
    expect(h.s.has("a")).toBe(false)
    // After dispose.
    h.s.dispose()
    expect(h.s.fork("p", ["a"])).toMatchObject({ left: { _tag: "DisposedError" } })
    expect(h.s.rewind(["p"], 1)).toMatchObject({ left: { _tag: "DisposedError" } })
    expect(h.backend.liveTensors()).toBe(0)
  })

  it("rewind without a cache is an OptionError at cache; fork copies any state", async () => {
    const session = await ort.InferenceSession.create(lstm2(3, 4))
    const backend = ortBackend({ ort }) as OrtBackend
    const s = orThrow(createStreamingSession({ session, ort, backend }))
    const x = new ort.Tensor(
      "float32",
      Float32Array.from({ length: 6 }, (_, i) => i / 6),
      [2, 1, 3],
    )
    for (const out of orThrow(await s.run([{ key: "a", feeds: { X: x } }])).values())
      for (const t of Object.values(out)) t.dispose()
    expect(s.rewind(["a"], 1)).toMatchObject({ left: { _tag: "OptionError", path: "cache" } })
    orThrow(s.fork("a", ["b"]))
    expect(orThrow(await s.snapshot("b"))).toEqual(orThrow(await s.snapshot("a")))
    s.dispose()
    expect(backend.liveTensors()).toBe(0)
  })
})

describe.each(runtimes)("streams joining and leaving on %s", (_, ort) => {
  it("a run over streams whose rows are not side by side in key order moves them once (no stream's state changes, one in the way included); later steps copy only the new positions", async () => {
    const h = await conversations(ort, { capacity: 5 })
    const { layers, heads, headDim } = cfg
    // Per step of one token: each row's new keys and values (2 per layer); the lengths advance
    // in place.
    const stepBytes = (rows: number) => rows * 2 * layers * heads * headDim * 4
    await h.step(["a", "b", "c", "d", "x"].map((k, i) => [k, tokens(4, i)]))
    // a leaves; e joins in its slot: the store holds e, b, c, d, x in that order of rows.
    orThrow(h.s.delete("a"))
    await h.step([["e", tokens(3, 9)]])
    const x = orThrow(await h.s.snapshot("x"))
    const steady = async (keys: readonly StreamKey[], seed: number) => {
      const copied: number[] = []
      for (let t = 0; t < 3; t++) {
        const before = h.backend.bytesCopied()
        await h.step(keys.map((k, i) => [k, tokens(1, seed + 10 * t + i)]))
        copied.push(h.backend.bytesCopied() - before)
      }
      return copied
    }
    // b, c, d in place; e takes x's rows, x moves to e's: a move, then steps that copy no rows.
    const [first, ...later] = await steady(["b", "c", "d", "e"], 100)
    expect(later).toEqual([stepBytes(4), stepBytes(4)])
    expect(first).toBeGreaterThan(stepBytes(4))
    expect(orThrow(await h.s.snapshot("x"))).toEqual(x)
    // Another order, x among them: one more move, then steady again.
    const [again, ...after] = await steady(["x", "e", "d", "b"], 200)
    expect(after).toEqual([stepBytes(4), stepBytes(4)])
    expect(again).toBeGreaterThan(stepBytes(4))
    // Every stream, moved or not, equals the oracle run on its own history alone.
    await h.step(["b", "c", "d", "e", "x"].map((k, i) => [k, tokens(2, 300 + i)]))
    expect(h.worst()).toBeLessThan(TOL)
    const live = h.backend.liveTensors()
    await steady(["c", "x"], 400)
    expect(h.backend.liveTensors()).toBe(live)
    h.s.dispose()
    expect(h.backend.liveTensors()).toBe(0)
  })
})

describe("many forks (onnxruntime-node)", () => {
  it("live tensors stay flat over 300 rounds of fork, run and rewind across streams", async () => {
    const ort = ortNode as unknown as Runtime
    const session = await ort.InferenceSession.create(fixedCacheDecoder(cfg))
    const backend = ortBackend({ ort }) as OrtBackend
    const s = orThrow(
      createStreamingSession({
        session,
        ort,
        backend,
        capacity: 5,
        initialSlots: 2,
        cache: { kind: "fixed", capacity: POSITIONS },
        outputs: ["logits"],
      }),
    )
    const ids = (t: number) => new ort.Tensor("int64", BigInt64Array.from([BigInt(t % V)]), [1, 1])
    const run = async (keys: readonly StreamKey[], t: number) => {
      for (const out of orThrow(
        await s.run(keys.map((key, i) => ({ key, feeds: { input_ids: ids(t + i) } }))),
      ).values())
        out.logits.dispose()
    }
    await run(["p"], 0)
    let live = -1
    for (let t = 0; t < 300; t++) {
      // Forks into held and new keys (new ones grow the slab, then evict: six keys, five held),
      // a run, a rewind.
      const to = [`s${t % 5}`, `s${(t + 2) % 5}`]
      orThrow(s.fork("p", to))
      await run(["p", ...to], t)
      orThrow(s.rewind(["p", ...to], 1))
      if (t === 10) live = backend.liveTensors()
      if (t > 10) expect(backend.liveTensors(), `round ${t}`).toBe(live)
    }
    expect(s.size).toBe(5)
    s.dispose()
    expect(backend.liveTensors()).toBe(0)
  })
})
