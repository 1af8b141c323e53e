// Decoder export formats through a StatefulSession with `cache`, each against its no-cache
// oracle (the same weights run on each row's whole history alone): a merged decoder whose
// `use_cache_branch` the session derives, over a growing and over a fixed-capacity cache, an
// encoder–decoder whose cross-attention cache is kept from the first step, and a hybrid
// recurrent + attention model.
import { orThrow } from "@statesaver/core"
import type * as common from "onnxruntime-common"
import * as ortNode from "onnxruntime-node"
import * as ortWeb from "onnxruntime-web"
import { describe, expect, it } from "vitest"
import { createStatefulSession, createStreamingSession, ortBackend } from "../src/index.js"
import {
  type EncoderStates,
  encodeRow,
  encoderDecoder,
  hybridDecoder,
  decoderStatePairs,
  mergedDecoder,
  mergedFixedDecoder,
  noCacheDecoder,
  noCacheHybridDecoder,
  oracleLogits,
  tinyDecoderConfig,
  tinyEncoderDecoderConfig,
  tinyHybridConfig,
} from "./helpers/decoders.js"
import type { Runtime } from "./helpers/harness.js"
import { seededFloats } from "./helpers/onnx-builder.js"

ortWeb.env.wasm.numThreads = 1
const TOL = 1e-5
const runtimes: readonly [string, Runtime][] = [
  ["onnxruntime-node", ortNode as unknown as Runtime],
  ["onnxruntime-web wasm", ortWeb as unknown as Runtime],
]

function tokens(n: number, seed: number, vocab: number): number[] {
  let s = (seed * 2654435761) >>> 0 || 3
  return Array.from({ length: n }, () => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0
    return (s >>> 8) % vocab
  })
}

/** The largest difference between a run's logits and the oracle's for each row's last `n`. */
function gap(
  logits: Float32Array,
  expected: readonly Float32Array[],
  history: readonly number[][],
  n: number,
  vocab: number,
): number {
  let worst = 0
  expected.forEach((want, r) => {
    const T = (history[r] as number[]).length
    for (let j = 0; j < n * vocab; j++) {
      const got = logits[r * n * vocab + j] as number
      worst = Math.max(worst, Math.abs(got - (want[(T - n) * vocab + j] as number)))
    }
  })
  return worst
}

/**
 * Steps a session two rows at a time and tracks each row's history and the largest gap to the
 * oracle run on each row's whole history alone. `extra` adds feeds (an encoder's states).
 */
function tracker(
  ort: Runtime,
  s: { run: (feeds: never) => Promise<unknown> },
  oracle: common.InferenceSession,
  vocab: number,
  extra: () => Record<string, common.Tensor> = () => ({}),
  encoderStates?: readonly EncoderStates[],
) {
  let history: number[][] = [[], []]
  let worst = 0
  return {
    async step(chunk: number[][]) {
      const n = (chunk[0] as number[]).length
      const ids = new ort.Tensor("int64", BigInt64Array.from(chunk.flat(), BigInt), [2, n])
      // The caller feeds input_ids (and any extra): masks, positions and flags are derived.
      const result = await s.run({ input_ids: ids, ...extra() } as never)
      const out = orThrow(result as Parameters<typeof orThrow>[0]) as { logits: common.Tensor }
      history = history.map((h, r) => [...h, ...(chunk[r] as number[])])
      const expected = await oracleLogits(ort, oracle, history, encoderStates)
      worst = Math.max(worst, gap(out.logits.data as Float32Array, expected, history, n, vocab))
      out.logits.dispose()
    },
    /** Row `r` starts over (after a reset of that row). */
    restart(rows: readonly number[]) {
      history = history.map((h, r) => (rows.includes(r) ? [] : h))
    },
    /** The last `n` tokens of `rows` are dropped (after a rewind of those rows). */
    rewind(rows: readonly number[], n: number) {
      history = history.map((h, r) => (rows.includes(r) ? h.slice(0, h.length - n) : h))
    },
    lengths: () => history.map((h) => h.length),
    worst: () => worst,
  }
}

/**
 * The masked encoder–decoder's sessions and two rows' encoder states (frames seeded from
 * `seed`), as one [2, F, hidden] array too.
 */
