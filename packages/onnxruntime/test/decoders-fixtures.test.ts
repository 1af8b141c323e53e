// The tiny decoders of helpers/decoders.ts, proven before anything is built on them: each cached
// graph, fed its presents back by hand, gives at every step the logits of its no-cache oracle on
// each row's whole prefix; the oracle graphs agree with a pure-TypeScript forward pass.
import type * as common from "onnxruntime-common"
import * as ortNode from "onnxruntime-node"
import * as ortWeb from "onnxruntime-web"
import { describe, expect, it } from "vitest"
import {
  type DecoderConfig,
  type EncoderStates,
  type StatePair,
  decoderStatePairs,
  encodeRow,
  encoderDecoder,
  encoderDecoderStatePairs,
  fixedCacheDecoder,
  growingDecoder,
  hybridDecoder,
  hybridStatePairs,
  mergedDecoder,
  noCacheDecoder,
  noCacheHybridDecoder,
  oracleLogits,
  pastName,
  presentName,
  referenceDecoderLogits,
  referenceEncoder,
  referenceEncoderDecoderLogits,
  referenceHybridLogits,
  seq2seqPresentName,
  tinyDecoderConfig,
  tinyEncoderDecoderConfig,
  tinyHybridConfig,
} from "./helpers/decoders.js"
import type { Runtime } from "./helpers/harness.js"
import { seededFloats } from "./helpers/onnx-builder.js"

ortWeb.env.wasm.numThreads = 1

const TOL = 1e-5
const node = ortNode as unknown as Runtime
const web = ortWeb as unknown as Runtime
type Tensor = common.Tensor
type Session = common.InferenceSession

const dec = tinyDecoderConfig()
const hyb = tinyHybridConfig()
const s2s = tinyEncoderDecoderConfig()

/** Deterministic tokens in [0, vocab). */
function tokens(n: number, seed: number, vocab: number): number[] {
  let s = (seed * 2654435761) >>> 0 || 3
  return Array.from({ length: n }, () => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0
    return (s >>> 8) % vocab
  })
}

const i64 = (ort: Runtime, values: readonly number[], dims: readonly number[]): Tensor =>
  new ort.Tensor("int64", BigInt64Array.from(values, BigInt), dims)
const f32 = (ort: Runtime, data: Float32Array, dims: readonly number[]): Tensor =>
  new ort.Tensor("float32", data, dims)
const zeros = (ort: Runtime, dims: readonly number[]) =>
  f32(ort, new Float32Array(dims.reduce((a, b) => a * b, 1)), dims)
const garbage = (ort: Runtime, dims: readonly number[], seed: number) =>
  f32(
    ort,
    seededFloats(
      dims.reduce((a, b) => a * b, 1),
      seed,
      50,
    ),
    dims,
  )

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length)
  let worst = 0
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs((a[i] as number) - (b[i] as number))
    if (!(d <= worst)) worst = d
  }
  return worst
}

/** One run: how many new tokens each row gets, and where a shorter row's padding goes. */
interface Step {
  readonly counts: readonly number[]
  readonly pad: "left" | "right"
}

/** Rows at different lengths: a padded prefill, a step with a hole, an idle row, then decoding. */
const PLAN: readonly Step[] = [
  { counts: [5, 3, 1], pad: "left" },
  { counts: [2, 1, 2], pad: "right" },
  { counts: [1, 0, 1], pad: "left" },
  { counts: [1, 1, 1], pad: "left" },
  { counts: [1, 1, 1], pad: "left" },
  { counts: [1, 1, 1], pad: "left" },
]

/** Row r's new-token slots in a run of width s: the valid slot indices, in order. */
function slots(count: number, s: number, pad: Step["pad"]): number[] {
  const first = pad === "left" ? s - count : 0
  return Array.from({ length: count }, (_, i) => first + i)
}

