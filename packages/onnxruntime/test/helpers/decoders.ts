// Tiny decoders with real attention, written as ONNX graphs in code, with Optimum's input and
// output names; the same weights as no-cache oracle graphs and as a pure-TypeScript forward pass.
//
// Every graph uses default-domain ops of opset 17 only (Gather, MatMul, Add, Mul, Sub, Softmax,
// Concat, Reshape, Transpose, Where, Equal, Less, Greater, Cast, Range, Shape, Slice, Squeeze,
// Unsqueeze, ReduceSum, Exp, Sigmoid, Tanh, ConstantOfShape, If): no contrib op, so they run on
// onnxruntime-node, onnxruntime-web (wasm) and the WebGPU EP.
//
// Masking rule shared by every decoder: new token i (0-based among this run's s tokens) sees
// position j of the attention window iff attention_mask[row, j] == 1 and j <= past + i, where
// past = attention_mask length - s. Masked scores are replaced (Where) by -1e9 before Softmax, so
// they get exactly 0 weight; cached keys may hold anything there, cached values any finite number.
import type * as common from "onnxruntime-common"
import { seededFloats } from "./onnx-builder.js"
import { Graph, encodeModel } from "./onnx-graph.js"

// ---------------------------------------------------------------------------------------------
// Configurations

/** Sizes of a decoder-only model (all layers attention). */
export interface DecoderConfig {
  readonly vocab: number
  readonly hidden: number
  readonly heads: number
  readonly headDim: number
  readonly layers: number
  /** Rows of the position embedding: position_ids must stay below it. */
  readonly maxPosition: number
  /** Seeds every weight: two configs with the same sizes and seed have the same weights. */
  readonly seed: number
}

/** An encoder–decoder (Whisper/T5 style): `layers` decoder layers with cross-attention. */
export interface EncoderDecoderConfig extends DecoderConfig {
  /** Size of one input frame of the encoder (`input_features [b, frames, featDim]`). */
  readonly featDim: number
  /** Rows of the encoder's position embedding: frames must stay below it. */
  readonly maxFrames: number
  readonly encoderLayers: number
}

/** A hybrid decoder: attention layers with KV caches and Mamba-style recurrent layers. */
export interface HybridConfig extends DecoderConfig {
  /** Indices (among `layers`) of the recurrent layers; every other layer is attention. */
  readonly recurrentLayers: readonly number[]
  /** Channels d of the recurrent layers (`past_ssm [b, d, n]`, `past_conv [b, d, k]`). */
  readonly inner: number
  /** State size n of the selective scan. */
  readonly stateSize: number
  /** Width k of the causal convolution window. */
  readonly convWidth: number
}

function check(cfg: object, positive: readonly string[]): void {
  for (const k of positive) {
    const v = (cfg as Record<string, unknown>)[k]
    if (typeof v !== "number" || !Number.isInteger(v) || v < 1)
      throw new Error(`decoder config: ${k} must be a positive integer, got ${String(v)}`)
  }
}

const DECODER_FIELDS = ["vocab", "hidden", "heads", "headDim", "layers", "maxPosition", "seed"]

/** A small decoder config (vocab 32, hidden 16, 2 heads of 8, 2 layers, 64 positions, seed 1). */
export function tinyDecoderConfig(overrides: Partial<DecoderConfig> = {}): DecoderConfig {
  const cfg = {
    vocab: 32,
    hidden: 16,
    heads: 2,
    headDim: 8,
    layers: 2,
    maxPosition: 64,
    seed: 1,
    ...overrides,
  }
  check(cfg, DECODER_FIELDS)
  return cfg
}

/** A small encoder–decoder config (the decoder of {@link tinyDecoderConfig}, seed 2, featDim 6). */
export function tinyEncoderDecoderConfig(
  overrides: Partial<EncoderDecoderConfig> = {},
): EncoderDecoderConfig {
  const cfg = {
    ...tinyDecoderConfig({ seed: 2 }),
    featDim: 6,
    maxFrames: 32,
    encoderLayers: 2,
    ...overrides,
  }
  check(cfg, [...DECODER_FIELDS, "featDim", "maxFrames", "encoderLayers"])
  return cfg
}

/** A small hybrid config: layers [attention, recurrent, attention], d 16, n 4, k 3, seed 3. */
export function tinyHybridConfig(overrides: Partial<HybridConfig> = {}): HybridConfig {
  const cfg = {
    ...tinyDecoderConfig({ seed: 3, layers: 3 }),
    recurrentLayers: [1],
    inner: 16,
    stateSize: 4,
    convWidth: 3,
    ...overrides,
  }
  check(cfg, [...DECODER_FIELDS, "inner", "stateSize", "convWidth"])
  for (const l of cfg.recurrentLayers)
    if (!Number.isInteger(l) || l < 0 || l >= cfg.layers)
      throw new Error(`hybrid config: recurrent layer ${l} is not in [0, ${cfg.layers})`)
  return cfg
}

// ---------------------------------------------------------------------------------------------
// Names

export type KV = "key" | "value"

/** `past_key_values.N.key` / `.value`. */
export const pastName = (layer: number, kv: KV): string => `past_key_values.${layer}.${kv}`
/** `present.N.key` / `.value`. */
export const presentName = (layer: number, kv: KV): string => `present.${layer}.${kv}`
/** `past_key_values.N.decoder.key` (self-attention) or `.encoder.key` (cross-attention). */
export const seq2seqPastName = (layer: number, side: "decoder" | "encoder", kv: KV): string =>
  `past_key_values.${layer}.${side}.${kv}`
/** `present.N.decoder.key` or `present.N.encoder.key`. */
export const seq2seqPresentName = (layer: number, side: "decoder" | "encoder", kv: KV): string =>
  `present.${layer}.${side}.${kv}`

/** A state input and the output that carries its next value. */
export interface StatePair {
  readonly input: string
  readonly output: string
}

const KVS: readonly KV[] = ["key", "value"]

/** The KV pairs of layers `0..layers-1`, in the models' input order. */
export function decoderStatePairs(layers: number | readonly number[]): StatePair[] {
  const ls = typeof layers === "number" ? range(layers) : layers
  return ls.flatMap((l) =>
    KVS.map((kv) => ({ input: pastName(l, kv), output: presentName(l, kv) })),
  )
}

/** Self-attention pairs (grow each step) and cross-attention pairs (kept after the first step). */
export function encoderDecoderStatePairs(layers: number): {
  decoder: StatePair[]
  encoder: StatePair[]
} {
  const side = (s: "decoder" | "encoder") =>
    range(layers).flatMap((l) =>
      KVS.map((kv) => ({ input: seq2seqPastName(l, s, kv), output: seq2seqPresentName(l, s, kv) })),
    )
  return { decoder: side("decoder"), encoder: side("encoder") }
}

