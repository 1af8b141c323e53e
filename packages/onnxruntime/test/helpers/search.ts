// Reference searches that never hold a cache, for tests of generation through a cache: at every
// step they run the no-cache graph (helpers/decoders.ts `noCacheDecoder`) on each whole sequence
// alone, and they recompute each sequence's score from that run instead of accumulating it.
//
// Beam scores are plain sums of natural-log probabilities, not length-normalised: every beam has
// the same length (no end token), so normalising would not change the ranking.
import { type DecoderConfig, noCacheDecoder, oracleLogits } from "./decoders.js"
import type { Runtime } from "./harness.js"

/** Natural-log softmax of `vocab` logits starting at `offset`, in float64. */
export function logSoftmax(logits: Float32Array, offset: number, vocab: number): Float64Array {
  let max = -Infinity
  for (let v = 0; v < vocab; v++) max = Math.max(max, logits[offset + v] as number)
  let sum = 0
  for (let v = 0; v < vocab; v++) sum += Math.exp((logits[offset + v] as number) - max)
  const lse = max + Math.log(sum)
  return Float64Array.from({ length: vocab }, (_, v) => (logits[offset + v] as number) - lse)
}

/** The best entry (the lowest index among equals) and its lead over the runner-up. */
export function argmax(lp: Float64Array): { token: number; gap: number } {
  let token = 0
  for (let v = 1; v < lp.length; v++) if ((lp[v] as number) > (lp[token] as number)) token = v
  let second = -Infinity
  for (let v = 0; v < lp.length; v++) if (v !== token) second = Math.max(second, lp[v] as number)
  return { token, gap: (lp[token] as number) - second }
}

export interface Candidate {
  readonly parent: number
  readonly token: number
  readonly score: number
}

/**
 * The `width` best continuations: by score, then parent, then token. Also the lead of the last
 * kept over the first dropped, so a test can show its ranking is not decided within tolerance.
 */
export function best(candidates: Candidate[], width: number): { kept: Candidate[]; gap: number } {
  const sorted = [...candidates].sort(
    (a, b) => b.score - a.score || a.parent - b.parent || a.token - b.token,
  )
  const kept = sorted.slice(0, width)
  const last = kept[width - 1] as Candidate
  const next = sorted[width]
  return { kept, gap: next === undefined ? Infinity : last.score - next.score }
}

/** Greedy and beam search of `cfg`'s weights without a cache, every sequence run whole. */
export async function referenceSearch(ort: Runtime, cfg: DecoderConfig) {
  const V = cfg.vocab
  const oracle = await ort.InferenceSession.create(noCacheDecoder(cfg))
  /**
   * Each sequence run alone from position 0: the log-probabilities of the token after it, and
   * its score, the log-probability of its tokens from `from` on (recomputed, not accumulated).
   */
  const run = async (seqs: readonly (readonly number[])[], from: number) => {
    const logits = await oracleLogits(ort, oracle, seqs)
    return seqs.map((seq, r) => {
      const l = logits[r] as Float32Array
      let score = 0
      for (let t = from; t < seq.length; t++)
        score += logSoftmax(l, (t - 1) * V, V)[seq[t] as number] as number
      return { next: logSoftmax(l, (seq.length - 1) * V, V), score }
    })
  }
  const one = async (seq: readonly number[], from: number) =>
    (await run([seq], from))[0] as { next: Float64Array; score: number }
  /** Greedy continuation of `prompt` by `steps` tokens: the tokens, score and smallest lead. */
  const greedy = async (prompt: readonly number[], steps: number) => {
    const seq = [...prompt]
    let gap = Infinity
    for (let t = 0; t < steps; t++) {
      const top = argmax((await one(seq, seq.length)).next)
      gap = Math.min(gap, top.gap)
      seq.push(top.token)
    }
    const { score } = await one(seq, prompt.length)
    return { tokens: seq.slice(prompt.length), score, gap }
  }
  /** Beam search of `width` beams for `steps` tokens after `prompt`. */
  const beam = async (prompt: readonly number[], width: number, steps: number) => {
    let beams: number[][] = [[]]
    let gap = Infinity
    for (let t = 0; t < steps; t++) {
      const runs = await run(
        beams.map((b) => [...prompt, ...b]),
        prompt.length,
      )
      const candidates = runs.flatMap(({ next, score }, parent) =>
        Array.from({ length: V }, (_, token) => ({
          parent,
          token,
          score: score + (next[token] as number),
        })),
      )
      const chosen = best(candidates, width)
      gap = Math.min(gap, chosen.gap)
      beams = chosen.kept.map((k) => [...(beams[k.parent] as number[]), k.token])
    }
    const runs = await run(
      beams.map((b) => [...prompt, ...b]),
      prompt.length,
    )
    return { beams, scores: runs.map((r) => r.score), gap }
  }
  return { greedy, beam }
}