async function encoderDecoderRows(ort: Runtime, seed: number) {
  const cfg = tinyEncoderDecoderConfig()
  const graphs = encoderDecoder(cfg, { masks: true })
  const encoder = await ort.InferenceSession.create(graphs.encoder)
  const decoder = await ort.InferenceSession.create(graphs.decoder)
  const oracle = await ort.InferenceSession.create(graphs.oracle)
  const F = 5
  const enc: EncoderStates[] = []
  for (let r = 0; r < 2; r++)
    enc.push(await encodeRow(ort, encoder, seededFloats(F * cfg.featDim, seed + r, 1), F))
  const hidden = new Float32Array(2 * F * cfg.hidden)
  enc.forEach((e, r) => hidden.set(e.data, r * F * cfg.hidden))
  return { cfg, decoder, oracle, F, enc, hidden }
}

describe.each(runtimes)("decoder formats on %s", (_, ort) => {
  it("merged decoder: use_cache_branch derived (off on the empty first step, on after), equal to the oracle", async () => {
    const cfg = tinyDecoderConfig()
    const session = await ort.InferenceSession.create(mergedDecoder(cfg))
    const oracle = await ort.InferenceSession.create(noCacheDecoder(cfg))
    const s = orThrow(
      createStatefulSession({
        session,
        backend: ortBackend({ ort }),
        batchSize: 2,
        cache: { kind: "growing" },
        outputs: ["logits"],
      }),
    )
    const { step, restart, worst } = tracker(ort, s, oracle, cfg.vocab)
    await step([tokens(3, 1, cfg.vocab), tokens(3, 2, cfg.vocab)])
    for (let t = 0; t < 4; t++)
      await step([tokens(1, 10 + t, cfg.vocab), tokens(1, 20 + t, cfg.vocab)])
    orThrow(s.reset([0]))
    restart([0])
    for (let t = 0; t < 3; t++)
      await step([tokens(1, 30 + t, cfg.vocab), tokens(1, 40 + t, cfg.vocab)])
    // Feeding the flag by hand is refused: the session derives it.
    const flag = new ort.Tensor("bool", Uint8Array.of(1), [1])
    const ids = new ort.Tensor("int64", new BigInt64Array(2), [2, 1])
    expect(await s.run({ input_ids: ids, use_cache_branch: flag } as never)).toMatchObject({
      left: { _tag: "StructureMismatchError", path: "use_cache_branch" },
    })
    expect(worst()).toBeLessThan(TOL)
    s.dispose()
  })

  it("merged decoder over a fixed cache, fed by hand: the flag off ignores the cache even where the mask is 1, on reads it", async () => {
    const cfg = tinyDecoderConfig()
    const session = await ort.InferenceSession.create(mergedFixedDecoder(cfg))
    const oracle = await ort.InferenceSession.create(noCacheDecoder(cfg))
    const [capacity, n] = [6, 3]
    const rows = [tokens(n, 7, cfg.vocab), tokens(n, 8, cfg.vocab)]
    const i64 = (values: readonly number[], dims: number[]) =>
      new ort.Tensor("int64", BigInt64Array.from(values, BigInt), dims)
    const feeds = (flag: number, maskWidth: number): Record<string, common.Tensor> => ({
      input_ids: i64(rows.flat(), [2, n]),
      position_ids: i64([0, 1, 2, 0, 1, 2], [2, n]),
      attention_mask: i64(new Array<number>(2 * maskWidth).fill(1), [2, maskWidth]),
      use_cache_branch: new ort.Tensor("bool", Uint8Array.of(flag), [1]),
      ...Object.fromEntries(
        decoderStatePairs(cfg.layers).map((p, i) => [
          p.input,
          new ort.Tensor(
            "float32",
            seededFloats(2 * cfg.heads * capacity * cfg.headDim, 90 + i, 3),
            [2, cfg.heads, capacity, cfg.headDim],
          ),
        ]),
      ),
    })
    const expected = await oracleLogits(ort, oracle, rows)
    const logitsOf = async (f: Record<string, common.Tensor>) => {
      const out = await session.run(f)
      expect(out["present.1.value"]?.dims).toEqual([2, cfg.heads, n, cfg.headDim])
      return Float32Array.from(out.logits?.data as Float32Array)
    }
    // Off: the window is the last n mask columns, whether the mask spans the cache or not.
    for (const width of [capacity + n, n])
      expect(gap(await logitsOf(feeds(0, width)), expected, rows, n, cfg.vocab)).toBeLessThan(TOL)
    // On: the unmasked garbage is attended to.
    expect(
      gap(await logitsOf(feeds(1, capacity + n)), expected, rows, n, cfg.vocab),
    ).toBeGreaterThan(1e-2)
  })

  it("merged decoder over a fixed cache: use_cache_branch derived (off while every row is empty, on after), a padded prompt rewound and a row reset mid-flight equal to the oracle", async () => {
    const cfg = tinyDecoderConfig()
    const capacity = 16
    const inner = await ort.InferenceSession.create(mergedFixedDecoder(cfg))
    const oracle = await ort.InferenceSession.create(noCacheDecoder(cfg))
    // The flag each run was given, as the model received it.
    const flags: number[] = []
    const session = {
      inputNames: inner.inputNames,
      outputNames: inner.outputNames,
      inputMetadata: inner.inputMetadata,
      outputMetadata: inner.outputMetadata,
      run: (feeds: Record<string, common.Tensor>, ...rest: unknown[]) => {
        flags.push(Number((feeds.use_cache_branch?.data as Uint8Array)[0]))
        return (inner.run as (...a: unknown[]) => Promise<unknown>)(feeds, ...rest)
      },
    } as unknown as common.InferenceSession
    const backend = ortBackend({ ort })
    const s = orThrow(
      createStatefulSession({
        session,
        backend,
        batchSize: 2,
        cache: { kind: "fixed", capacity },
        outputs: ["logits"],
      }),
    )
    const kv = decoderStatePairs(cfg.layers)
    expect(s.pairs.map((p) => p.input).sort()).toEqual(kv.map((p) => p.input).sort())
    const { step, restart, rewind, lengths, worst } = tracker(ort, s, oracle, cfg.vocab)
    const lengthLeaf = () => Array.from(s.state()["cache_length"]?.data as Int32Array)
    // Prompts of 4 and 2 tokens, row 1 right-padded to 4 and rewound by its 2 pads.
    await step([tokens(4, 1, cfg.vocab), [...tokens(2, 2, cfg.vocab), 0, 0]])
    orThrow(s.rewind([1], 2))
    rewind([1], 2)
    expect(lengthLeaf()).toEqual([4, 2])
    for (let t = 0; t < 4; t++)
      await step([tokens(1, 10 + t, cfg.vocab), tokens(1, 20 + t, cfg.vocab)])
    // Row 0 starts over while row 1 goes on: the flag stays on, row 0's cache is masked.
    orThrow(s.reset([0]))
    restart([0])
    for (let t = 0; t < 3; t++)
      await step([tokens(1, 30 + t, cfg.vocab), tokens(1, 40 + t, cfg.vocab)])
    expect(lengthLeaf()).toEqual([3, 9])
    expect(lengths()).toEqual([3, 9])
    // Every row reset: the cache holds the old keys, but the next prompt runs with the flag off.
    orThrow(s.reset())
    restart([0, 1])
    await step([tokens(3, 5, cfg.vocab), tokens(3, 6, cfg.vocab)])
    await step([tokens(1, 50, cfg.vocab), tokens(1, 60, cfg.vocab)])
    expect(flags).toEqual([0, 1, 1, 1, 1, 1, 1, 1, 0, 1])
    expect(lengthLeaf()).toEqual([4, 4])
    for (const p of kv)
      expect(s.state()[p.input]?.dims).toEqual([2, cfg.heads, capacity, cfg.headDim])
    expect(worst()).toBeLessThan(TOL)
    // Feeding the flag by hand is refused before anything runs: the state is unchanged.
    const before = orThrow(await s.snapshot())
    for (const value of [0, 1]) {
      const refused = await s.run({
        input_ids: new ort.Tensor("int64", new BigInt64Array(2), [2, 1]),
        use_cache_branch: new ort.Tensor("bool", Uint8Array.of(value), [1]),
      } as never)
      expect(refused).toMatchObject({
        _tag: "Left",
        left: { _tag: "StructureMismatchError", path: "use_cache_branch" },
      })
    }
    expect(flags.length).toBe(10)
    expect(orThrow(await s.snapshot())).toEqual(before)
    s.dispose()
    expect(backend.liveTensors()).toBe(0)
  })

  it("encoder–decoder: the cross-attention cache of the first step is kept, the placeholders after are not adopted", async () => {
    const { cfg, decoder, oracle, F, enc, hidden } = await encoderDecoderRows(ort, 60)
    const backend = ortBackend({ ort })
    const s = orThrow(
      createStatefulSession({
        session: decoder,
        backend,
        batchSize: 2,
        cache: { kind: "growing" },
        outputs: ["logits"],
      }),
    )
    const encoderStates = () => ({
      encoder_hidden_states: new ort.Tensor("float32", hidden, [2, F, cfg.hidden]),
    })
    const { step, restart, worst } = tracker(ort, s, oracle, cfg.vocab, encoderStates, enc)
    await step([tokens(2, 3, cfg.vocab), tokens(2, 4, cfg.vocab)])
    const crossKey = s.state()["past_key_values.0.encoder.key"]
    expect(crossKey?.dims).toEqual([2, cfg.heads, F, cfg.headDim])
    const first = Float32Array.from(crossKey?.data as Float32Array)
    for (let t = 0; t < 4; t++)
      await step([tokens(1, 50 + t, cfg.vocab), tokens(1, 60 + t, cfg.vocab)])
    // Kept: the same tensor, the same values, not the [0, heads, 1, dim] placeholders.
    expect(s.state()["past_key_values.0.encoder.key"]).toBe(crossKey)
    expect(Float32Array.from(crossKey?.data as Float32Array)).toEqual(first)
    expect(worst()).toBeLessThan(TOL)
    // A reset row has no encoder cache while the other row's is under way: refused, unchanged.
    const before = orThrow(await s.snapshot())
    orThrow(s.reset([1]))
    const refused = await s.run({
      input_ids: new ort.Tensor("int64", new BigInt64Array(2), [2, 1]),
      ...encoderStates(),
    })
    expect(refused).toMatchObject({
      _tag: "Left",
      left: {
        _tag: "StructureMismatchError",
        path: "past_key_values.0.encoder.key",
        actual: "none in row 1",
      },
    })
    orThrow(s.restore(before))
    expect(orThrow(await s.snapshot())).toEqual(before)
    // Every row reset: the next step runs without the cache and fills the encoder caches again.
    orThrow(s.reset())
    restart([0, 1])
    await step([tokens(2, 7, cfg.vocab), tokens(2, 8, cfg.vocab)])
    await step([tokens(1, 9, cfg.vocab), tokens(1, 10, cfg.vocab)])
    expect(worst()).toBeLessThan(TOL)
    s.dispose()
    expect(backend.liveTensors()).toBe(0)
  })

  it("encoder–decoder with cache.encoder: encoder_hidden_states fed once when the cache starts, held per row after (copied, carried by select and snapshots), refused when missing, fed again or for a reset row", async () => {
    const { cfg, decoder, oracle, F, enc, hidden } = await encoderDecoderRows(ort, 70)
    const backend = ortBackend({ ort })
    const options = {
      session: decoder,
      backend,
      batchSize: 2,
      cache: { kind: "growing", encoder: "encoder_hidden_states" },
      outputs: ["logits"],
    } as const
    const s = orThrow(createStatefulSession(options))
    const ids = (n: number, seed: number) =>
      new ort.Tensor(
        "int64",
        BigInt64Array.from(
          [...tokens(n, seed, cfg.vocab), ...tokens(n, seed + 1, cfg.vocab)],
          BigInt,
        ),
        [2, n],
      )
    const states = (rows = 2) =>
      new ort.Tensor("float32", hidden.slice(0, rows * F * cfg.hidden), [rows, F, cfg.hidden])
    // Missing on the run that starts the cache, or for the wrong batch: refused, nothing changes.
    const empty = orThrow(await s.snapshot())
    expect(await s.run({ input_ids: ids(3, 1) })).toMatchObject({
      _tag: "Left",
      left: { _tag: "StructureMismatchError", path: "encoder_hidden_states", actual: "none" },
    })
    expect(await s.run({ input_ids: ids(3, 1), encoder_hidden_states: states(1) })).toMatchObject({
      _tag: "Left",
      left: { _tag: "BatchSizeMismatchError", path: "encoder_hidden_states" },
    })
    expect(orThrow(await s.snapshot())).toEqual(empty)
    let fed: ReturnType<typeof states> | undefined = states()
    const extra = (): Record<string, common.Tensor> =>
      fed === undefined ? {} : { encoder_hidden_states: fed }
    const { step, restart, worst } = tracker(ort, s, oracle, cfg.vocab, extra, enc)
    await step([tokens(3, 3, cfg.vocab), tokens(3, 4, cfg.vocab)])
    // The session holds a copy: the caller's tensor is theirs to free.
    fed.dispose()
    fed = undefined
    expect(s.state()["encoder_hidden_states"]?.dims).toEqual([2, F, cfg.hidden])
    for (let t = 0; t < 4; t++)
      await step([tokens(1, 50 + t, cfg.vocab), tokens(1, 60 + t, cfg.vocab)])
    expect(worst()).toBeLessThan(TOL)
    // Fed again while the rows are under way: refused, unchanged.
    const under = orThrow(await s.snapshot())
    expect(await s.run({ input_ids: ids(1, 9), encoder_hidden_states: states() })).toMatchObject({
      _tag: "Left",
      left: { _tag: "StructureMismatchError", actual: "a feed" },
    })
    expect(orThrow(await s.snapshot())).toEqual(under)
    // A snapshot carries the held states: another session restored from it continues alike.
    const twin = orThrow(createStatefulSession({ ...options, backend: ortBackend({ ort }) }))
    orThrow(twin.restore(under))
    const a = orThrow(await s.run({ input_ids: ids(1, 20) })).logits
    const b = orThrow(await twin.run({ input_ids: ids(1, 20) })).logits
    expect(Array.from(b.data as Float32Array)).toEqual(Array.from(a.data as Float32Array))
    a.dispose()
    b.dispose()
    // select moves each row's held states with the row.
    const rowOf = (t: common.Tensor | undefined, r: number) =>
      Array.from((t?.data as Float32Array).subarray(r * F * cfg.hidden, (r + 1) * F * cfg.hidden))
    const held = s.state()["encoder_hidden_states"]
    const [row0, row1] = [rowOf(held, 0), rowOf(held, 1)]
    orThrow(twin.select([1, 0]))
    expect(rowOf(twin.state()["encoder_hidden_states"], 0)).toEqual(row1)
    expect(rowOf(twin.state()["encoder_hidden_states"], 1)).toEqual(row0)
    twin.dispose()
    // A reset row among rows under way has none: refused, unchanged.
    orThrow(s.restore(under))
    orThrow(s.reset([1]))
    const partly = orThrow(await s.snapshot())
    expect(await s.run({ input_ids: ids(1, 30) })).toMatchObject({
      _tag: "Left",
      left: {
        _tag: "StructureMismatchError",
        path: "encoder_hidden_states",
        actual: "none in row 1",
      },
    })
    expect(orThrow(await s.snapshot())).toEqual(partly)
    // Every row reset: the next run starts the cache again with new states.
    orThrow(s.reset())
    restart([0, 1])
    fed = states()
    await step([tokens(2, 7, cfg.vocab), tokens(2, 8, cfg.vocab)])
    fed = undefined
    await step([tokens(1, 9, cfg.vocab), tokens(1, 10, cfg.vocab)])
    expect(worst()).toBeLessThan(TOL)
    s.dispose()
    expect(backend.liveTensors()).toBe(0)
    // The option names a plain model input, in either kind of session.
    for (const bad of [
      "nope",
      "input_ids",
      "use_cache_branch",
      "past_key_values.0.decoder.key",
      7,
    ]) {
      const made = createStatefulSession({
        ...options,
        cache: { kind: "growing", encoder: bad as never },
      })
      expect(made, String(bad)).toMatchObject({
        _tag: "Left",
        left: { _tag: "OptionError", path: "cache.encoder", actual: bad },
      })
    }
    for (const bad of ["nope", "input_ids", "past_key_values.0.decoder.key", null, Number.NaN]) {
      const streaming = createStreamingSession({
        session: decoder,
        ort,
        backend: ortBackend({ ort }),
        cache: { kind: "growing", encoder: bad as never },
      })
      expect(streaming, String(bad)).toMatchObject({
        _tag: "Left",
        left: { _tag: "OptionError", path: "cache.encoder", actual: bad },
      })
    }
  })

  it("hybrid recurrent + attention: conv/ssm states and KV caches paired by convention in one state", async () => {
    const cfg = tinyHybridConfig()
    const session = await ort.InferenceSession.create(hybridDecoder(cfg))
    const oracle = await ort.InferenceSession.create(noCacheHybridDecoder(cfg))
    const s = orThrow(
      createStatefulSession({
        session,
        backend: ortBackend({ ort }),
        batchSize: 2,
        cache: { kind: "growing" },
        outputs: ["logits"],
      }),
    )
    const inputs = s.pairs.map((p) => p.input)
    expect(inputs).toContain("past_ssm.1")
    expect(inputs).toContain("past_conv.1")
    expect(inputs).toContain("past_key_values.0.key")
    const { step, restart, worst } = tracker(ort, s, oracle, cfg.vocab)
    await step([tokens(3, 5, cfg.vocab), tokens(3, 6, cfg.vocab)])
    for (let t = 0; t < 3; t++)
      await step([tokens(1, 70 + t, cfg.vocab), tokens(1, 80 + t, cfg.vocab)])
    // A reset row starts over: its KV rows masked and its recurrent state at zeros.
    orThrow(s.reset([1]))
    restart([1])
    for (let t = 0; t < 3; t++)
      await step([tokens(1, 90 + t, cfg.vocab), tokens(1, 95 + t, cfg.vocab)])
    // A rewind would drop KV positions but cannot roll the recurrent state back: refused,
    // naming a recurrent leaf, nothing changed (the next steps still equal the oracle).
    const before = orThrow(await s.snapshot())
    const refused = s.rewind([0], 1)
    expect(refused).toMatchObject({
      _tag: "Left",
      left: {
        _tag: "StructureMismatchError",
        path: expect.stringMatching(/^\["past_(ssm|conv)\.\d"\]$/),
        actual: "recurrent state (no positions)",
      },
    })
    expect(orThrow(await s.snapshot())).toEqual(before)
    for (let t = 0; t < 2; t++)
      await step([tokens(1, 60 + t, cfg.vocab), tokens(1, 65 + t, cfg.vocab)])
    expect(worst()).toBeLessThan(TOL)
    s.dispose()
  })

  it("hybrid recurrent + attention in a StreamingSession: a rewind is refused, naming the recurrent leaf, nothing changed", async () => {
    const cfg = tinyHybridConfig()
    const session = await ort.InferenceSession.create(hybridDecoder(cfg))
    const chats = orThrow(
      createStreamingSession({
        session,
        ort,
        backend: ortBackend({ ort }),
        capacity: 2,
        cache: { kind: "growing" },
        outputs: ["logits"],
      }),
    )
    const ids = (n: number, seed: number) =>
      new ort.Tensor("int64", BigInt64Array.from(tokens(n, seed, cfg.vocab), BigInt), [1, n])
    for (const out of orThrow(
      await chats.run([
        { key: "a", feeds: { input_ids: ids(3, 1) } },
        { key: "b", feeds: { input_ids: ids(3, 2) } },
      ]),
    ).values())
      out.logits.dispose()
    const before = [orThrow(await chats.snapshot("a")), orThrow(await chats.snapshot("b"))]
    expect(chats.rewind(["a", "b"], 1)).toMatchObject({
      _tag: "Left",
      left: {
        _tag: "StructureMismatchError",
        path: expect.stringMatching(/^\["past_(ssm|conv)\.\d"\]$/),
      },
    })
    expect([orThrow(await chats.snapshot("a")), orThrow(await chats.snapshot("b"))]).toEqual(before)
    chats.dispose()
  })
})

void ({} as common.Tensor)