/** KV pairs of the attention layers, `past_conv.N`/`past_ssm.N` pairs of the recurrent ones. */
export function hybridStatePairs(cfg: HybridConfig): {
  attention: StatePair[]
  recurrent: StatePair[]
} {
  const rec = new Set(cfg.recurrentLayers)
  return {
    attention: decoderStatePairs(range(cfg.layers).filter((l) => !rec.has(l))),
    recurrent: cfg.recurrentLayers.flatMap((l) => [
      { input: `past_conv.${l}`, output: `present_conv.${l}` },
      { input: `past_ssm.${l}`, output: `present_ssm.${l}` },
    ]),
  }
}

// ---------------------------------------------------------------------------------------------
// Weights (row-major, `x @ W` with W [in, out])

interface AttentionWeights {
  readonly q: Float32Array // [hidden, heads*headDim]
  readonly k: Float32Array
  readonly v: Float32Array
  readonly o: Float32Array // [heads*headDim, hidden]
}
interface MlpWeights {
  readonly w1: Float32Array // [hidden, 2*hidden]
  readonly b1: Float32Array // [2*hidden]
  readonly w2: Float32Array // [2*hidden, hidden]
}
interface RecurrentWeights {
  readonly input: Float32Array // [hidden, d]
  readonly conv: Float32Array // [k, d]: conv[m][c] weighs the input m steps back (m = 0: current)
  readonly convBias: Float32Array // [d]
  readonly dt: Float32Array // [hidden, d]
  readonly dtBias: Float32Array // [d]
  readonly a: Float32Array // [d, n], negative: the per-step log decay is dt * a
  readonly b: Float32Array // [hidden, n]
  readonly c: Float32Array // [hidden, n]
  readonly skip: Float32Array // [d]
  readonly out: Float32Array // [d, hidden]
}
interface LayerWeights {
  readonly self?: AttentionWeights
  readonly recurrent?: RecurrentWeights
  readonly cross?: AttentionWeights
  readonly mlp: MlpWeights
}
/** Every weight of a model, as the graphs and the TypeScript reference both read them. */
export interface ModelWeights {
  readonly embed: Float32Array // [vocab, hidden]
  readonly position: Float32Array // [maxPosition, hidden]
  readonly lmHead: Float32Array // [hidden, vocab]
  readonly layers: readonly LayerWeights[]
  readonly encoder?: {
    readonly input: Float32Array // [featDim, hidden]
    readonly position: Float32Array // [maxFrames, hidden]
    readonly layers: readonly LayerWeights[]
  }
}

function weightSource(seed: number) {
  let n = 0
  return (size: number, scale: number) => seededFloats(size, seed * 1009 + ++n, scale)
}

/**
 * The weights of a model, deterministic in `cfg`. Scales keep activations of order 1, so
 * attention is neither flat nor one-hot and logits are of order 1.
 */
export function modelWeights(
  cfg: DecoderConfig | EncoderDecoderConfig | HybridConfig,
): ModelWeights {
  const next = weightSource(cfg.seed)
  const { hidden: h, heads, headDim, vocab } = cfg
  const hd = heads * headDim
  const glorot = (fanIn: number) => Math.sqrt(3 / fanIn)
  const attention = (): AttentionWeights => ({
    q: next(h * hd, glorot(h)),
    k: next(h * hd, glorot(h)),
    v: next(h * hd, glorot(h)),
    o: next(hd * h, glorot(hd)),
  })
  const mlp = (): MlpWeights => ({
    w1: next(h * 2 * h, glorot(h)),
    b1: next(2 * h, 0.1),
    w2: next(2 * h * h, 0.5 * glorot(2 * h)),
  })
  const embed = next(vocab * h, 1)
  const position = next(cfg.maxPosition * h, 0.5)
  const lmHead = next(h * vocab, glorot(h))
  const recurrentSet = new Set("recurrentLayers" in cfg ? cfg.recurrentLayers : [])
  const cross = "encoderLayers" in cfg
  const layers = range(cfg.layers).map((l): LayerWeights => {
    if (recurrentSet.has(l)) {
      const { inner: d, stateSize: n, convWidth: k } = cfg as HybridConfig
      const recurrent: RecurrentWeights = {
        input: next(h * d, glorot(h)),
        conv: next(k * d, glorot(k)),
        convBias: next(d, 0.1),
        dt: next(h * d, glorot(h)),
        dtBias: next(d, 0.5),
        // a in [-1.6, -0.4]: a decay of exp(dt * a) per step, dt in (0, 1).
        a: next(d * n, 0.6).map((x) => -1 + x),
        b: next(h * n, glorot(h)),
        c: next(h * n, glorot(h)),
        skip: next(d, 0.5),
        out: next(d * h, glorot(d)),
      }
      return { recurrent, mlp: mlp() }
    }
    return cross
      ? { self: attention(), cross: attention(), mlp: mlp() }
      : { self: attention(), mlp: mlp() }
  })
  if (!cross) return { embed, position, lmHead, layers }
  const e = cfg as EncoderDecoderConfig
  const encoder = {
    input: next(e.featDim * h, glorot(e.featDim)),
    position: next(e.maxFrames * h, 0.5),
    layers: range(e.encoderLayers).map(() => ({ self: attention(), mlp: mlp() })),
  }
  return { embed, position, lmHead, layers, encoder }
}

// ---------------------------------------------------------------------------------------------
// Graph building

const FLOAT = 1
const NEG = -1e9

/** Ops used by every model, on one graph. */
class Net {
  constructor(readonly g: Graph) {}

