// A merged encoder–decoder (growing cache, cross-attention caches kept from the first step)
// serving several conversations through one StreamingSession: new conversations start in a
// call of their own while others are under way, then all run together; every conversation's
// logits equal the same weights run without a cache on its whole history alone.
import { type StreamKey, orThrow } from "@statesaver/core"
import type * as common from "onnxruntime-common"
import * as ortNode from "onnxruntime-node"
import * as ortWeb from "onnxruntime-web"
import { describe, expect, it } from "vitest"
import { type OrtBackend, createStreamingSession, ortBackend } from "../src/index.js"
import {
  type EncoderStates,
  encodeRow,
  encoderDecoder,
  oracleLogits,
  tinyEncoderDecoderConfig,
} from "./helpers/decoders.js"
import type { Runtime } from "./helpers/harness.js"
import { seededFloats } from "./helpers/onnx-builder.js"

ortWeb.env.wasm.numThreads = 1
const TOL = 1e-5
const runtimes: readonly [string, Runtime][] = [
  ["onnxruntime-node", ortNode as unknown as Runtime],
  ["onnxruntime-web wasm", ortWeb as unknown as Runtime],
]

/** Frames per encoder output. */
const F = 5

/** The tiny masked encoder–decoder's sessions, and encoder states of streams a, b and c. */
async function models(ort: Runtime, seed: number) {
  const cfg = tinyEncoderDecoderConfig()
  const graphs = encoderDecoder(cfg, { masks: true })
  const encoder = await ort.InferenceSession.create(graphs.encoder)
  const decoder = await ort.InferenceSession.create(graphs.decoder)
  const oracle = await ort.InferenceSession.create(graphs.oracle)
  const states = new Map<string, EncoderStates>()
  for (const [i, key] of ["a", "b", "c"].entries())
    states.set(key, await encodeRow(ort, encoder, seededFloats(F * cfg.featDim, seed + i, 1), F))
  return { cfg, encoder, decoder, oracle, states }
}

/** The largest difference between `got` and the oracle's logits `want` from position `from`. */
function gap(got: common.Tensor, want: Float32Array | undefined, from: number): number {
  const data = got.data as Float32Array
  let worst = 0
  for (let j = 0; j < data.length; j++)
    worst = Math.max(worst, Math.abs((data[j] as number) - (want?.[from + j] as number)))
  return worst
}