/** A hand-fed decoder: how its state inputs start and which outputs feed them back. */
interface HandModel {
  readonly session: Session
  /** Outputs fed back as inputs after every run. */
  readonly carry: readonly StatePair[]
  /** Outputs adopted after the first run only (an encoder cache); later runs keep them. */
  readonly keep?: readonly StatePair[]
  /** The state inputs of the first run. */
  readonly initial: Record<string, Tensor>
  /** Feeds `use_cache_branch`: false on the first run, true after. */
  readonly flag?: boolean
  /** Feeds `attention_mask` and `position_ids` (off: rows must stay at one length). */
  readonly masks: boolean
  /** Feeds that stay the same every run (encoder_hidden_states). */
  readonly fixed?: Record<string, Tensor>
}

/** Each run's logits of each row's valid new tokens, and the row's tokens so far. */
interface StepResult {
  readonly rows: { readonly prefix: number[]; readonly logits: Float32Array }[]
  readonly outputs: Record<string, Tensor>
}

/**
 * Runs `plan`, feeding presents back by hand into a growing cache: the mask keeps every past
 * slot (padding included, as 0), position_ids count each row's valid tokens.
 */
async function handGrowing(
  ort: Runtime,
  m: HandModel,
  plan: readonly Step[],
  sequences: readonly number[][],
  onStep: (r: StepResult, step: number) => Promise<void>,
): Promise<void> {
  const b = sequences.length
  const state: Record<string, Tensor> = { ...m.initial }
  const history: number[][] = Array.from({ length: b }, () => [])
  const used = new Array<number>(b).fill(0)
  for (const [stepIndex, step] of plan.entries()) {
    const s = Math.max(...step.counts)
    const ids = new Array<number>(b * s).fill(0)
    const pos = new Array<number>(b * s).fill(0)
    const fresh: number[][] = []
    const slotsOf: number[][] = []
    for (let r = 0; r < b; r++) {
      const count = step.counts[r] as number
      const at = slots(count, s, step.pad)
      const newMask = new Array<number>(s).fill(0)
      at.forEach((slot, i) => {
        ids[r * s + slot] = (sequences[r] as number[])[(used[r] as number) + i] as number
        pos[r * s + slot] = (used[r] as number) + i
        newMask[slot] = 1
      })
      fresh.push((sequences[r] as number[]).slice(used[r], (used[r] as number) + count))
      slotsOf.push(at)
      ;(history[r] as number[]).push(...newMask)
      used[r] = (used[r] as number) + count
    }
    const feeds: Record<string, Tensor> = { ...state, ...m.fixed, input_ids: i64(ort, ids, [b, s]) }
    if (m.masks) {
      const T = (history[0] as number[]).length
      feeds.attention_mask = i64(ort, history.flat(), [b, T])
      feeds.position_ids = i64(ort, pos, [b, s])
    }
    if (m.flag !== undefined)
      feeds.use_cache_branch = new ort.Tensor("bool", new Uint8Array([stepIndex > 0 ? 1 : 0]), [1])
    const out = await m.session.run(feeds)
    const logits = (out.logits as Tensor).data as Float32Array
    expect(out.logits?.dims).toEqual([b, s, dec.vocab])
    for (const { input, output } of m.carry) state[input] = out[output] as Tensor
    if (stepIndex === 0)
      for (const { input, output } of m.keep ?? []) state[input] = out[output] as Tensor
    const rows = slotsOf.map((at, r) => {
      const row = new Float32Array(at.length * dec.vocab)
      at.forEach((slot, i) =>
        row.set(
          logits.subarray((r * s + slot) * dec.vocab, (r * s + slot + 1) * dec.vocab),
          i * dec.vocab,
        ),
      )
      return { prefix: (sequences[r] as number[]).slice(0, used[r]), logits: row }
    })
    await onStep({ rows, outputs: out }, stepIndex)
  }
}

/** Compares each row's new logits with the oracle on that row's whole prefix; counts checks. */
function oracleCheck(
  ort: Runtime,
  oracle: Session,
  errors: number[],
  encoders?: readonly EncoderStates[],
) {
  return async (r: StepResult) => {
    for (const [row, { prefix, logits }] of r.rows.entries()) {
      if (logits.length === 0) continue
      const [full] = await oracleLogits(
        ort,
        oracle,
        [prefix],
        encoders && [encoders[row] as EncoderStates],
      )
      errors.push(maxDiff(logits, (full as Float32Array).subarray(full!.length - logits.length)))
    }
  }
}