  op(
    type: string,
    inputs: readonly string[],
    attrs: Parameters<Graph["op"]>[2] = {},
    name?: string,
  ) {
    return this.g.op(type, inputs, attrs, name)
  }
  w(values: Float32Array, dims: readonly number[]): string {
    return this.g.f32(values, dims)
  }
  matmul(a: string, b: string, name?: string): string {
    return this.op("MatMul", [a, b], {}, name)
  }
  add(a: string, b: string, name?: string): string {
    return this.op("Add", [a, b], {}, name)
  }
  mul(a: string, b: string): string {
    return this.op("Mul", [a, b])
  }
  sub(a: string, b: string): string {
    return this.op("Sub", [a, b])
  }
  cast(x: string, to: number): string {
    return this.op("Cast", [x], { to: { i: to } })
  }
  transpose(x: string, perm: readonly number[], name?: string): string {
    return this.op("Transpose", [x], { perm: { ints: perm } }, name)
  }
  unsqueeze(x: string, axes: readonly number[]): string {
    return this.op("Unsqueeze", [x, this.g.i64(axes)])
  }
  reduceSum(x: string, axes: readonly number[]): string {
    return this.op("ReduceSum", [x, this.g.i64(axes)], { keepdims: { i: 0 } })
  }
  /** Elements [start, end) along `axis`; start/end are int64 [1] values or numbers. */
  slice(x: string, start: string | number, end: string | number, axis: number, name?: string) {
    const v = (e: string | number) => (typeof e === "number" ? this.g.i64([e]) : e)
    return this.op("Slice", [x, v(start), v(end), this.g.i64([axis])], {}, name)
  }
  /** `x.shape[axis]` as int64 [1]. */
  dim(x: string, axis: number): string {
    return this.op("Shape", [x], { start: { i: axis }, end: { i: axis + 1 } })
  }
  /** int64 [1] → scalar. */
  scalar(x: string): string {
    return this.op("Squeeze", [x, this.g.i64([0])])
  }
  /** Range(start, limit) of int64 [1] bounds, as int64 [limit - start]. */
  range(start: string, limit: string): string {
    return this.op("Range", [this.scalar(start), this.scalar(limit), this.g.i64([1], [])])
  }
  /** [b, s, heads*headDim] → [b, heads, s, headDim]. */
  split(x: string, heads: number, headDim: number, name?: string): string {
    const r = this.op("Reshape", [x, this.g.i64([0, 0, heads, headDim])])
    return this.transpose(r, [0, 2, 1, 3], name)
  }
  /** [b, heads, s, headDim] → [b, s, heads*headDim]. */
  merge(x: string, width: number): string {
    return this.op("Reshape", [this.transpose(x, [0, 2, 1, 3]), this.g.i64([0, 0, width])])
  }
  /** Float zeros (or ones) of dims [x.shape[0], ...rest]. */
  filled(like: string, rest: readonly number[], value: number): string {
    const shape = this.op("Concat", [this.dim(like, 0), this.g.i64(rest)], { axis: { i: 0 } })
    return this.op("ConstantOfShape", [shape], {
      value: { t: { dtype: "float32", dims: [1], values: [value] } },
    })
  }
}

/** Projection, attention and MLP blocks bound to a config. */
function projections(n: Net, cfg: DecoderConfig) {
  const { hidden: h, heads, headDim } = cfg
  const hd = heads * headDim
  const proj = (x: string, w: Float32Array, out: number) =>
    n.matmul(x, n.w(w, [w.length / out, out]))
  return {
    /** Projects [b, s, hidden] with `w` into heads [b, heads, s, headDim]. */
    heads: (x: string, w: Float32Array, name?: string) =>
      n.split(proj(x, w, hd), heads, headDim, name),
    /** softmax(q K^T / sqrt(d), masked) V, merged and projected back to hidden. */
    attend(q: string, k: string, v: string, cond: string | undefined, wo: Float32Array): string {
      const kt = n.transpose(k, [0, 1, 3, 2])
      let scores = n.mul(n.matmul(q, kt), n.g.f32([1 / Math.sqrt(headDim)]))
      if (cond !== undefined) scores = n.op("Where", [cond, scores, n.g.f32([NEG])])
      const p = n.op("Softmax", [scores], { axis: { i: -1 } })
      return proj(n.merge(n.matmul(p, v), hd), wo, h)
    },
    mlp(x: string, w: MlpWeights): string {
      const a = n.op("Tanh", [n.add(proj(x, w.w1, 2 * h), n.w(w.b1, [2 * h]))])
      return n.add(x, proj(a, w.w2, h))
    },
    proj,
  }
}

/** bool [s, T]: query i (of s) sees window position j (of T) iff j <= T - s + i. */
function causal(n: Net, s: string, T: string): string {
  const j = n.range(n.g.i64([0]), T)
  const one = n.g.i64([1])
  const limit = n.unsqueeze(n.range(n.add(n.sub(T, s), one), n.add(T, one)), [1])
  return n.op("Less", [j, limit])
}

/** bool [b, 1, s, T]: causal and attention_mask[b, j] == 1. */
function visibility(n: Net, mask: string, s: string, T: string): string {
  const causalF = n.cast(causal(n, s, T), FLOAT)
  const pad = n.unsqueeze(n.cast(mask, FLOAT), [1, 2])
  return n.op("Greater", [n.mul(causalF, pad), n.g.f32([0.5])])
}

/** How a decoder-only graph takes its past. */
type PastMode = "growing" | "fixed" | "none" | "merged" | "merged-fixed"