describe.each(runtimes)("encoder–decoder conversations in a StreamingSession on %s", (_, ort) => {
  it("conversations start in calls of their own while others are under way, then run together, each equal to the oracle alone; a mixed call and another encoder length are refused, nothing changed", async () => {
    const { cfg, encoder, decoder, oracle, states } = await models(ort, 40)
    const backend = ortBackend({ ort }) as OrtBackend
    const chats = orThrow(
      createStreamingSession({
        session: decoder,
        ort,
        backend,
        capacity: 4,
        cache: { kind: "growing" },
        outputs: ["logits"],
      }),
    )
    const history = new Map<string, number[]>()
    let seed = 1
    let worst = 0
    const feedsOf = (key: string, ids: number[], enc = states.get(key) as EncoderStates) => ({
      input_ids: new ort.Tensor("int64", BigInt64Array.from(ids, BigInt), [1, ids.length]),
      encoder_hidden_states: new ort.Tensor("float32", enc.data, [
        1,
        enc.frames,
        enc.data.length / enc.frames,
      ]),
    })
    const next = (n: number) =>
      Array.from({ length: n }, () => (seed = (seed * 31 + 7) % 997) % cfg.vocab)
    /** One call: `calls` maps each stream to its new tokens; each stream checked alone. */
    const step = async (calls: Record<string, number>) => {
      const ids = Object.fromEntries(Object.entries(calls).map(([k, n]) => [k, next(n)]))
      const outs = orThrow(
        await chats.run(Object.entries(ids).map(([key, t]) => ({ key, feeds: feedsOf(key, t) }))),
      )
      for (const [key, t] of Object.entries(ids)) {
        const h = [...(history.get(key) ?? []), ...t]
        history.set(key, h)
        const [want] = await oracleLogits(ort, oracle, [h], [states.get(key) as EncoderStates])
        const got = outs.get(key)?.logits as common.Tensor
        expect(got.dims).toEqual([1, t.length, cfg.vocab])
        worst = Math.max(worst, gap(got, want, (h.length - t.length) * cfg.vocab))
        got.dispose()
      }
    }
    await step({ a: 3 })
    await step({ a: 1 })
    await step({ a: 1 })
    // "b" starts while "a" is under way: a call of its own runs without the cache.
    await step({ b: 2 })
    for (let t = 0; t < 3; t++) await step({ a: 1, b: 1 })
    // A prompt longer than the store's rows grows them; then all three run together.
    await step({ c: 9 })
    for (let t = 0; t < 2; t++) await step({ b: 1, c: 1, a: 1 })
    expect(worst).toBeLessThan(TOL)

    const held = async () =>
      Promise.all(["a", "b", "c"].map(async (k) => orThrow(await chats.snapshot(k))))
    const before = await held()
    // A call mixing a conversation under way with one that has not started: refused.
    const mixed = await chats.run([
      { key: "a", feeds: feedsOf("a", [1]) },
      { key: "d", feeds: feedsOf("a", [2]) },
    ])
    expect(mixed).toMatchObject({
      _tag: "Left",
      left: { _tag: "StructureMismatchError", actual: "none in row 1" },
    })
    // A conversation whose encoder output has another length: refused, naming the cache.
    const other = await encodeRow(ort, encoder, seededFloats((F - 1) * cfg.featDim, 9, 1), F - 1)
    const refused = await chats.run([{ key: "d", feeds: feedsOf("d", [1, 2], other) }])
    expect(refused).toMatchObject({
      _tag: "Left",
      left: {
        _tag: "ShapeMismatchError",
        path: expect.stringMatching(/encoder\.(key|value)/),
        expected: expect.stringContaining(`${F} positions`),
        actual: F - 1,
      },
    })
    expect(chats.has("d")).toBe(false)
    expect(await held()).toEqual(before)
    // Still going after the refusals.
    await step({ c: 1, a: 1 })
    expect(worst).toBeLessThan(TOL)
    chats.dispose()
    expect(backend.liveTensors()).toBe(0)
  })

  it("with cache.encoder the session holds each stream's encoder states: fed once when the stream starts (copied), carried by snapshots, eviction and fork; refused when missing, fed again, or mixed; each stream equal to the oracle alone", async () => {
    const { cfg, decoder, oracle, states } = await models(ort, 80)
    const evicted = new Map<string, Uint8Array>()
    const backend = ortBackend({ ort }) as OrtBackend
    const options = {
      session: decoder,
      ort,
      backend,
      capacity: 2,
      cache: { kind: "growing", encoder: "encoder_hidden_states" },
      outputs: ["logits"],
      onEvict: (key: StreamKey, snapshot: Uint8Array) => void evicted.set(String(key), snapshot),
    } as const
    const chats = orThrow(createStreamingSession(options))
    const history = new Map<string, number[]>()
    let seed = 5
    let worst = 0
    const ids = (t: number[]) =>
      new ort.Tensor("int64", BigInt64Array.from(t, BigInt), [1, t.length])
    const encoded = (key: string) => {
      const enc = states.get(key) as EncoderStates
      return new ort.Tensor("float32", enc.data.slice(), [1, F, cfg.hidden])
    }
    /** One call; streams in `start` feed their encoder states (and the caller frees them after). */
    const step = async (
      calls: Record<string, number>,
      start: readonly string[] = [],
      session = chats,
      oracleOf: (key: string) => string = (key) => key,
    ) => {
      const tokensOf = Object.fromEntries(
        Object.entries(calls).map(([k, n]) => [
          k,
          Array.from({ length: n }, () => (seed = (seed * 31 + 7) % 997) % cfg.vocab),
        ]),
      )
      const fed = new Map(start.map((k) => [k, encoded(k)]))
      const outs = orThrow(
        await session.run(
          Object.entries(tokensOf).map(([key, t]) => ({
            key,
            feeds: {
              input_ids: ids(t),
              ...(fed.has(key) ? { encoder_hidden_states: fed.get(key) as common.Tensor } : {}),
            },
          })),
        ),
      )
      // The session holds copies: the fed tensors are the caller's to free.
      for (const t of fed.values()) t.dispose()
      for (const [key, t] of Object.entries(tokensOf)) {
        const h = [...(history.get(key) ?? []), ...t]
        history.set(key, h)
        const enc = states.get(oracleOf(key)) as EncoderStates
        const [want] = await oracleLogits(ort, oracle, [h], [enc])
        const got = outs.get(key)?.logits as common.Tensor
        worst = Math.max(worst, gap(got, want, (h.length - t.length) * cfg.vocab))
        got.dispose()
      }
    }
    // Missing when "a" starts: refused, nothing held.
    expect(await chats.run([{ key: "a", feeds: { input_ids: ids([1, 2]) } }])).toMatchObject({
      _tag: "Left",
      left: { _tag: "StructureMismatchError", path: "a.encoder_hidden_states", actual: "none" },
    })
    expect(chats.has("a")).toBe(false)
    // Fed with another dtype, rank or batch size: typed errors naming the stream's feed.
    const bad: [common.Tensor, string][] = [
      [
        new ort.Tensor("int64", new BigInt64Array(F * cfg.hidden), [1, F, cfg.hidden]),
        "DTypeMismatchError",
      ],
      [
        new ort.Tensor("float32", new Float32Array(F * cfg.hidden), [F, cfg.hidden]),
        "ShapeMismatchError",
      ],
      [
        new ort.Tensor("float32", new Float32Array(2 * F * cfg.hidden), [2, F, cfg.hidden]),
        "BatchSizeMismatchError",
      ],
    ]
    for (const [t, tag] of bad) {
      const refused = await chats.run([
        { key: "a", feeds: { input_ids: ids([1, 2]), encoder_hidden_states: t } },
      ])
      expect(refused, tag).toMatchObject({
        _tag: "Left",
        left: { _tag: tag, path: "a.encoder_hidden_states" },
      })
    }
    expect(chats.has("a")).toBe(false)
    await step({ a: 3 }, ["a"])
    await step({ a: 1 })
    // "b" starts alone while "a" is under way; then both run, fed nothing but tokens.
    await step({ b: 2 }, ["b"])
    for (let t = 0; t < 2; t++) await step({ a: 1, b: 1 })
    expect(worst).toBeLessThan(TOL)
    const before = [orThrow(await chats.snapshot("a")), orThrow(await chats.snapshot("b"))]
    // Fed again while under way, and a call mixing a new stream with one under way: refused.
    expect(
      await chats.run([
        { key: "a", feeds: { input_ids: ids([1]), encoder_hidden_states: encoded("a") } },
      ]),
    ).toMatchObject({
      _tag: "Left",
      left: { _tag: "StructureMismatchError", path: "a.encoder_hidden_states", actual: "a feed" },
    })
    expect(
      await chats.run([
        { key: "a", feeds: { input_ids: ids([1]) } },
        { key: "c", feeds: { input_ids: ids([1]), encoder_hidden_states: encoded("c") } },
      ]),
    ).toMatchObject({
      _tag: "Left",
      left: {
        _tag: "StructureMismatchError",
        path: "c.encoder_hidden_states",
        actual: "none: the stream has not started",
      },
    })
    // (The refused call's new stream evicted nothing: "b", the least recently used, is held.)
    expect(chats.has("b")).toBe(true)
    expect(evicted.size).toBe(0)
    expect([orThrow(await chats.snapshot("a")), orThrow(await chats.snapshot("b"))]).toEqual(before)
    expect(chats.has("c")).toBe(false)
    // "c" starting evicts the least recently used stream ("a"), whose snapshot holds its states.
    await step({ c: 4 }, ["c"])
    expect(chats.has("a")).toBe(false)
    await step({ b: 1, c: 1 })
    // "a" comes back from its eviction snapshot and goes on with no encoder feed.
    orThrow(chats.delete("b"))
    orThrow(chats.restore("a", evicted.get("a") as Uint8Array))
    await step({ a: 1, c: 1 })
    // A fork carries the held states: "d" continues "a"'s conversation.
    orThrow(chats.delete("c"))
    orThrow(chats.fork("a", ["d"]))
    history.set("d", [...(history.get("a") as number[])])
    await step({ a: 1, d: 1 }, [], chats, (key) => (key === "d" ? "a" : key))
    // A reset stream starts again with new states.
    orThrow(chats.reset(["d"]))
    history.set("d", [])
    states.set("d", states.get("c") as EncoderStates)
    await step({ d: 2 }, ["d"])
    await step({ a: 1, d: 1 })
    expect(worst).toBeLessThan(TOL)
    // Another session restored from a snapshot continues alike.
    const twin = orThrow(createStreamingSession({ ...options, backend: ortBackend({ ort }) }))
    orThrow(twin.restore("a", orThrow(await chats.snapshot("a"))))
    const x = orThrow(await chats.run([{ key: "a", feeds: { input_ids: ids([3]) } }]))
    const y = orThrow(await twin.run([{ key: "a", feeds: { input_ids: ids([3]) } }]))
    expect(Array.from(y.get("a")?.logits.data as Float32Array)).toEqual(
      Array.from(x.get("a")?.logits.data as Float32Array),
    )
    x.get("a")?.logits.dispose()
    y.get("a")?.logits.dispose()
    twin.dispose()
    chats.dispose()
    expect(backend.liveTensors()).toBe(0)
  })
})