const sequencesFor = (cfg: DecoderConfig, b: number, len: number) =>
  Array.from({ length: b }, (_, r) => tokens(len, 100 + r, cfg.vocab))
const totalTokens = (plan: readonly Step[]) =>
  plan.reduce((a, st) => a + st.counts.filter((c) => c > 0).length, 0)

describe("tiny decoder fixtures: the oracle graphs are real attention", () => {
  const rows = [tokens(9, 1, dec.vocab), tokens(4, 2, dec.vocab), tokens(1, 3, dec.vocab)]

  it("decoder-only: the no-cache graph equals the TypeScript forward pass (≤ 1e-5)", async () => {
    const oracle = await node.InferenceSession.create(noCacheDecoder(dec))
    const got = await oracleLogits(node, oracle, rows)
    for (const [r, row] of rows.entries()) {
      const want = referenceDecoderLogits(dec, row)
      expect(got[r]?.length).toBe(row.length * dec.vocab)
      expect(maxDiff(got[r] as Float32Array, want)).toBeLessThanOrEqual(TOL)
    }
    // Logits of order 1, differing across positions: nothing degenerate is being compared.
    const spread = Math.max(...(got[0] as Float32Array)) - Math.min(...(got[0] as Float32Array))
    expect(spread).toBeGreaterThan(1)
    await oracle.release()
  })

  it("decoder-only: causal (later tokens never change earlier logits) and attends to the past", async () => {
    const oracle = await node.InferenceSession.create(noCacheDecoder(dec))
    const a = tokens(8, 5, dec.vocab)
    const b = [...a]
    b[6] = ((a[6] as number) + 1) % dec.vocab
    const c = [...a]
    c[0] = ((a[0] as number) + 1) % dec.vocab
    const [la, lb, lc] = await oracleLogits(node, oracle, [a, b, c])
    const V = dec.vocab
    expect(maxDiff(la!.subarray(0, 6 * V), lb!.subarray(0, 6 * V))).toBe(0)
    // Changing the first token changes the last position's logits: attention reaches back.
    expect(maxDiff(la!.subarray(7 * V), lc!.subarray(7 * V))).toBeGreaterThan(1e-3)
    await oracle.release()
  })

  it("hybrid: the no-cache graph equals the step-by-step TypeScript recurrence (≤ 1e-5)", async () => {
    const oracle = await node.InferenceSession.create(noCacheHybridDecoder(hyb))
    const got = await oracleLogits(node, oracle, rows)
    for (const [r, row] of rows.entries())
      expect(maxDiff(got[r] as Float32Array, referenceHybridLogits(hyb, row))).toBeLessThanOrEqual(
        TOL,
      )
    await oracle.release()
  })

  it("encoder–decoder: encoder and no-cache decoder equal the TypeScript forward pass (≤ 1e-5)", async () => {
    const graphs = encoderDecoder(s2s)
    const encoder = await node.InferenceSession.create(graphs.encoder)
    const oracle = await node.InferenceSession.create(graphs.oracle)
    const frames = [5, 7, 3]
    const enc: EncoderStates[] = []
    for (const [r, f] of frames.entries()) {
      const features = seededFloats(f * s2s.featDim, 40 + r, 1)
      const e = await encodeRow(node, encoder, features, f)
      expect(maxDiff(e.data, referenceEncoder(s2s, features, f))).toBeLessThanOrEqual(TOL)
      enc.push(e)
    }
    const got = await oracleLogits(node, oracle, rows, enc)
    for (const [r, row] of rows.entries())
      expect(
        maxDiff(
          got[r] as Float32Array,
          referenceEncoderDecoderLogits(s2s, enc[r] as EncoderStates, row),
        ),
      ).toBeLessThanOrEqual(TOL)
    await Promise.all([encoder.release(), oracle.release()])
  })
})