function decoderGraph(cfg: DecoderConfig | HybridConfig, mode: PastMode): Uint8Array {
  const weights = modelWeights(cfg)
  const g = new Graph("decoder")
  const n = new Net(g)
  const p = projections(n, cfg)
  const { heads: H, headDim: d, hidden: h } = cfg
  const rec = new Set("recurrentLayers" in cfg ? cfg.recurrentLayers : [])
  const B = "batch_size"
  const ids = g.input("input_ids", "int64", [B, "sequence_length"])
  // A fixed cache takes the whole cache and outputs only this run's keys and values.
  const fixed = mode === "fixed" || mode === "merged-fixed"
  const total = fixed ? "capacity + sequence_length" : "total_sequence_length"
  let mask = g.input("attention_mask", "int64", [B, total])
  const positions = g.input("position_ids", "int64", [B, "sequence_length"])
  const pastLen = fixed ? "capacity" : "past_sequence_length"
  const past = new Map<string, string>()
  if (mode !== "none")
    for (let l = 0; l < cfg.layers; l++) {
      if (rec.has(l)) {
        const r = cfg as HybridConfig
        past.set(`conv${l}`, g.input(`past_conv.${l}`, "float32", [B, r.inner, r.convWidth]))
        past.set(`ssm${l}`, g.input(`past_ssm.${l}`, "float32", [B, r.inner, r.stateSize]))
      } else
        for (const kv of KVS)
          past.set(`${kv}${l}`, g.input(pastName(l, kv), "float32", [B, H, pastLen, d]))
    }
  const attentionLayers = range(cfg.layers).filter((l) => !rec.has(l))

  // Merged decoders: the flag chooses the given past or an empty one.
  if (mode === "merged" || mode === "merged-fixed") {
    const flag = g.input("use_cache_branch", "bool", [1])
    const withPast = g.subgraph("with_past")
    const noPast = g.subgraph("no_past")
    const outs: string[] = []
    for (const l of attentionLayers)
      for (const kv of KVS) {
        const given = past.get(`${kv}${l}`) as string
        const selected = g.fresh(`selected_${kv}${l}`)
        outs.push(selected)
        past.set(`${kv}${l}`, selected)
        withPast.output(withPast.op("Identity", [given]), "float32", undefined)
        noPast.output(new Net(noPast).slice(given, 0, 0, 2), "float32", undefined)
      }
    g.node("If", [flag], outs, { then_branch: { g: withPast }, else_branch: { g: noPast } })
    if (mode === "merged-fixed") {
      // The mask spans the whole cache either way: keep its last (chosen past + s) columns, so
      // with the flag off the window is the new tokens alone. (A Slice on shapes, not a second
      // `If` output: the mask stays where it was fed.)
      const T0 = n.dim(mask, 1)
      const chosen = past.get(`${KVS[0]}${attentionLayers[0]}`) as string
      mask = n.slice(mask, n.sub(T0, n.add(n.dim(chosen, 2), n.dim(ids, 1))), T0, 1)
    }
  }

  const s = n.dim(ids, 1)
  const T = n.dim(mask, 1)
  const cond = visibility(n, mask, s, T)
  let x = n.add(
    n.op("Gather", [n.w(weights.embed, [cfg.vocab, h]), ids], { axis: { i: 0 } }),
    n.op("Gather", [n.w(weights.position, [cfg.maxPosition, h]), positions], { axis: { i: 0 } }),
  )
  for (let l = 0; l < cfg.layers; l++) {
    const lw = weights.layers[l] as LayerWeights
    if (lw.recurrent !== undefined) {
      const r = cfg as HybridConfig
      const conv0 =
        mode === "none"
          ? n.filled(ids, [r.inner, r.convWidth], 0)
          : (past.get(`conv${l}`) as string)
      const ssm0 =
        mode === "none" ? n.filled(ids, [r.inner, r.stateSize], 0) : (past.get(`ssm${l}`) as string)
      const out = recurrentBlock(
        n,
        r,
        lw.recurrent,
        x,
        mask,
        s,
        T,
        conv0,
        ssm0,
        mode === "none" ? undefined : l,
      )
      x = n.add(x, out)
    } else {
      const sw = lw.self as AttentionWeights
      const q = p.heads(x, sw.q)
      const newNames = fixed ? [presentName(l, "key"), presentName(l, "value")] : []
      const k = p.heads(x, sw.k, newNames[0])
      const v = p.heads(x, sw.v, newNames[1])
      let K = k
      let V = v
      if (mode !== "none") {
        const grow = !fixed
        const cat = (kv: KV, t: string) =>
          n.op(
            "Concat",
            [past.get(`${kv}${l}`) as string, t],
            { axis: { i: 2 } },
            grow ? presentName(l, kv) : undefined,
          )
        K = cat("key", k)
        V = cat("value", v)
        const presentDims = [B, H, grow ? "total_sequence_length" : "sequence_length", d]
        for (const kv of KVS) g.output(presentName(l, kv), "float32", presentDims)
      }
      x = n.add(x, p.attend(q, K, V, cond, sw.o))
    }
    x = p.mlp(x, lw.mlp)
  }
  n.matmul(x, n.w(weights.lmHead, [h, cfg.vocab]), "logits")
  g.output("logits", "float32", [B, "sequence_length", cfg.vocab])
  return encodeModel(g)
}

/**
 * One Mamba-style layer over this run's s tokens: u = x W_in goes through a causal depthwise
 * convolution over the last k valid inputs (the window `conv0` holds the k before this run),
 * SiLU gives a; then the selective scan h_t = exp(dt_t a) h_{t-1} + dt_t a_t B_t,
 * y_t = h_t · C_t + skip a_t, in closed form (no loop op). Masked tokens (attention_mask 0) leave
 * both the window and h untouched, wherever they are in the run. Returns y W_out [b, s, hidden].
 */
function recurrentBlock(
  n: Net,
  cfg: HybridConfig,
  w: RecurrentWeights,
  x: string,
  mask: string,
  s: string,
  T: string,
  conv0: string,
  ssm0: string,
  layer: number | undefined,
): string {
  const { hidden: h, inner: D, stateSize: N, convWidth: k } = cfg
  const g = n.g
  const proj = (t: string, wt: Float32Array, out: number) =>
    n.matmul(t, n.w(wt, [wt.length / out, out]))
  const B = "batch_size"
  // Validity of the window [k past inputs | s new tokens] and each entry's rank among valid ones.
  const mNew = n.cast(n.slice(mask, n.sub(T, s), T, 1), FLOAT) // [b, s]
  const valid = n.op("Concat", [n.filled(mask, [k], 1), mNew], { axis: { i: 1 } }) // [b, k+s]
  const Lc = n.add(s, g.i64([k]))
  const idx = n.range(g.i64([0]), Lc)
  const upper = n.cast(n.op("Less", [n.unsqueeze(idx, [1]), n.add(idx, g.i64([1]))]), FLOAT) // [u, q]: u <= q
  const rank = n.matmul(valid, upper) // [b, k+s]: valid entries up to and including q
  const u = proj(x, w.input, D) // [b, s, D]
  const window = n.op("Concat", [conv0, n.transpose(u, [0, 2, 1])], { axis: { i: 2 } }) // [b, D, k+s]
  // Lag m of new token t is the valid entry whose rank is rank(t) - m: a one-hot gather by MatMul.
  const targetRank = n.slice(rank, k, 2 ** 40, 1) // [b, s]
  const lags = g.f32(range(k), [1, k, 1, 1])
  const want = n.sub(n.unsqueeze(targetRank, [1, 3]), lags) // [b, k, s, 1]
  const hit = n.mul(
    n.cast(n.op("Equal", [n.unsqueeze(rank, [1, 2]), want]), FLOAT),
    n.unsqueeze(valid, [1, 2]),
  ) // [b, k, s, k+s]
  const taps = n.matmul(n.unsqueeze(window, [1]), n.transpose(hit, [0, 1, 3, 2])) // [b, k, D, s]
  const convW = g.f32(w.conv, [1, k, D, 1])
  const conv = n.add(n.reduceSum(n.mul(taps, convW), [1]), g.f32(w.convBias, [D, 1])) // [b, D, s]
  const a = n.transpose(n.mul(conv, n.op("Sigmoid", [conv])), [0, 2, 1]) // [b, s, D]
  // The new window: the k valid entries of highest rank, oldest first.
  const lastRank = n.slice(rank, -1, 2 ** 40, 1) // [b, 1]
  const keepRank = n.add(
    lastRank,
    g.f32(
      range(k).map((m) => m - (k - 1)),
      [k],
    ),
  ) // [b, k]
  const keep = n.mul(
    n.cast(n.op("Equal", [n.unsqueeze(rank, [1]), n.unsqueeze(keepRank, [2])]), FLOAT),
    n.unsqueeze(valid, [1]),
  ) // [b, k, k+s]
  if (layer !== undefined) n.matmul(window, n.transpose(keep, [0, 2, 1]), `present_conv.${layer}`)
  // Selective scan: S_t = sum_{u<=t} dt_u a; h_t = exp(S_t) h0 + sum_{τ<=t} exp(S_t - S_τ) U_τ.
  const dt = n.mul(
    n.op("Sigmoid", [n.add(proj(x, w.dt, D), g.f32(w.dtBias, [D]))]),
    n.unsqueeze(mNew, [2]),
  ) // [b, s, D]
  const Bt = proj(x, w.b, N) // [b, s, N]
  const Ct = proj(x, w.c, N)
  const dt4 = n.unsqueeze(dt, [3]) // [b, s, D, 1]
  const logDecay = n.mul(dt4, g.f32(w.a, [D, N])) // [b, s, D, N]
  const tIdx = n.range(g.i64([0]), s)
  const le = n.op("Less", [n.unsqueeze(tIdx, [1]), n.add(tIdx, g.i64([1]))]) // [u, t]: u <= t
  const flat = n.transpose(n.op("Reshape", [logDecay, g.i64([0, 0, D * N])]), [0, 2, 1]) // [b, DN, s]
  const cum = n.matmul(flat, n.cast(le, FLOAT)) // [b, DN, s]
  const S = n.op("Reshape", [n.transpose(cum, [0, 2, 1]), g.i64([0, 0, D, N])]) // [b, s, D, N]
  const U = n.mul(n.mul(dt4, n.unsqueeze(a, [3])), n.unsqueeze(Bt, [2])) // [b, s, D, N]
  const diff = n.sub(n.unsqueeze(S, [2]), n.unsqueeze(S, [1])) // [b, t, τ, D, N]
  const before = n.unsqueeze(n.transpose(le, [1, 0]), [2, 3]) // [t, τ, 1, 1]: τ <= t
  const decay = n.op("Exp", [n.op("Where", [before, diff, g.f32([NEG])])])
  const fromInputs = n.reduceSum(n.mul(decay, n.unsqueeze(U, [1])), [2]) // [b, s, D, N]
  const Hs = n.add(fromInputs, n.mul(n.op("Exp", [S]), n.unsqueeze(ssm0, [1])))
  const y = n.add(n.reduceSum(n.mul(Hs, n.unsqueeze(Ct, [2])), [3]), n.mul(a, g.f32(w.skip, [D]))) // [b, s, D]
  if (layer !== undefined) {
    const last = n.scalar(n.sub(s, g.i64([1])))
    n.op("Gather", [Hs, last], { axis: { i: 1 } }, `present_ssm.${layer}`)
    g.output(`present_conv.${layer}`, "float32", [B, D, k])
    g.output(`present_ssm.${layer}`, "float32", [B, D, N])
  }
  return proj(y, w.out, h)
}

