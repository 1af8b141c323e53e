/// <reference types="@webgpu/types" />
// The tiny decoders of helpers/decoders.ts on the WebGPU EP (headless Chromium): every op runs
// on the GPU (a CPU fallback would read GPU memory back through mapAsync), and a cached run whose
// state never leaves the GPU gives the no-cache oracle's logits (wasm EP).
import * as ort from "onnxruntime-web/webgpu"
import { describe, expect, it } from "vitest"
import {
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
  tinyDecoderConfig,
  tinyEncoderDecoderConfig,
  tinyHybridConfig,
} from "./helpers/decoders.js"
import { seededFloats } from "./helpers/onnx-builder.js"

ort.env.wasm.numThreads = 1

const TOL = 1e-5
const B = 2
const dec = tinyDecoderConfig()
const hyb = tinyHybridConfig()
const s2s = tinyEncoderDecoderConfig()
const { heads: H, headDim: d } = dec

/** Counts GPU → CPU reads: every read goes through `GPUBuffer.prototype.mapAsync`. */
function countReads(): { reads: () => number; restore: () => void } {
  const proto = GPUBuffer.prototype
  const original = proto.mapAsync
  let n = 0
  proto.mapAsync = function (this: GPUBuffer, ...args: Parameters<GPUBuffer["mapAsync"]>) {
    n++
    return original.apply(this, args)
  }
  return { reads: () => n, restore: () => (proto.mapAsync = original) }
}

const i64 = (values: readonly number[], dims: readonly number[]) =>
  new ort.Tensor("int64", BigInt64Array.from(values, BigInt), dims)
const zeros = (dims: readonly number[]) =>
  new ort.Tensor("float32", new Float32Array(dims.reduce((a, b) => a * b, 1)), dims)
const rowTokens = (r: number, n: number) =>
  Array.from({ length: n }, (_, t) => (7 * r + 5 * t + 3) % dec.vocab)

async function gpuSession(bytes: Uint8Array): Promise<ort.InferenceSession> {
  const probe = await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"] })
  const outputs = probe.outputNames
  await probe.release()
  return ort.InferenceSession.create(bytes, {
    executionProviders: ["webgpu"],
    preferredOutputLocation: Object.fromEntries(outputs.map((n) => [n, "gpu-buffer" as const])),
  })
}

interface GpuCase {
  readonly name: string
  readonly bytes: Uint8Array
  readonly oracle: Uint8Array
  readonly carry: readonly StatePair[]
  readonly keep?: readonly StatePair[]
  readonly initial: () => Record<string, ort.Tensor>
  readonly flag?: boolean
  readonly masks: boolean
  readonly encoder?: Uint8Array
}

const kvPairs = decoderStatePairs(dec.layers)
const kvZeros = (pairs: readonly StatePair[]) => () =>
  Object.fromEntries(pairs.map((p) => [p.input, zeros([B, H, 0, d])]))
const hybridPairs = hybridStatePairs(hyb)
const seq2seq = encoderDecoder(s2s)
const seq2seqPairs = encoderDecoderStatePairs(s2s.layers)

const cases: GpuCase[] = [
  {
    name: "growing cache",
    bytes: growingDecoder(dec),
    oracle: noCacheDecoder(dec),
    carry: kvPairs,
    initial: kvZeros(kvPairs),
    masks: true,
  },
  {
    name: "merged decoder",
    bytes: mergedDecoder(dec),
    oracle: noCacheDecoder(dec),
    carry: kvPairs,
    initial: kvZeros(kvPairs),
    flag: true,
    masks: true,
  },
  {
    name: "hybrid (KV + conv/ssm)",
    bytes: hybridDecoder(hyb),
    oracle: noCacheHybridDecoder(hyb),
    carry: [...hybridPairs.attention, ...hybridPairs.recurrent],
    initial: () => ({
      ...kvZeros(hybridPairs.attention)(),
      "past_conv.1": zeros([B, hyb.inner, hyb.convWidth]),
      "past_ssm.1": zeros([B, hyb.inner, hyb.stateSize]),
    }),
    masks: true,
  },
  {
    name: "encoder–decoder (Whisper inputs)",
    bytes: seq2seq.decoder,
    oracle: seq2seq.oracle,
    encoder: seq2seq.encoder,
    carry: seq2seqPairs.decoder,
    keep: seq2seqPairs.encoder,
    initial: () =>
      Object.fromEntries([
        ...seq2seqPairs.decoder.map((p) => [p.input, zeros([B, H, 0, d])] as const),
        ...seq2seqPairs.encoder.map((p) => [p.input, zeros([B, H, 0, d])] as const),
      ]),
    flag: true,
    masks: false,
  },
]

