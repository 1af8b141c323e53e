// Decoders whose weights are set by hand, so that what they generate can be checked by eye:
// one attention layer (one head, real Softmax over cached keys) that predicts
//   next token = (the token `back` positions before it + `shift`) mod vocab.
// The "counter" (back 1, shift 1) counts up from the last token; the "copier" (back k, shift 0)
// repeats the last k tokens, reading them from the KV cache.
//
// The hidden state [token one-hot | position one-hot | copied token one-hot] (vocab + positions +
// vocab wide) is the sum of the two embeddings. The query of position t is the one-hot of
// position t - (back - 1), scaled so that its score is `sharpness` above every other visible
// key; keys are the positions' one-hots, values the tokens' one-hots. The output projection
// writes the attended token into the third block, and the LM head gives `confidence` to that
// token + shift, 0 to every other token. Positions below back - 1 have no target: their query is
// 0 and they attend evenly (their outputs are not part of any continuation of a prompt at least
// `back` tokens long).
//
// Inputs and outputs follow helpers/decoders.ts (Optimum names, the same masking rule), so the
// sessions' `cache` option drives these graphs as it drives the random-weight decoders.
import { Graph, encodeModel } from "./onnx-graph.js"

/** A hand-set decoder: next token = (token `back` positions earlier + `shift`) mod `vocab`. */
export interface HandDecoderConfig {
  readonly vocab: number
  /** Rows of the position embedding: position_ids must stay below it. */
  readonly maxPosition: number
  /** How far back the attended token is (1: the current token). */
  readonly back: number
  readonly shift: number
  /** Score lead of the attended key over every other visible key (before Softmax). */
  readonly sharpness: number
  /** Logit of the predicted token; every other token gets 0. */
  readonly confidence: number
}

const DEFAULTS = { vocab: 32, maxPosition: 64, sharpness: 20, confidence: 8 }

/** Counts up: next token = last token + 1 (mod vocab). */
export function counterConfig(overrides: Partial<HandDecoderConfig> = {}): HandDecoderConfig {
  return checked({ ...DEFAULTS, back: 1, shift: 1, ...overrides })
}

/** Repeats the last `period` tokens: next token = the token `period` positions back. */
export function copierConfig(
  period = 5,
  overrides: Partial<HandDecoderConfig> = {},
): HandDecoderConfig {
  return checked({ ...DEFAULTS, back: period, shift: 0, ...overrides })
}

function checked(cfg: HandDecoderConfig): HandDecoderConfig {
  for (const k of ["vocab", "maxPosition", "back"] as const)
    if (!Number.isInteger(cfg[k]) || cfg[k] < 1)
      throw new Error(`hand decoder: ${k} must be a positive integer, got ${String(cfg[k])}`)
  if (cfg.back > cfg.maxPosition)
    throw new Error(`hand decoder: back ${cfg.back} exceeds maxPosition ${cfg.maxPosition}`)
  return cfg
}

/** The sequence the rule gives: `count` tokens after `prompt` (at least `back` tokens long). */
export function ruleContinuation(
  cfg: HandDecoderConfig,
  prompt: readonly number[],
  count: number,
): number[] {
  if (prompt.length < cfg.back)
    throw new Error(`hand decoder: a prompt needs ${cfg.back} tokens, got ${prompt.length}`)
  const seq = [...prompt]
  for (let i = 0; i < count; i++)
    seq.push(((seq[seq.length - cfg.back] as number) + cfg.shift) % cfg.vocab)
  return seq.slice(prompt.length)
}

/** Widths of the hidden state and of the attention head. */
function sizes(cfg: HandDecoderConfig) {
  const { vocab: V, maxPosition: P } = cfg
  return { V, P, hidden: 2 * V + P, headDim: Math.max(P, V) }
}

/** The weights (row-major, `x @ W` with W [in, out]). */
export function handDecoderWeights(cfg: HandDecoderConfig) {
  const { V, P, hidden: h, headDim: d } = sizes(cfg)
  const embed = new Float32Array(V * h)
  for (let v = 0; v < V; v++) embed[v * h + v] = 1
  const position = new Float32Array(P * h)
  for (let p = 0; p < P; p++) position[p * h + V + p] = 1
  const q = new Float32Array(h * d)
  const k = new Float32Array(h * d)
  const lag = cfg.back - 1
  // Scores are divided by sqrt(headDim) in the graph: the match scores `sharpness` after it.
  const scale = cfg.sharpness * Math.sqrt(d)
  for (let p = 0; p < P; p++) {
    if (p >= lag) q[(V + p) * d + (p - lag)] = scale
    k[(V + p) * d + p] = 1
  }
  const v = new Float32Array(h * d)
  for (let t = 0; t < V; t++) v[t * d + t] = 1
  const o = new Float32Array(d * h)
  for (let t = 0; t < V; t++) o[t * h + V + P + t] = 1
  const lmHead = new Float32Array(h * V)
  for (let t = 0; t < V; t++) lmHead[(V + P + t) * V + ((t + cfg.shift) % V)] = cfg.confidence
  return { embed, position, q, k, v, o, lmHead }
}