/**
 * Decoder with growing KV caches (Optimum `decoder_with_past`). Inputs `input_ids` int64 [b, s],
 * `attention_mask` int64 [b, past+s], `position_ids` int64 [b, s],
 * `past_key_values.N.key/value` float32 [b, heads, past, headDim] (past may be 0); outputs
 * `logits` [b, s, vocab] and `present.N.key/value` [b, heads, past+s, headDim] (past ⧺ new).
 */
export function growingDecoder(cfg: DecoderConfig): Uint8Array {
  return decoderGraph(cfg, "growing")
}

/**
 * Decoder over a preallocated cache (cache style a): `attention_mask` int64 [b, capacity+s]
 * (1 = valid cache slot, then one entry per new token), `past_key_values.N.key/value`
 * [b, heads, capacity, headDim] (the whole cache; masked slots may hold any finite values);
 * outputs `logits` and only this run's `present.N.key/value` [b, heads, s, headDim], which the
 * caller writes into the cache at each row's length. New token i sees new tokens <= i.
 */
export function fixedCacheDecoder(cfg: DecoderConfig): Uint8Array {
  return decoderGraph(cfg, "fixed")
}

/**
 * Optimum's `decoder_model_merged`: {@link growingDecoder} plus `use_cache_branch` bool [1].
 * False: the past inputs are ignored (feed them with past length 0, and an `attention_mask`
 * covering only the new tokens); true: they are used. The selection is an `If` node, as in
 * Optimum's merge (whose branches hold two whole decoders; here they hold only the choice of
 * past, the given one or an empty slice of it, so both paths share the attention code). The
 * WebGPU EP runs it with nothing read back; a control-flow-free variant (slicing the past to
 * `length × flag`) made the WebGPU EP read one value back per run, so it is not offered.
 */
export function mergedDecoder(cfg: DecoderConfig): Uint8Array {
  return decoderGraph(cfg, "merged")
}

/**
 * Optimum's `decoder_model_merged` over a preallocated cache: the inputs and outputs of
 * {@link fixedCacheDecoder} plus `use_cache_branch` bool [1]. False: the cache is ignored
 * (whatever it holds) and the window is this run's tokens alone, the last s columns of
 * `attention_mask` (which may span `capacity + s` or only `s`); true: the whole cache is used,
 * masked by `attention_mask` as in {@link fixedCacheDecoder}. The choice is an `If` node as in
 * {@link mergedDecoder}, so the WebGPU EP runs it with nothing read back.
 */
export function mergedFixedDecoder(cfg: DecoderConfig): Uint8Array {
  return decoderGraph(cfg, "merged-fixed")
}

/**
 * The no-cache oracle of {@link growingDecoder}, {@link fixedCacheDecoder},
 * {@link mergedDecoder} and {@link mergedFixedDecoder} built from the same config: a graph variant without past inputs or
 * presents. Inputs `input_ids`, `attention_mask` [b, s], `position_ids`; output `logits`.
 */
export function noCacheDecoder(cfg: DecoderConfig): Uint8Array {
  return decoderGraph(cfg, "none")
}

/**
 * Hybrid decoder: attention layers with growing caches (`past_key_values.N.key/value` →
 * `present.N.key/value`) and, at `cfg.recurrentLayers`, Mamba-style layers with
 * `past_conv.N` [b, inner, convWidth] → `present_conv.N` (the last k valid inputs) and
 * `past_ssm.N` [b, inner, stateSize] → `present_ssm.N`. Inputs as {@link growingDecoder};
 * tokens with attention_mask 0 do not touch the recurrent state. Zeros are the initial state.
 */
export function hybridDecoder(cfg: HybridConfig): Uint8Array {
  return decoderGraph(cfg, "growing")
}

/** The no-cache oracle of {@link hybridDecoder}: no state inputs (zero initial state), logits only. */
export function noCacheHybridDecoder(cfg: HybridConfig): Uint8Array {
  return decoderGraph(cfg, "none")
}

