// `StreamingSession.runBatch`: the streams' feeds given as one batch (row i is keys[i]'s) and the
// outputs handed back batched. Oracle: the same weights run without any cache on each
// conversation's whole history alone (helpers/decoders.ts `noCacheDecoder`), and for the
// encoder–decoder on its own encoder states alone.
import { type StreamKey, orThrow } from "@statesaver/core"
import type * as common from "onnxruntime-common"
import * as ortNode from "onnxruntime-node"
import * as ortWeb from "onnxruntime-web"
import { describe, expect, it } from "vitest"
import {
  type KvCacheOptions,
  type OrtBackend,
  type StreamingSession,
  createStreamingSession,
  ortBackend,
} from "../src/index.js"
import {
  type EncoderStates,
  encodeRow,
  encoderDecoder,
  fixedCacheDecoder,
  growingDecoder,
  noCacheDecoder,
  oracleLogits,
  tinyDecoderConfig,
  tinyEncoderDecoderConfig,
  seededTokens,
} from "./helpers/decoders.js"
import type { Runtime } from "./helpers/harness.js"
import { seededFloats } from "./helpers/onnx-builder.js"

ortWeb.env.wasm.numThreads = 1

const cfg = tinyDecoderConfig()
const TOL = 1e-5
const CAPACITY = 24
const runtimes: readonly [string, Runtime][] = [
  ["onnxruntime-node", ortNode as unknown as Runtime],
  ["onnxruntime-web wasm", ortWeb as unknown as Runtime],
]
const kinds: readonly { name: string; bytes: Uint8Array; cache: KvCacheOptions }[] = [
  { name: "fixed", bytes: fixedCacheDecoder(cfg), cache: { kind: "fixed", capacity: CAPACITY } },
  { name: "growing", bytes: growingDecoder(cfg), cache: { kind: "growing" } },
]

/** Deterministic tokens in [0, vocab). */
const tokens = (n: number, seed: number): number[] => seededTokens(n, seed, cfg.vocab)

/** `rows` token lists of one length as an `input_ids` tensor `[rows, n]`. */
const idsOf = (ort: Runtime, rows: readonly (readonly number[])[]): common.Tensor =>
  new ort.Tensor("int64", BigInt64Array.from(rows.flat(), BigInt), [
    rows.length,
    rows[0]?.length ?? 0,
  ])

describe.each(runtimes)("runBatch on %s", (_, ort) => {
  describe.each(kinds)("$name cache", (kind) => {
    it("conversations at different lengths, joining, leaving, evicted and restored, mixed with run: each row equals the oracle alone", async () => {
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
          onEvict: (key, bytes) => void evicted.set(key, bytes),
        }),
      ) as StreamingSession<"logits">
      const history = new Map<StreamKey, number[]>()
      let worst = 0
      let seed = 1
      /** One call of `keys`, `n` tokens each, through `runBatch` (or `run`), checked row by row. */
      const step = async (keys: string[], n: number, how: "runBatch" | "run" = "runBatch") => {
        await chats.flush()
        for (const k of keys) {
          const bytes = evicted.get(k)
          if (bytes !== undefined && !chats.has(k)) {
            orThrow(chats.restore(k, bytes))
            evicted.delete(k)
          }
        }
        const chunks = keys.map(() => tokens(n, seed++))
        let rows: common.Tensor[]
        if (how === "runBatch") {
          const { logits } = orThrow(await chats.runBatch(keys, { input_ids: idsOf(ort, chunks) }))
          expect(logits.dims).toEqual([keys.length, n, cfg.vocab])
          const data = logits.data as Float32Array
          const size = n * cfg.vocab
          rows = keys.map(
            (_, i) =>
              new ort.Tensor("float32", data.slice(i * size, (i + 1) * size), [1, n, cfg.vocab]),
          )
          logits.dispose()
        } else {
          const outs = orThrow(
            await chats.run(
              keys.map((key, i) => ({ key, feeds: { input_ids: idsOf(ort, [chunks[i] ?? []]) } })),
            ),
          )
          rows = keys.map((k) => outs.get(k)?.logits as common.Tensor)
        }
        for (const [i, k] of keys.entries())
          history.set(k, [...(history.get(k) ?? []), ...(chunks[i] as number[])])
        const expected = await oracleLogits(
          ort,
          oracle,
          keys.map((k) => history.get(k) as number[]),
        )
        for (const [i, k] of keys.entries()) {
          const got = rows[i]?.data as Float32Array
          const want = expected[i] as Float32Array
          const T = (history.get(k) as number[]).length
          for (let j = 0; j < n * cfg.vocab; j++)
            worst = Math.max(
              worst,
              Math.abs((got[j] as number) - (want[(T - n) * cfg.vocab + j] as number)),
            )
          rows[i]?.dispose()
        }
      }
      await step(["a"], 3) // a's prompt
      await step(["a"], 1)
      await step(["b"], 4) // b joins with its prompt, in a call of its own
      for (let t = 0; t < 3; t++) await step(["a", "b"], 1) // at different lengths
      await step(["b", "a"], 1, "run") // the same streams through run
      await step(["b", "a"], 1) // in another order
      await step(["c"], 2)
      await step(["d"], 2) // capacity 3: the least recently used (b) is evicted
      expect(evicted.has("b")).toBe(true)
      orThrow(chats.delete("d")) // d leaves; b comes back from its bytes
      for (let t = 0; t < 3; t++) await step(["a", "b", "c"], 1)
      orThrow(chats.delete("b"))
      for (let t = 0; t < 2; t++) await step(["c", "a"], 1)
      expect(worst).toBeLessThan(TOL)
      chats.dispose()
      expect(backend.liveTensors()).toBe(0)
    })
  })
})