/** How the graph takes its past: as {@link handDecoder} documents. */
export type HandDecoderMode = "fixed" | "growing" | "none"

/**
 * The decoder as an ONNX graph. Inputs `input_ids` int64 [b, s], `attention_mask` int64
 * [b, past + s], `position_ids` int64 [b, s], and (not with "none")
 * `past_key_values.0.key/value` float32 [b, 1, past, headDim]. Outputs `logits` [b, s, vocab]
 * and `present.0.key/value`: "fixed" takes the whole preallocated cache (past = capacity) and
 * outputs only this run's keys and values; "growing" outputs past ⧺ new; "none" has no past.
 */
export function handDecoder(cfg: HandDecoderConfig, mode: HandDecoderMode): Uint8Array {
  const w = handDecoderWeights(cfg)
  const { V, P, hidden: h, headDim: d } = sizes(cfg)
  const g = new Graph("hand_decoder")
  const B = "batch_size"
  const S = "sequence_length"
  const total = mode === "fixed" ? "capacity + sequence_length" : "total_sequence_length"
  const pastDim = mode === "fixed" ? "capacity" : "past_sequence_length"
  const ids = g.input("input_ids", "int64", [B, S])
  const mask = g.input("attention_mask", "int64", [B, total])
  const positions = g.input("position_ids", "int64", [B, S])
  const pastK =
    mode === "none" ? "" : g.input("past_key_values.0.key", "float32", [B, 1, pastDim, d])
  const pastV =
    mode === "none" ? "" : g.input("past_key_values.0.value", "float32", [B, 1, pastDim, d])

  const op = (
    type: string,
    inputs: string[],
    attrs: Parameters<Graph["op"]>[2] = {},
    name?: string,
  ) => g.op(type, inputs, attrs, name)
  const gather = (table: Float32Array, rows: number, index: string) =>
    op("Gather", [g.f32(table, [rows, h]), index], { axis: { i: 0 } })
  const proj = (x: string, wt: Float32Array, out: number) =>
    op("MatMul", [x, g.f32(wt, [wt.length / out, out])])
  const head = (x: string, name?: string) => op("Unsqueeze", [x, g.i64([1])], {}, name) // [b, s, d] -> [b, 1, s, d]
  const dim = (x: string, axis: number) =>
    op("Shape", [x], { start: { i: axis }, end: { i: axis + 1 } })
  const scalar = (x: string) => op("Squeeze", [x, g.i64([0])])
  const range = (start: string, limit: string) =>
    op("Range", [scalar(start), scalar(limit), g.i64([1], [])])

  const x = op("Add", [gather(w.embed, V, ids), gather(w.position, P, positions)])
  const q = head(proj(x, w.q, d))
  const newK = head(proj(x, w.k, d), mode === "fixed" ? "present.0.key" : undefined)
  const newV = head(proj(x, w.v, d), mode === "fixed" ? "present.0.value" : undefined)
  const cat = (past: string, t: string, name?: string) =>
    op("Concat", [past, t], { axis: { i: 2 } }, name)
  const K =
    mode === "none" ? newK : cat(pastK, newK, mode === "growing" ? "present.0.key" : undefined)
  const Vv =
    mode === "none" ? newV : cat(pastV, newV, mode === "growing" ? "present.0.value" : undefined)

  // New token i (of s) sees window position j (of T) iff mask[b, j] == 1 and j <= T - s + i.
  const s = dim(ids, 1)
  const T = dim(mask, 1)
  const one = g.i64([1])
  const j = range(g.i64([0]), T)
  const limit = op("Unsqueeze", [
    range(op("Add", [op("Sub", [T, s]), one]), op("Add", [T, one])),
    g.i64([1]),
  ])
  const causal = op("Cast", [op("Less", [j, limit])], { to: { i: 1 } }) // [s, T]
  const pad = op("Unsqueeze", [op("Cast", [mask], { to: { i: 1 } }), g.i64([1, 2])]) // [b, 1, 1, T]
  const visible = op("Greater", [op("Mul", [causal, pad]), g.f32([0.5])])

  const scores = op("Mul", [
    op("MatMul", [q, op("Transpose", [K], { perm: { ints: [0, 1, 3, 2] } })]),
    g.f32([1 / Math.sqrt(d)]),
  ])
  const attn = op("Softmax", [op("Where", [visible, scores, g.f32([-1e9])])], { axis: { i: -1 } })
  const read = op("Squeeze", [op("MatMul", [attn, Vv]), g.i64([1])]) // [b, s, d]
  const y = op("Add", [x, proj(read, w.o, h)])
  op("MatMul", [y, g.f32(w.lmHead, [h, V])], {}, "logits")
  g.output("logits", "float32", [B, S, V])
  if (mode !== "none") {
    const presentDims = [B, 1, mode === "fixed" ? S : total, d]
    g.output("present.0.key", "float32", presentDims)
    g.output("present.0.value", "float32", presentDims)
  }
  return encodeModel(g)
}