/** Options of {@link encoderDecoder}. */
export interface EncoderDecoderOptions {
  /**
   * Off (default), the decoder is Whisper's: no mask, positions past..past+s-1 taken from the
   * past length, so all rows of a batch share one length. On, it also takes `attention_mask`
   * int64 [b, past+s] and `position_ids` int64 [b, s] as the decoder-only models do, so rows
   * of one batch may be at different lengths.
   */
  readonly masks?: boolean
}

/** The graphs of an encoder–decoder: encoder, merged decoder, and the decoder's no-cache oracle. */
export interface EncoderDecoderGraphs {
  /** `input_features` float32 [b, frames, featDim] → `last_hidden_state` [b, frames, hidden]. */
  readonly encoder: Uint8Array
  /**
   * Merged decoder. Inputs `input_ids` int64 [b, s], (`attention_mask`, `position_ids` with
   * `masks`), `encoder_hidden_states` [b, frames, hidden], per layer
   * `past_key_values.N.decoder.key/value` [b, heads, past, headDim] and
   * `past_key_values.N.encoder.key/value` [b, heads, frames, headDim], `use_cache_branch` bool [1].
   * Outputs `logits`, `present.N.decoder.key/value` (past ⧺ new), and
   * `present.N.encoder.key/value`: with the flag off, the cross-attention keys/values computed
   * from `encoder_hidden_states`; with it on, empty placeholders of dims [0, heads, 1, headDim]
   * (the constant Optimum's merge puts there) while the past encoder inputs are used — so the
   * caller must keep the first step's encoder cache.
   */
  readonly decoder: Uint8Array
  /** The decoder without any past: `input_ids`, (masks), `encoder_hidden_states` → `logits`. */
  readonly oracle: Uint8Array
}

/** An encoder–decoder with the same weights across its three graphs. */
export function encoderDecoder(
  cfg: EncoderDecoderConfig,
  options: EncoderDecoderOptions = {},
): EncoderDecoderGraphs {
  const masks = options.masks ?? false
  return {
    encoder: encoderGraph(cfg),
    decoder: seq2seqDecoderGraph(cfg, masks, true),
    oracle: seq2seqDecoderGraph(cfg, masks, false),
  }
}

function encoderGraph(cfg: EncoderDecoderConfig): Uint8Array {
  const weights = modelWeights(cfg)
  const ew = weights.encoder as NonNullable<ModelWeights["encoder"]>
  const g = new Graph("encoder")
  const n = new Net(g)
  const p = projections(n, cfg)
  const h = cfg.hidden
  const feats = g.input("input_features", "float32", [
    "batch_size",
    "encoder_sequence_length",
    cfg.featDim,
  ])
  const frames = n.range(g.i64([0]), n.dim(feats, 1))
  let x = n.add(
    p.proj(feats, ew.input, h),
    n.op("Gather", [n.w(ew.position, [cfg.maxFrames, h]), frames], { axis: { i: 0 } }),
  )
  for (const lw of ew.layers) {
    const sw = lw.self as AttentionWeights
    x = n.add(x, p.attend(p.heads(x, sw.q), p.heads(x, sw.k), p.heads(x, sw.v), undefined, sw.o))
    x = p.mlp(x, lw.mlp)
  }
  g.node("Identity", [x], ["last_hidden_state"])
  g.output("last_hidden_state", "float32", ["batch_size", "encoder_sequence_length", h])
  return encodeModel(g)
}

function seq2seqDecoderGraph(
  cfg: EncoderDecoderConfig,
  masks: boolean,
  cached: boolean,
): Uint8Array {
  const weights = modelWeights(cfg)
  const g = new Graph("decoder")
  const n = new Net(g)
  const p = projections(n, cfg)
  const { heads: H, headDim: d, hidden: h } = cfg
  const B = "batch_size"
  const ids = g.input("input_ids", "int64", [B, "decoder_sequence_length"])
  const mask = masks
    ? g.input("attention_mask", "int64", [B, "total_decoder_sequence_length"])
    : undefined
  const positions = masks
    ? g.input("position_ids", "int64", [B, "decoder_sequence_length"])
    : undefined
  const enc = g.input("encoder_hidden_states", "float32", [B, "encoder_sequence_length", h])
  const crossKV = (lw: LayerWeights, net: Net, names: readonly string[] = []) => {
    const cw = lw.cross as AttentionWeights
    const pp = net === n ? p : projections(net, cfg)
    return [pp.heads(enc, cw.k, names[0]), pp.heads(enc, cw.v, names[1])] as const
  }
  // Per layer: [self past key, self past value, cross key, cross value].
  const sel: string[][] = []
  if (cached) {
    const given: string[][] = []
    for (let l = 0; l < cfg.layers; l++) {
      const past = (side: "decoder" | "encoder", kv: KV) =>
        g.input(seq2seqPastName(l, side, kv), "float32", [
          B,
          H,
          side === "decoder" ? "past_decoder_sequence_length" : "encoder_sequence_length_out",
          d,
        ])
      given.push([
        past("decoder", "key"),
        past("decoder", "value"),
        past("encoder", "key"),
        past("encoder", "value"),
      ])
    }
    const flag = g.input("use_cache_branch", "bool", [1])
    const withPast = g.subgraph("with_past")
    const noPast = g.subgraph("no_past")
    const noPastNet = new Net(noPast)
    const outs: string[] = []
    for (let l = 0; l < cfg.layers; l++) {
      const [dk, dv, ek, ev] = given[l] as string[]
      const names = [
        g.fresh(`self_key${l}`),
        g.fresh(`self_value${l}`),
        g.fresh(`cross_key${l}`),
        g.fresh(`cross_value${l}`),
      ]
      const presents = [
        seq2seqPresentName(l, "encoder", "key"),
        seq2seqPresentName(l, "encoder", "value"),
      ]
      outs.push(...names, ...presents)
      sel.push(names)
      for (const t of [dk, dv, ek, ev])
        withPast.output(withPast.op("Identity", [t as string]), "float32", undefined)
      const empty = { t: { dtype: "float32" as const, dims: [0, H, 1, d], values: [] } }
      for (let i = 0; i < 2; i++)
        withPast.output(withPast.op("Constant", [], { value: empty }), "float32", undefined)
      for (const t of [dk, dv])
        noPast.output(noPastNet.slice(t as string, 0, 0, 2), "float32", undefined)
      const [ck, cv] = crossKV(weights.layers[l] as LayerWeights, noPastNet)
      noPast.output(noPast.op("Identity", [ck]), "float32", undefined)
      noPast.output(noPast.op("Identity", [cv]), "float32", undefined)
      noPast.output(noPast.op("Identity", [ck]), "float32", undefined)
      noPast.output(noPast.op("Identity", [cv]), "float32", undefined)
    }
    g.node("If", [flag], outs, { then_branch: { g: withPast }, else_branch: { g: noPast } })
  }
  const s = n.dim(ids, 1)
  const pastLen = cached ? n.dim((sel[0] as string[])[0] as string, 2) : g.i64([0])
  const T = mask !== undefined ? n.dim(mask, 1) : n.add(pastLen, s)
  const cond = mask !== undefined ? visibility(n, mask, s, T) : causal(n, s, T)
  const pos = positions ?? n.unsqueeze(n.range(pastLen, n.add(pastLen, s)), [0])
  let x = n.add(
    n.op("Gather", [n.w(weights.embed, [cfg.vocab, h]), ids], { axis: { i: 0 } }),
    n.op("Gather", [n.w(weights.position, [cfg.maxPosition, h]), pos], { axis: { i: 0 } }),
  )
  for (let l = 0; l < cfg.layers; l++) {
    const lw = weights.layers[l] as LayerWeights
    const sw = lw.self as AttentionWeights
    const cw = lw.cross as AttentionWeights
    let K = p.heads(x, sw.k)
    let V = p.heads(x, sw.v)
    let ck: string
    let cv: string
    if (cached) {
      const [pk, pv, sk, sv] = sel[l] as string[]
      const cat = (pastT: string, t: string, kv: KV) =>
        n.op("Concat", [pastT, t], { axis: { i: 2 } }, seq2seqPresentName(l, "decoder", kv))
      K = cat(pk as string, K, "key")
      V = cat(pv as string, V, "value")
      ck = sk as string
      cv = sv as string
    } else [ck, cv] = crossKV(lw, n)
    x = n.add(x, p.attend(p.heads(x, sw.q), K, V, cond, sw.o))
    x = n.add(x, p.attend(p.heads(x, cw.q), ck, cv, undefined, cw.o))
    x = p.mlp(x, lw.mlp)
  }
  n.matmul(x, n.w(weights.lmHead, [h, cfg.vocab]), "logits")
  g.output("logits", "float32", [B, "decoder_sequence_length", cfg.vocab])
  if (cached)
    for (let l = 0; l < cfg.layers; l++) {
      for (const kv of KVS)
        g.output(seq2seqPresentName(l, "decoder", kv), "float32", [
          B,
          H,
          "total_decoder_sequence_length",
          d,
        ])
      for (const kv of KVS)
        g.output(seq2seqPresentName(l, "encoder", kv), "float32", [
          B,
          H,
          "encoder_sequence_length_out",
          d,
        ])
    }
  return encodeModel(g)
}