describe("runBatch refuses bad input with typed errors, and nothing changes", () => {
  it("keys, feeds, rows, derived and state feeds, options, capacity and a run in flight", async () => {
    const ort = ortNode as unknown as Runtime
    const session = await ort.InferenceSession.create(fixedCacheDecoder(cfg))
    const backend = ortBackend({ ort }) as OrtBackend
    const chats = orThrow(
      createStreamingSession({
        session,
        ort,
        backend,
        capacity: 4,
        cache: { kind: "fixed", capacity: CAPACITY },
        outputs: ["logits"],
      }),
    )
    for (const [i, key] of ["a", "b"].entries()) {
      const n = i === 0 ? 3 : CAPACITY - 1
      orThrow(
        await chats.runBatch([key], { input_ids: idsOf(ort, [tokens(n, i)]) }),
      ).logits.dispose()
    }
    const one = (rows: number) =>
      idsOf(
        ort,
        Array.from({ length: rows }, (_, r) => [r]),
      )
    // A call in flight: runBatch and run are refused until it settles.
    const pending = chats.runBatch(["a"], { input_ids: one(1) })
    expect(await chats.runBatch(["b"], { input_ids: one(1) })).toMatchObject({
      _tag: "Left",
      left: { _tag: "BusyError" },
    })
    expect(await chats.run([{ key: "b", feeds: { input_ids: one(1) } }])).toMatchObject({
      _tag: "Left",
      left: { _tag: "BusyError" },
    })
    orThrow(await pending).logits.dispose()
    const order = chats.keys()
    const bytes = async () => Promise.all(order.map(async (k) => orThrow(await chats.snapshot(k))))
    const before = await bytes()
    const live = backend.liveTensors()
    const disposed = one(2)
    disposed.dispose()
    const int64 = (dims: number[]) =>
      new ort.Tensor("int64", new BigInt64Array(dims.reduce((a, b) => a * b, 1)), dims)
    const cases: [string, () => ReturnType<typeof chats.runBatch>, Record<string, unknown>][] = [
      [
        "keys not an array",
        () => chats.runBatch("a" as never, { input_ids: one(1) }),
        { _tag: "KeyError" },
      ],
      ["no keys", () => chats.runBatch([], { input_ids: one(0) }), { _tag: "KeyError" }],
      [
        "a key twice",
        () => chats.runBatch(["a", "a"], { input_ids: one(2) }),
        { _tag: "KeyError", actual: "a" },
      ],
      [
        "a NaN key",
        () => chats.runBatch([Number.NaN], { input_ids: one(1) }),
        { _tag: "KeyError" },
      ],
      [
        "feeds not a record",
        () => chats.runBatch(["a"], null as never),
        { _tag: "StructureMismatchError", path: "feeds" },
      ],
      [
        "a feed not a tensor",
        () => chats.runBatch(["a"], { input_ids: 5 as never }),
        { _tag: "StructureMismatchError", path: "input_ids" },
      ],
      [
        "a disposed feed",
        () => chats.runBatch(["a", "b"], { input_ids: disposed }),
        { _tag: "DisposedError", path: "input_ids" },
      ],
      [
        "no input_ids",
        () => chats.runBatch(["a"], {}),
        { _tag: "StructureMismatchError", path: "input_ids", actual: "none" },
      ],
      [
        "3 rows for 2 keys",
        () => chats.runBatch(["a", "b"], { input_ids: one(3) }),
        { _tag: "BatchSizeMismatchError", path: "input_ids", expected: 2, actual: 3 },
      ],
      [
        "float32 input_ids (the model declares int64)",
        () =>
          chats.runBatch(["a"], {
            input_ids: new ort.Tensor("float32", new Float32Array(1), [1, 1]),
          }),
        { _tag: "DTypeMismatchError", path: "input_ids", expected: "int64", actual: "float32" },
      ],
      [
        "a scalar input_ids",
        () => chats.runBatch(["a"], { input_ids: int64([]) }),
        { _tag: "ShapeMismatchError", path: "input_ids" },
      ],
      [
        "a derived input fed",
        () => chats.runBatch(["a"], { input_ids: one(1), attention_mask: int64([1, 5]) }),
        { _tag: "StructureMismatchError", path: "attention_mask" },
      ],
      [
        "a state input fed",
        () => chats.runBatch(["a"], { input_ids: one(1), "past_key_values.0.key": one(1) }),
        { _tag: "StructureMismatchError", path: '["past_key_values.0.key"]' },
      ],
      [
        "an unknown input",
        () => chats.runBatch(["a"], { input_ids: one(1), foo: one(1) }),
        { _tag: "StructureMismatchError", path: "foo" },
      ],
      [
        "shared feeds",
        () => chats.runBatch(["a"], { input_ids: one(1) }, { shared: {} } as never),
        { _tag: "OptionError", path: "shared" },
      ],
      [
        "options not a record",
        () => chats.runBatch(["a"], { input_ids: one(1) }, 5 as never),
        { _tag: "OptionError", path: "options" },
      ],
      [
        "runOptions not a record",
        () => chats.runBatch(["a"], { input_ids: one(1) }, { runOptions: 1 as never }),
        { _tag: "OptionError", path: "runOptions" },
      ],
      // b holds CAPACITY - 1 positions: 2 more do not fit.
      [
        "past the capacity",
        () =>
          chats.runBatch(["a", "b"], {
            input_ids: idsOf(ort, [
              [1, 2],
              [3, 4],
            ]),
          }),
        { _tag: "ShapeMismatchError", path: "cache_length" },
      ],
    ]
    for (const [what, call, left] of cases) {
      expect(await call(), what).toMatchObject({ _tag: "Left", left })
      expect(chats.keys(), what).toEqual(order)
      expect(backend.liveTensors(), what).toBe(live)
    }
    expect(await bytes()).toEqual(before)
    chats.dispose()
    expect(await chats.runBatch(["a"], { input_ids: one(1) })).toMatchObject({
      _tag: "Left",
      left: { _tag: "DisposedError" },
    })
    expect(backend.liveTensors()).toBe(0)
  })
})

