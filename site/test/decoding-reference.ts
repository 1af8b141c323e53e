/**
 * The decoding page's expected output, computed in Node without any cache: the same weights
 * (the no-cache graph of the onnxruntime tests' decoder builder) on onnxruntime-node, every
 * sequence run whole from position 0 at every step, each score recomputed from that run.
 */
import * as ort from "onnxruntime-node"
import {
  noCacheDecoder,
  oracleLogits,
  tinyDecoderConfig,
} from "../../packages/onnxruntime/test/helpers/decoders.js"

const cfg = tinyDecoderConfig()
const V = cfg.vocab

/** Natural-log softmax of the logits after position `t`, in float64. */
function logProbs(logits: Float32Array, t: number): Float64Array {
  const row = logits.subarray(t * V, (t + 1) * V)
  let max = -Infinity
  for (const x of row) max = Math.max(max, x)
  let sum = 0
  for (const x of row) sum += Math.exp(x - max)
  const lse = max + Math.log(sum)
  return Float64Array.from(row, (x) => x - lse)
}

export interface Scored {
  readonly tokens: number[]
  readonly score: number
}

export interface Reference {
  /** Greedy continuation of each prompt alone, and the smallest lead of a chosen token. */
  greedy(prompt: readonly number[], steps: number): Promise<Scored & { gap: number }>
  /**
   * Beam search: at each step the `width` best of every beam's every continuation by summed
   * log-probability, ties by beam then token; best first. `gap`: the smallest lead of the last
   * kept candidate over the first dropped one.
   */
  beam(
    prompt: readonly number[],
    width: number,
    steps: number,
  ): Promise<{ beams: Scored[]; parents: number[][]; gap: number }>
  release(): Promise<void>
}

export async function decodingReference(): Promise<Reference> {
  const session = await ort.InferenceSession.create(noCacheDecoder(cfg), { intraOpNumThreads: 1 })
  /** Each sequence alone: next-token log-probabilities and the score of its tokens from `from`. */
  const run = async (seqs: readonly (readonly number[])[], from: number) => {
    const logits = await oracleLogits(ort, session, seqs)
    return seqs.map((seq, r) => {
      const l = logits[r] as Float32Array
      let score = 0
      for (let t = from; t < seq.length; t++)
        score += logProbs(l, t - 1)[seq[t] as number] as number
      return { next: logProbs(l, seq.length - 1), score }
    })
  }
  return {
    async greedy(prompt, steps) {
      const seq = [...prompt]
      let gap = Infinity
      for (let t = 0; t < steps; t++) {
        const [{ next } = { next: new Float64Array() }] = await run([seq], seq.length)
        const order = [...next.keys()].sort((a, b) => (next[b] as number) - (next[a] as number))
        gap = Math.min(
          gap,
          (next[order[0] as number] as number) - (next[order[1] as number] as number),
        )
        seq.push(order[0] as number)
      }
      const [{ score } = { score: NaN }] = await run([seq], prompt.length)
      return { tokens: seq.slice(prompt.length), score, gap }
    },
    async beam(prompt, width, steps) {
      let beams: number[][] = [[]]
      const parents: number[][] = []
      let gap = Infinity
      for (let t = 0; t < steps; t++) {
        const runs = await run(
          beams.map((b) => [...prompt, ...b]),
          prompt.length,
        )
        const candidates = runs.flatMap(({ next, score }, parent) =>
          Array.from(next, (lp, token) => ({ parent, token, score: score + lp })),
        )
        candidates.sort((a, b) => b.score - a.score || a.parent - b.parent || a.token - b.token)
        const kept = candidates.slice(0, width)
        const dropped = candidates[width]
        if (dropped !== undefined)
          gap = Math.min(gap, (kept[width - 1]?.score as number) - dropped.score)
        parents.push(kept.map((c) => c.parent))
        beams = kept.map((c) => [...(beams[c.parent] as number[]), c.token])
      }
      const runs = await run(
        beams.map((b) => [...prompt, ...b]),
        prompt.length,
      )
      return {
        beams: beams.map((tokens, b) => ({ tokens, score: runs[b]?.score as number })),
        parents,
        gap,
      }
    },
    release: () => session.release(),
  }
}