// ---------------------------------------------------------------------------------------------
// Oracle runner (ONNX, no cache)

/** The parts of an ONNX Runtime module the runner needs (onnxruntime-node or -web). */
export interface OrtModule {
  readonly Tensor: typeof common.Tensor
}

/** A row's encoder output, `frames × hidden` values, for the encoder–decoder oracle. */
export interface EncoderStates {
  readonly frames: number
  readonly data: Float32Array
}

/**
 * Runs a no-cache oracle graph on each row alone (batch 1, no padding, positions 0..T-1, a mask
 * of ones): row r's logits, `tokens[r].length × vocab` values. Feeds only the inputs the graph
 * has; `encoderStates[r]` goes to `encoder_hidden_states`.
 */
export async function oracleLogits(
  ort: OrtModule,
  session: common.InferenceSession,
  tokens: readonly (readonly number[])[],
  encoderStates?: readonly EncoderStates[],
): Promise<Float32Array[]> {
  const out: Float32Array[] = []
  for (const [r, row] of tokens.entries()) {
    const T = row.length
    const feeds: Record<string, common.Tensor> = {
      input_ids: new ort.Tensor("int64", BigInt64Array.from(row, BigInt), [1, T]),
    }
    if (session.inputNames.includes("attention_mask"))
      feeds.attention_mask = new ort.Tensor("int64", new BigInt64Array(T).fill(1n), [1, T])
    if (session.inputNames.includes("position_ids"))
      feeds.position_ids = new ort.Tensor("int64", BigInt64Array.from(range(T), BigInt), [1, T])
    if (session.inputNames.includes("encoder_hidden_states")) {
      const e = encoderStates?.[r]
      if (e === undefined) throw new Error(`oracleLogits: row ${r} needs its encoder states`)
      feeds.encoder_hidden_states = new ort.Tensor("float32", e.data, [
        1,
        e.frames,
        e.data.length / e.frames,
      ])
    }
    const result = await session.run(feeds)
    const logits = result.logits as common.Tensor
    out.push((logits.data as Float32Array).slice())
    for (const t of Object.values(result)) t.dispose()
  }
  return out
}

/** Runs the encoder graph on one row's features (`frames × featDim`): its `last_hidden_state`. */
export async function encodeRow(
  ort: OrtModule,
  encoder: common.InferenceSession,
  features: Float32Array,
  frames: number,
): Promise<EncoderStates> {
  const input = new ort.Tensor("float32", features, [1, frames, features.length / frames])
  const result = await encoder.run({ input_features: input })
  const y = result.last_hidden_state as common.Tensor
  const data = (y.data as Float32Array).slice()
  for (const t of Object.values(result)) t.dispose()
  return { frames, data }
}

// ---------------------------------------------------------------------------------------------
// Pure-TypeScript reference forward passes (one row, no cache; float64 arithmetic)

type Vec = Float64Array

/** x [in] @ W [in, out]. */
function vecMat(x: ArrayLike<number>, w: Float32Array, out: number): Vec {
  const inn = x.length
  const y = new Float64Array(out)
  for (let i = 0; i < inn; i++) {
    const xi = x[i] as number
    for (let o = 0; o < out; o++) y[o] = (y[o] as number) + xi * (w[i * out + o] as number)
  }
  return y
}
const addTo = (a: Vec, b: ArrayLike<number>): Vec => a.map((v, i) => v + (b[i] as number))
const rowOf = (m: Float32Array, r: number, width: number): Vec =>
  Float64Array.from(m.subarray(r * width, (r + 1) * width))
const sigmoid = (z: number) => 1 / (1 + Math.exp(-z))

/** Multi-head attention of queries xs over keys/values from ys; `visible(i, j)` filters. */
function refAttention(
  cfg: DecoderConfig,
  w: AttentionWeights,
  xs: readonly Vec[],
  ys: readonly Vec[],
  visible: (i: number, j: number) => boolean,
): Vec[] {
  const { heads: H, headDim: d, hidden: h } = cfg
  const hd = H * d
  const q = xs.map((x) => vecMat(x, w.q, hd))
  const k = ys.map((y) => vecMat(y, w.k, hd))
  const v = ys.map((y) => vecMat(y, w.v, hd))
  return q.map((qi, i) => {
    const o = new Float64Array(hd)
    for (let head = 0; head < H; head++) {
      const js = range(ys.length).filter((j) => visible(i, j))
      const scores = js.map((j) => {
        let dot = 0
        for (let e = 0; e < d; e++)
          dot += (qi[head * d + e] as number) * ((k[j] as Vec)[head * d + e] as number)
        return dot / Math.sqrt(d)
      })
      const max = Math.max(...scores)
      const ex = scores.map((z) => Math.exp(z - max))
      const sum = ex.reduce((a, b) => a + b, 0)
      js.forEach((j, t) => {
        const pj = (ex[t] as number) / sum
        for (let e = 0; e < d; e++)
          o[head * d + e] =
            (o[head * d + e] as number) + pj * ((v[j] as Vec)[head * d + e] as number)
      })
    }
    return vecMat(o, w.o, h)
  })
}