const runtimes: [string, Runtime][] = [
  ["onnxruntime-node", node],
  ["onnxruntime-web (wasm)", web],
]

for (const [runtimeName, ort] of runtimes) {
  describe(`tiny decoder fixtures on ${runtimeName}: cached steps equal the no-cache oracle`, () => {
    const { heads: H, headDim: d } = dec
    const B = 3

    it("growing cache: padded prefill, holes, an idle row, then single tokens (≤ 1e-5 every step)", async () => {
      const session = await ort.InferenceSession.create(growingDecoder(dec))
      const oracle = await ort.InferenceSession.create(noCacheDecoder(dec))
      const pairs = decoderStatePairs(dec.layers)
      const initial = Object.fromEntries(pairs.map((p) => [p.input, zeros(ort, [B, H, 0, d])]))
      const errors: number[] = []
      const check = oracleCheck(ort, oracle, errors)
      let width = 0
      await handGrowing(
        ort,
        { session, carry: pairs, initial, masks: true },
        PLAN,
        sequencesFor(dec, B, 12),
        async (r, i) => {
          width += Math.max(...(PLAN[i] as Step).counts)
          expect(r.outputs[presentName(1, "value")]?.dims).toEqual([B, H, width, d])
          await check(r)
        },
      )
      expect(errors.length).toBe(totalTokens(PLAN))
      expect(Math.max(...errors)).toBeLessThanOrEqual(TOL)
      await Promise.all([session.release(), oracle.release()])
    })

    it("merged decoder: the flag off ignores a garbage past; on, the cache is used", async () => {
      const session = await ort.InferenceSession.create(mergedDecoder(dec))
      const oracle = await ort.InferenceSession.create(noCacheDecoder(dec))
      expect(session.inputNames).toContain("use_cache_branch")
      const pairs = decoderStatePairs(dec.layers)
      const initial = Object.fromEntries(
        pairs.map((p, i) => [p.input, garbage(ort, [B, H, 3, d], 7 + i)]),
      )
      const errors: number[] = []
      const check = oracleCheck(ort, oracle, errors)
      await handGrowing(
        ort,
        { session, carry: pairs, initial, masks: true, flag: true },
        PLAN,
        sequencesFor(dec, B, 12),
        async (r, i) => {
          // The first run's presents hold only its own tokens: the garbage past was dropped.
          if (i === 0) expect(r.outputs[presentName(0, "key")]?.dims).toEqual([B, H, 5, d])
          await check(r)
        },
      )
      expect(errors.length).toBe(totalTokens(PLAN))
      expect(Math.max(...errors)).toBeLessThanOrEqual(TOL)
      await Promise.all([session.release(), oracle.release()])
    })

    it("fixed-capacity cache (style a): garbage in unused slots changes nothing (≤ 1e-5 every step)", async () => {
      const capacity = 14
      const session = await ort.InferenceSession.create(fixedCacheDecoder(dec))
      const oracle = await ort.InferenceSession.create(noCacheDecoder(dec))
      expect(session.inputNames).toContain(pastName(0, "key"))
      const sequences = sequencesFor(dec, B, 12)
      const pairs = decoderStatePairs(dec.layers)
      const errors: number[] = []
      // Two caches with different garbage, run side by side: logits must be identical.
      const caches = [11, 29].map((seed) =>
        Object.fromEntries(
          pairs.map((p, i) => [p.input, seededFloats(B * H * capacity * d, seed + i, 50)]),
        ),
      )
      const lengths = [new Array<number>(B).fill(0), new Array<number>(B).fill(0)]
      for (const step of PLAN) {
        const s = Math.max(...step.counts)
        const runs: { logits: Float32Array; out: Record<string, Tensor> }[] = []
        const slotsOf = step.counts.map((c) => slots(c, s, step.pad))
        for (const [c, cache] of caches.entries()) {
          const len = lengths[c] as number[]
          const ids = new Array<number>(B * s).fill(0)
          const pos = new Array<number>(B * s).fill(0)
          const mask = new Array<number>(B * (capacity + s)).fill(0)
          for (let r = 0; r < B; r++) {
            for (let j = 0; j < (len[r] as number); j++) mask[r * (capacity + s) + j] = 1
            ;(slotsOf[r] as number[]).forEach((slot, i) => {
              ids[r * s + slot] = (sequences[r] as number[])[(len[r] as number) + i] as number
              pos[r * s + slot] = (len[r] as number) + i
              mask[r * (capacity + s) + capacity + slot] = 1
            })
          }
          const feeds: Record<string, Tensor> = {
            input_ids: i64(ort, ids, [B, s]),
            position_ids: i64(ort, pos, [B, s]),
            attention_mask: i64(ort, mask, [B, capacity + s]),
          }
          for (const p of pairs)
            feeds[p.input] = f32(ort, cache[p.input] as Float32Array, [B, H, capacity, d])
          const out = await session.run(feeds)
          runs.push({ logits: (out.logits as Tensor).data as Float32Array, out })
          // Write each row's valid new keys/values into its cache at its length.
          for (const p of pairs) {
            const present = out[p.output] as Tensor
            expect(present.dims).toEqual([B, H, s, d])
            const src = present.data as Float32Array
            const dst = cache[p.input] as Float32Array
            for (let r = 0; r < B; r++)
              for (let h = 0; h < H; h++)
                (slotsOf[r] as number[]).forEach((slot, i) => {
                  const from = ((r * H + h) * s + slot) * d
                  const to = ((r * H + h) * capacity + (len[r] as number) + i) * d
                  dst.set(src.subarray(from, from + d), to)
                })
          }
          for (let r = 0; r < B; r++) len[r] = (len[r] as number) + (step.counts[r] as number)
        }
        // Valid tokens' logits are bit-identical (a padding query may see only masked slots).
        const V = dec.vocab
        for (let r = 0; r < B; r++)
          for (const slot of slotsOf[r] as number[]) {
            const at = (r * s + slot) * V
            expect(runs[0]?.logits.subarray(at, at + V)).toEqual(
              runs[1]?.logits.subarray(at, at + V),
            )
          }
        const len = lengths[0] as number[]
        for (let r = 0; r < B; r++) {
          const at = slotsOf[r] as number[]
          if (at.length === 0) continue
          const [full] = await oracleLogits(ort, oracle, [
            (sequences[r] as number[]).slice(0, len[r]),
          ])
          const logits = runs[0]?.logits as Float32Array
          at.forEach((slot, i) => {
            const mine = logits.subarray((r * s + slot) * V, (r * s + slot + 1) * V)
            const t = (len[r] as number) - at.length + i
            errors.push(maxDiff(mine, full!.subarray(t * V, (t + 1) * V)))
          })
        }
      }
      expect(errors.length).toBe(
        PLAN.reduce((a, st) => a + st.counts.reduce((x, y) => x + y, 0), 0),
      )
      expect(Math.max(...errors)).toBeLessThanOrEqual(TOL)
      await Promise.all([session.release(), oracle.release()])
    })

    it("hybrid (KV caches + past_conv/past_ssm): padding and idle rows leave the recurrence exact", async () => {
      const session = await ort.InferenceSession.create(hybridDecoder(hyb))
      const oracle = await ort.InferenceSession.create(noCacheHybridDecoder(hyb))
      const { attention, recurrent } = hybridStatePairs(hyb)
      expect(recurrent.map((p) => p.input)).toEqual(["past_conv.1", "past_ssm.1"])
      const initial: Record<string, Tensor> = {
        ...Object.fromEntries(attention.map((p) => [p.input, zeros(ort, [B, H, 0, d])])),
        "past_conv.1": zeros(ort, [B, hyb.inner, hyb.convWidth]),
        "past_ssm.1": zeros(ort, [B, hyb.inner, hyb.stateSize]),
      }
      const errors: number[] = []
      const check = oracleCheck(ort, oracle, errors)
      await handGrowing(
        ort,
        { session, carry: [...attention, ...recurrent], initial, masks: true },
        PLAN,
        sequencesFor(hyb, B, 12),
        async (r) => {
          expect(r.outputs["present_conv.1"]?.dims).toEqual([B, hyb.inner, hyb.convWidth])
          expect(r.outputs["present_ssm.1"]?.dims).toEqual([B, hyb.inner, hyb.stateSize])
          await check(r)
        },
      )
      expect(errors.length).toBe(totalTokens(PLAN))
      expect(Math.max(...errors)).toBeLessThanOrEqual(TOL)
      await Promise.all([session.release(), oracle.release()])
    })

    for (const masks of [false, true])
      it(`encoder–decoder (${masks ? "with decoder masks, rows at different lengths" : "Whisper inputs"}): encoder cache kept from the first step`, async () => {
        const graphs = encoderDecoder(s2s, { masks })
        const encoder = await ort.InferenceSession.create(graphs.encoder)
        const session = await ort.InferenceSession.create(graphs.decoder)
        const oracle = await ort.InferenceSession.create(graphs.oracle)
        const F = 6
        const enc: EncoderStates[] = []
        for (let r = 0; r < B; r++)
          enc.push(await encodeRow(ort, encoder, seededFloats(F * s2s.featDim, 60 + r, 1), F))
        const states = new Float32Array(B * F * s2s.hidden)
        enc.forEach((e, r) => states.set(e.data, r * F * s2s.hidden))
        const { decoder, encoder: cross } = encoderDecoderStatePairs(s2s.layers)
        const initial = Object.fromEntries([
          ...decoder.map((p, i) => [p.input, garbage(ort, [B, H, 2, d], 80 + i)] as const),
          ...cross.map((p, i) => [p.input, garbage(ort, [B, H, F, d], 90 + i)] as const),
        ])
        const plan: readonly Step[] = masks
          ? PLAN
          : [
              { counts: [3, 3, 3], pad: "left" },
              ...Array.from({ length: 5 }, (): Step => ({ counts: [1, 1, 1], pad: "left" })),
            ]
        const errors: number[] = []
        const check = oracleCheck(ort, oracle, errors, enc)
        const model: HandModel = {
          session,
          carry: decoder,
          keep: cross,
          initial,
          masks,
          flag: true,
          fixed: { encoder_hidden_states: f32(ort, states, [B, F, s2s.hidden]) },
        }
        let kept: Record<string, Tensor> = {}
        await handGrowing(ort, model, plan, sequencesFor(s2s, B, 12), async (r, i) => {
          const present = r.outputs[seq2seqPresentName(0, "encoder", "key")]
          // First step: the cross-attention cache; later steps: Optimum's empty placeholder.
          expect(present?.dims).toEqual(i === 0 ? [B, H, F, d] : [0, H, 1, d])
          if (i === 0)
            kept = Object.fromEntries(cross.map((p) => [p.input, r.outputs[p.output] as Tensor]))
          await check(r)
        })
        expect(errors.length).toBe(totalTokens(plan))
        expect(Math.max(...errors)).toBeLessThanOrEqual(TOL)
        // The kept cache is what later steps read: zeroing it changes the logits.
        const probe: Record<string, Tensor> = {
          input_ids: i64(ort, [1, 2, 3], [B, 1]),
          encoder_hidden_states: f32(ort, states, [B, F, s2s.hidden]),
          use_cache_branch: new ort.Tensor("bool", new Uint8Array([1]), [1]),
          ...Object.fromEntries(decoder.map((p) => [p.input, zeros(ort, [B, H, 2, d])])),
          ...kept,
        }
        if (masks) {
          probe.attention_mask = i64(ort, new Array<number>(B * 3).fill(1), [B, 3])
          probe.position_ids = i64(ort, [2, 2, 2], [B, 1])
        }
        const a = (await session.run(probe)).logits as Tensor
        for (const p of cross) probe[p.input] = zeros(ort, [B, H, F, d])
        const z = (await session.run(probe)).logits as Tensor
        expect(maxDiff(a.data as Float32Array, z.data as Float32Array)).toBeGreaterThan(1e-3)
        await Promise.all([encoder.release(), session.release(), oracle.release()])
      })
  })
}