describe.each(runtimes)(
  "runBatch of an encoder–decoder holding its encoder states on %s",
  (_, ort) => {
    it("streams starting together feed their encoder states as one batch, held after; refused when missing, fed again or of the wrong rows; each equals the oracle alone", async () => {
      const ecfg = tinyEncoderDecoderConfig()
      const F = 5
      const graphs = encoderDecoder(ecfg, { masks: true })
      const encoder = await ort.InferenceSession.create(graphs.encoder)
      const decoder = await ort.InferenceSession.create(graphs.decoder)
      const oracle = await ort.InferenceSession.create(graphs.oracle)
      const states = new Map<string, EncoderStates>()
      for (const [i, key] of ["a", "b"].entries())
        states.set(key, await encodeRow(ort, encoder, seededFloats(F * ecfg.featDim, 60 + i, 1), F))
      const backend = ortBackend({ ort }) as OrtBackend
      const chats = orThrow(
        createStreamingSession({
          session: decoder,
          ort,
          backend,
          capacity: 2,
          cache: { kind: "growing", encoder: "encoder_hidden_states" },
          outputs: ["logits"],
        }),
      )
      const keys = ["a", "b"]
      const encoded = (rows: number) => {
        const data = new Float32Array(rows * F * ecfg.hidden)
        for (let r = 0; r < rows; r++)
          data.set((states.get(keys[r] as string) as EncoderStates).data, r * F * ecfg.hidden)
        return new ort.Tensor("float32", data, [rows, F, ecfg.hidden])
      }
      const ids = (rows: number[][]) =>
        new ort.Tensor("int64", BigInt64Array.from(rows.flat(), BigInt), [
          rows.length,
          rows[0]?.length ?? 0,
        ])
      // Missing, or with a row per key missing, when the streams start: refused, nothing held.
      expect(
        await chats.runBatch(keys, {
          input_ids: ids([
            [1, 2],
            [3, 4],
          ]),
        }),
      ).toMatchObject({
        _tag: "Left",
        left: { _tag: "StructureMismatchError", path: "encoder_hidden_states", actual: "none" },
      })
      expect(
        await chats.runBatch(keys, {
          input_ids: ids([
            [1, 2],
            [3, 4],
          ]),
          encoder_hidden_states: encoded(1),
        }),
      ).toMatchObject({
        _tag: "Left",
        left: {
          _tag: "BatchSizeMismatchError",
          path: "encoder_hidden_states",
          expected: 2,
          actual: 1,
        },
      })
      expect(chats.size).toBe(0)
      const history: number[][] = [[], []]
      let worst = 0
      let seed = 3
      const step = async (n: number, fed?: common.Tensor) => {
        const chunk = keys.map(() =>
          Array.from({ length: n }, () => (seed = (seed * 31 + 7) % 997) % ecfg.vocab),
        )
        const { logits } = orThrow(
          await chats.runBatch(keys, {
            input_ids: ids(chunk),
            ...(fed === undefined ? {} : { encoder_hidden_states: fed }),
          }),
        )
        fed?.dispose() // the session holds a copy
        const data = logits.data as Float32Array
        for (const [r, key] of keys.entries()) {
          const h = (history[r] = [...(history[r] as number[]), ...(chunk[r] as number[])])
          const [want] = await oracleLogits(ort, oracle, [h], [states.get(key) as EncoderStates])
          for (let j = 0; j < n * ecfg.vocab; j++)
            worst = Math.max(
              worst,
              Math.abs(
                (data[r * n * ecfg.vocab + j] as number) -
                  ((want as Float32Array)[(h.length - n) * ecfg.vocab + j] as number),
              ),
            )
        }
        logits.dispose()
      }
      await step(3, encoded(2))
      for (let t = 0; t < 3; t++) await step(1)
      const before = [orThrow(await chats.snapshot("a")), orThrow(await chats.snapshot("b"))]
      // Fed again while under way: refused, naming the feed.
      expect(
        await chats.runBatch(keys, {
          input_ids: ids([[1], [2]]),
          encoder_hidden_states: encoded(2),
        }),
      ).toMatchObject({
        _tag: "Left",
        left: { _tag: "StructureMismatchError", path: "encoder_hidden_states", actual: "a feed" },
      })
      expect([orThrow(await chats.snapshot("a")), orThrow(await chats.snapshot("b"))]).toEqual(
        before,
      )
      await step(1)
      expect(worst).toBeLessThan(TOL)
      chats.dispose()
      expect(backend.liveTensors()).toBe(0)
    })
  },
)