function refMlp(cfg: DecoderConfig, w: MlpWeights, x: Vec): Vec {
  const h = cfg.hidden
  const a = addTo(vecMat(x, w.w1, 2 * h), w.b1).map(Math.tanh)
  return addTo(x, vecMat(a, w.w2, h))
}

function refEmbed(cfg: DecoderConfig, w: ModelWeights, tokens: readonly number[]): Vec[] {
  return tokens.map((tok, t) =>
    addTo(rowOf(w.embed, tok, cfg.hidden), rowOf(w.position, t, cfg.hidden)),
  )
}

function refLogits(cfg: DecoderConfig, w: ModelWeights, xs: readonly Vec[]): Float32Array {
  const out = new Float32Array(xs.length * cfg.vocab)
  xs.forEach((x, t) => out.set(vecMat(x, w.lmHead, cfg.vocab), t * cfg.vocab))
  return out
}

const causalMask = (i: number, j: number) => j <= i

/** Logits [T, vocab] of a decoder-only config on one row (positions 0..T-1), without ONNX. */
export function referenceDecoderLogits(
  cfg: DecoderConfig,
  tokens: readonly number[],
): Float32Array {
  const w = modelWeights(cfg)
  let xs = refEmbed(cfg, w, tokens)
  for (const lw of w.layers) {
    const att = refAttention(cfg, lw.self as AttentionWeights, xs, xs, causalMask)
    xs = xs.map((x, t) => refMlp(cfg, lw.mlp, addTo(x, att[t] as Vec)))
  }
  return refLogits(cfg, w, xs)
}

/** last_hidden_state [frames, hidden] of the encoder on one row's features [frames, featDim]. */
export function referenceEncoder(
  cfg: EncoderDecoderConfig,
  features: Float32Array,
  frames: number,
): Float32Array {
  const w = modelWeights(cfg)
  const ew = w.encoder as NonNullable<ModelWeights["encoder"]>
  let xs = range(frames).map((f) =>
    addTo(
      vecMat(features.subarray(f * cfg.featDim, (f + 1) * cfg.featDim), ew.input, cfg.hidden),
      rowOf(ew.position, f, cfg.hidden),
    ),
  )
  for (const lw of ew.layers) {
    const att = refAttention(cfg, lw.self as AttentionWeights, xs, xs, () => true)
    xs = xs.map((x, t) => refMlp(cfg, lw.mlp, addTo(x, att[t] as Vec)))
  }
  const out = new Float32Array(frames * cfg.hidden)
  xs.forEach((x, f) => out.set(x, f * cfg.hidden))
  return out
}

/** Decoder logits [T, vocab] of an encoder–decoder on one row, given that row's encoder states. */
export function referenceEncoderDecoderLogits(
  cfg: EncoderDecoderConfig,
  encoder: EncoderStates,
  tokens: readonly number[],
): Float32Array {
  const w = modelWeights(cfg)
  const enc = range(encoder.frames).map((f) => rowOf(encoder.data, f, cfg.hidden))
  let xs = refEmbed(cfg, w, tokens)
  for (const lw of w.layers) {
    const self = refAttention(cfg, lw.self as AttentionWeights, xs, xs, causalMask)
    xs = xs.map((x, t) => addTo(x, self[t] as Vec))
    const cross = refAttention(cfg, lw.cross as AttentionWeights, xs, enc, () => true)
    xs = xs.map((x, t) => refMlp(cfg, lw.mlp, addTo(x, cross[t] as Vec)))
  }
  return refLogits(cfg, w, xs)
}

/**
 * Logits [T, vocab] of a hybrid config on one row, without ONNX. The recurrent layers step one
 * token at a time: a shift register of the last k inputs and h ← exp(dt a) h + dt a_t B_t.
 */
export function referenceHybridLogits(cfg: HybridConfig, tokens: readonly number[]): Float32Array {
  const w = modelWeights(cfg)
  const { inner: D, stateSize: N, convWidth: k, hidden: h } = cfg
  let xs = refEmbed(cfg, w, tokens)
  for (const lw of w.layers) {
    let mixed: Vec[]
    const rw = lw.recurrent
    if (rw === undefined) mixed = refAttention(cfg, lw.self as AttentionWeights, xs, xs, causalMask)
    else {
      const register: Vec[] = range(k).map(() => new Float64Array(D)) // oldest first
      const state = new Float64Array(D * N)
      mixed = xs.map((x) => {
        register.shift()
        register.push(vecMat(x, rw.input, D))
        const a = new Float64Array(D)
        for (let c = 0; c < D; c++) {
          let z = rw.convBias[c] as number
          for (let m = 0; m < k; m++)
            z += (rw.conv[m * D + c] as number) * ((register[k - 1 - m] as Vec)[c] as number)
          a[c] = z * sigmoid(z)
        }
        const dt = addTo(vecMat(x, rw.dt, D), rw.dtBias).map(sigmoid)
        const bt = vecMat(x, rw.b, N)
        const ct = vecMat(x, rw.c, N)
        const y = new Float64Array(D)
        for (let c = 0; c < D; c++) {
          let yc = (rw.skip[c] as number) * (a[c] as number)
          for (let j = 0; j < N; j++) {
            const i = c * N + j
            state[i] =
              Math.exp((dt[c] as number) * (rw.a[i] as number)) * (state[i] as number) +
              (dt[c] as number) * (a[c] as number) * (bt[j] as number)
            yc += (state[i] as number) * (ct[j] as number)
          }
          y[c] = yc
        }
        return vecMat(y, rw.out, h)
      })
    }
    xs = xs.map((x, t) => refMlp(cfg, lw.mlp, addTo(x, mixed[t] as Vec)))
  }
  return refLogits(cfg, w, xs)
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i)
}

/** `n` deterministic tokens in [0, vocab) from `seed` (a linear congruential sequence). */
export function seededTokens(n: number, seed: number, vocab: number): number[] {
  let s = (seed * 2654435761) >>> 0 || 3
  return Array.from({ length: n }, () => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0
    return (s >>> 8) % vocab
  })
}