describe("tiny decoder fixtures on WebGPU", () => {
  for (const c of cases)
    it(`${c.name}: 8 tokens with the cache on the GPU, 0 reads back, last logits equal the oracle`, async () => {
      const session = await gpuSession(c.bytes)
      const cpu = await ort.InferenceSession.create(c.oracle, { executionProviders: ["wasm"] })
      const F = 5
      const features = Array.from({ length: B }, (_, r) => seededFloats(F * s2s.featDim, 60 + r, 1))
      const fixed: Record<string, ort.Tensor> = {}
      let encoders: EncoderStates[] | undefined
      if (c.encoder !== undefined) {
        const all = new Float32Array(B * F * s2s.featDim)
        features.forEach((f, r) => all.set(f, r * f.length))
        const encoder = await gpuSession(c.encoder)
        const out = await encoder.run({
          input_features: new ort.Tensor("float32", all, [B, F, s2s.featDim]),
        })
        fixed.encoder_hidden_states = out.last_hidden_state as ort.Tensor
        const cpuEncoder = await ort.InferenceSession.create(c.encoder, {
          executionProviders: ["wasm"],
        })
        encoders = []
        for (const f of features) encoders.push(await encodeRow(ort, cpuEncoder, f, F))
        await cpuEncoder.release()
      }
      const steps = [3, 1, 1, 1, 1, 1]
      const state: Record<string, ort.Tensor> = c.initial()
      const sequences = Array.from({ length: B }, (_, r) => rowTokens(r, 8))
      let done = 0
      let last: ort.Tensor | undefined
      const counter = countReads()
      try {
        for (const [i, s] of steps.entries()) {
          const ids = sequences.flatMap((row) => row.slice(done, done + s))
          const feeds: Record<string, ort.Tensor> = {
            ...state,
            ...fixed,
            input_ids: i64(ids, [B, s]),
          }
          if (c.masks) {
            feeds.attention_mask = i64(new Array<number>(B * (done + s)).fill(1), [B, done + s])
            const pos = Array.from({ length: s }, (_, t) => done + t)
            feeds.position_ids = i64([...pos, ...pos], [B, s])
          }
          if (c.flag === true)
            feeds.use_cache_branch = new ort.Tensor("bool", new Uint8Array([i > 0 ? 1 : 0]), [1])
          const out = await session.run(feeds)
          done += s
          last?.dispose()
          last = out.logits as ort.Tensor
          expect(last.location).toBe("gpu-buffer")
          const adopt = [...c.carry, ...(i === 0 ? (c.keep ?? []) : [])]
          for (const { input, output } of adopt) {
            const old = state[input]
            if (old?.location === "gpu-buffer") old.dispose()
            state[input] = out[output] as ort.Tensor
          }
          const adopted = new Set(adopt.map((p) => p.output))
          for (const [name, t] of Object.entries(out))
            if (name !== "logits" && !adopted.has(name)) t.dispose()
        }
        expect(counter.reads()).toBe(0)
      } finally {
        counter.restore()
      }
      const got = (await (last as ort.Tensor).getData()) as Float32Array
      const want = await oracleLogits(ort, cpu, sequences, encoders)
      const V = dec.vocab
      let worst = 0
      for (let r = 0; r < B; r++) {
        const w = want[r] as Float32Array
        const mine = got.subarray(r * V, (r + 1) * V)
        const ref = w.subarray(w.length - V)
        for (let v = 0; v < V; v++)
          worst = Math.max(worst, Math.abs((mine[v] as number) - (ref[v] as number)))
      }
      expect(worst).toBeLessThanOrEqual(TOL)
      for (const t of [...Object.values(state), ...Object.values(fixed), last as ort.Tensor])
        if (t.location === "gpu-buffer") t.dispose()
      await Promise.all([session.release(), cpu.release()])
    })

  it("fixed-capacity cache (style a): a run over a garbage-filled cache reads nothing back and equals the oracle", async () => {
    const capacity = 8
    const session = await gpuSession(fixedCacheDecoder(dec))
    const cpu = await ort.InferenceSession.create(noCacheDecoder(dec), {
      executionProviders: ["wasm"],
    })
    const s = 3
    const feeds: Record<string, ort.Tensor> = {
      input_ids: i64([1, 2, 3, 4, 5, 6], [B, s]),
      position_ids: i64([0, 1, 2, 0, 1, 2], [B, s]),
      attention_mask: i64(
        Array.from({ length: B * (capacity + s) }, (_, j) =>
          j % (capacity + s) >= capacity ? 1 : 0,
        ),
        [B, capacity + s],
      ),
    }
    kvPairs.forEach((p, i) => {
      feeds[p.input] = new ort.Tensor("float32", seededFloats(B * H * capacity * d, 3 + i, 50), [
        B,
        H,
        capacity,
        d,
      ])
    })
    const counter = countReads()
    const out = await session.run(feeds)
    expect(counter.reads()).toBe(0)
    counter.restore()
    expect(out["present.0.key"]?.dims).toEqual([B, H, s, d])
    const got = (await (out.logits as ort.Tensor).getData()) as Float32Array
    const want = await oracleLogits(ort, cpu, [
      [1, 2, 3],
      [4, 5, 6],
    ])
    let worst = 0
    want.forEach((w, r) => {
      for (let i = 0; i < w.length; i++)
        worst = Math.max(worst, Math.abs((got[r * w.length + i] as number) - (w[i] as number)))
    })
    expect(worst).toBeLessThanOrEqual(TOL)
    for (const t of Object.values(out)) t.dispose()
    await Promise.all([session.release(), cpu.release()])
  })
})
