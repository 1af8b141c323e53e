/**
 * Greedy decoding and beam search through a StatefulSession that keeps a decoder's KV cache, as
 * in docs/guide-decoders.md: the session derives the mask and positions, the page feeds
 * `input_ids` only. Each step reports every row's cache length, read from the session's state.
 */
import { orThrow } from "@statesaver/core"
import { type OrtTensor, type StatefulSession, tensorData } from "@statesaver/onnxruntime"
import type * as ort from "onnxruntime-web/webgpu"

/** A session over a decoder, handing back its logits. */
export type Decoder = StatefulSession<"logits">

/** Natural-log softmax of one position's logits, in float64. */
export function logSoftmax(logits: Float32Array): Float64Array {
  const max = logits.reduce((a, b) => Math.max(a, b), -Infinity)
  const lse = max + Math.log(logits.reduce((s, x) => s + Math.exp(x - max), 0))
  return Float64Array.from(logits, (x) => x - lse)
}

/** The index of the largest value (the first among equals). */
export const argmax = (xs: Float64Array): number =>
  xs.reduce((best, x, i) => (x > (xs[best] as number) ? i : best), 0)

/**
 * Runs one chunk of new tokens per row, all of one length: per row, the next-token
 * log-probabilities after each new token.
 */
export async function feed(
  Tensor: typeof ort.Tensor,
  dec: Decoder,
  chunk: readonly (readonly number[])[],
): Promise<Float64Array[][]> {
  const n = chunk[0]?.length ?? 0
  const ids = new Tensor("int64", BigInt64Array.from(chunk.flat(), BigInt), [chunk.length, n])
  const { logits } = orThrow(await dec.run({ input_ids: ids }))
  const data = orThrow(tensorData(logits, "float32", "logits"))
  const V = logits.dims[2] as number
  const rows = chunk.map((_, r) =>
    Array.from({ length: n }, (_, i) =>
      logSoftmax(data.subarray((r * n + i) * V, (r * n + i + 1) * V)),
    ),
  )
  logits.dispose()
  return rows
}

/**
 * Every row's cache length as the session keeps it (host memory on every backend): the fixed
 * cache's `cache_length`, or the ones in each row of the growing cache's `cache_mask`.
 */
export function cacheLengths(dec: Decoder): number[] {
  const state = dec.state()
  const length = state["cache_length"]
  if (length !== undefined) return Array.from(orThrow(tensorData(length, "int32", "cache_length")))
  const mask = state["cache_mask"] as OrtTensor
  const data = orThrow(tensorData(mask, "uint8", "cache_mask"))
  const [rows = 0, past = 0] = mask.dims
  return Array.from({ length: rows }, (_, r) =>
    data.subarray(r * past, (r + 1) * past).reduce((s, x) => s + x, 0),
  )
}

/** Positions the cache holds room for: a fixed cache's capacity, a growing cache's current size. */
export function cachePositions(dec: Decoder): number {
  const key = dec.state()["past_key_values.0.key"] as OrtTensor
  return key.dims[2] as number
}

export interface Generated {
  readonly tokens: number[]
  /** Sum of the log-probabilities of `tokens`. */
  logProb: number
}

export interface GreedyStep {
  readonly tokens: number[]
  /** Each row's cache length once this step's tokens are in. */
  readonly lengths: number[]
}

/**
 * Greedy decoding of `steps` tokens after each prompt, the prompts in one batch: right-padded
 * to the longest, the padding then dropped from each row's cache with `rewind` (attention is
 * causal: the logits after a row's last real token do not see its padding).
 */
export async function greedy(
  Tensor: typeof ort.Tensor,
  dec: Decoder,
  prompts: readonly (readonly number[])[],
  steps: number,
  on: { prefill?: (lengths: number[]) => void; step?: (step: GreedyStep) => void } = {},
): Promise<{ out: Generated[]; prefill: number[] }> {
  const longest = Math.max(...prompts.map((p) => p.length))
  const padded = prompts.map((p) => [...p, ...Array<number>(longest - p.length).fill(0)])
  const all = await feed(Tensor, dec, padded)
  let next = prompts.map((p, r) => all[r]?.[p.length - 1] as Float64Array)
  prompts.forEach((p, r) => {
    if (p.length < longest) orThrow(dec.rewind([r], longest - p.length))
  })
  const prefill = cacheLengths(dec)
  on.prefill?.(prefill)
  const out: Generated[] = prompts.map(() => ({ tokens: [], logProb: 0 }))
  for (let t = 0; t < steps; t++) {
    const chosen = next.map(argmax)
    chosen.forEach((token, r) => {
      const row = out[r] as Generated
      row.tokens.push(token)
      row.logProb += (next[r] as Float64Array)[token] as number
    })
    next = (
      await feed(
        Tensor,
        dec,
        chosen.map((token) => [token]),
      )
    ).map((positions) => positions.at(-1) as Float64Array)
    on.step?.({ tokens: chosen, lengths: cacheLengths(dec) })
  }
  return { out, prefill }
}

export interface BeamStep {
  /** The rows given to `select`: the parent of each kept beam. */
  readonly parents: number[]
  /** The token each kept beam appended. */
  readonly tokens: number[]
  /** Each kept beam's score (sum of log-probabilities), best first. */
  readonly scores: number[]
  /** Each beam's cache length once its token is in. */
  readonly lengths: number[]
  /** Positions the cache holds room for (fixed: the capacity; growing: its current size). */
  readonly positions: number
}

/**
 * Beam search from one prompt (`dec` holds one row): each step keeps the `width` best
 * continuations of all beams by summed log-probability (all beams have one length: no length
 * normalisation), and `select` gives each kept beam its parent's cache.
 */
export async function beamSearch(
  Tensor: typeof ort.Tensor,
  dec: Decoder,
  prompt: readonly number[],
  width: number,
  steps: number,
  onStep: (step: BeamStep) => void = () => undefined,
): Promise<Generated[]> {
  let next = (await feed(Tensor, dec, [prompt])).map((p) => p.at(-1) as Float64Array)
  let beams: Generated[] = [{ tokens: [], logProb: 0 }]
  for (let t = 0; t < steps; t++) {
    const candidates = beams.flatMap((beam, parent) =>
      Array.from(next[parent] as Float64Array, (lp, token) => ({
        parent,
        token,
        logProb: beam.logProb + lp,
      })),
    )
    // A stable sort: equal scores keep (parent, token) order.
    const kept = candidates.sort((a, b) => b.logProb - a.logProb).slice(0, width)
    // One call reorders, duplicates and drops the rows of every cache leaf and the lengths.
    orThrow(dec.select(kept.map((c) => c.parent)))
    beams = kept.map((c) => ({
      tokens: [...(beams[c.parent] as Generated).tokens, c.token],
      logProb: c.logProb,
    }))
    next = (
      await feed(
        Tensor,
        dec,
        kept.map((c) => [c.token]),
      )
    ).map((p) => p.at(-1) as Float64Array)
    onStep({
      parents: kept.map((c) => c.parent),
      tokens: kept.map((c) => c.token),
      scores: kept.map((c) => c.logProb),
      lengths: cacheLengths(dec),
      positions: cachePositions(dec),
    })
  }
  return beams
}
