/**
 * Decoding through a StatefulSession that keeps a decoder's KV cache (a tiny decoder with real
 * attention and random weights, token ids only, no tokenizer):
 * - greedy decoding of a batch of prompts;
 * - beam search (width 4), each beam's cache following its parent through `select` at each step;
 * - prefix sharing: a prompt's cache computed once and forked with `select([0, 0, 0, 0])`, then
 *   each row continues differently;
 * - speculative decoding: a draft's tokens accepted up to the first mismatch, the rest of both
 *   caches dropped with `rewind`.
 * Every result is checked against the same weights run without a cache on the whole sequence.
 *
 * `pnpm --filter @statesaver/examples run decoding` uses a fixed-capacity cache;
 * `pnpm --filter @statesaver/examples run decoding growing` a growing one.
 */
import { orThrow } from "@statesaver/core"
import {
  type KvCacheOptions,
  type OrtBackend,
  type StatefulSession,
  createStatefulSession,
  ortBackend,
} from "@statesaver/onnxruntime"
import * as ort from "onnxruntime-node"
import { argmax, logSoftmax, withoutCache } from "./logits.js"
import { type DecoderConfig, loadDecoders } from "./tiny-decoder.js"

/** A session over a decoder, handing back its logits. */
type Decoder = StatefulSession<"logits">

/**
 * Runs one chunk of new tokens per row, all of one length. The session derives the attention
 * mask and position ids from each row's cache length; it is fed `input_ids` only. Returns, per
 * row, the next-token log-probabilities after each new token.
 */
async function feed(
  dec: Decoder,
  chunk: readonly (readonly number[])[],
): Promise<Float64Array[][]> {
  const n = chunk[0]?.length ?? 0
  const ids = new ort.Tensor("int64", BigInt64Array.from(chunk.flat(), BigInt), [chunk.length, n])
  const { logits } = orThrow(await dec.run({ input_ids: ids }))
  const data = logits.data as Float32Array
  const V = logits.dims[2] as number
  const rows = chunk.map((_, r) =>
    Array.from({ length: n }, (_, i) =>
      logSoftmax(data.subarray((r * n + i) * V, (r * n + i + 1) * V)),
    ),
  )
  logits.dispose()
  return rows
}

/** The log-probabilities after the last new token of each row. */
const lastOf = (rows: Float64Array[][]): Float64Array[] =>
  rows.map((positions) => positions.at(-1) as Float64Array)

interface Generated {
  readonly tokens: number[]
  /** Sum of the log-probabilities of `tokens`. */
  logProb: number
}

/** Greedy decoding of `steps` tokens after each row's chunk (the rows continue their caches). */
async function greedy(dec: Decoder, chunks: number[][], steps: number): Promise<Generated[]> {
  let next = lastOf(await feed(dec, chunks))
  const out: Generated[] = chunks.map(() => ({ tokens: [], logProb: 0 }))
  for (let t = 0; t < steps; t++) {
    const chosen = next.map(argmax)
    chosen.forEach((token, r) => {
      const row = out[r] as Generated
      row.tokens.push(token)
      row.logProb += (next[r] as Float64Array)[token] as number
    })
    if (t < steps - 1)
      next = lastOf(
        await feed(
          dec,
          chosen.map((token) => [token]),
        ),
      )
  }
  return out
}

/**
 * Beam search from one prompt (`dec` holds one row): each step keeps the `width` best
 * continuations of all beams by summed log-probability (every beam has the same length, so no
 * length normalisation), and `select` gives each kept beam its parent's cache.
 */
async function beamSearch(
  dec: Decoder,
  prompt: number[],
  width: number,
  steps: number,
): Promise<{ beams: Generated[]; parents: number[][] }> {
  let next = lastOf(await feed(dec, [prompt]))
  let beams: Generated[] = [{ tokens: [], logProb: 0 }]
  const parents: number[][] = []
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
    // Reorder, duplicate and drop rows of every cache leaf in one call (on WebGPU, copies on
    // the device). The first step forks the prompt's row into `width` beams.
    orThrow(dec.select(kept.map((c) => c.parent)))
    parents.push(kept.map((c) => c.parent))
    beams = kept.map((c) => ({
      tokens: [...(beams[c.parent] as Generated).tokens, c.token],
      logProb: c.logProb,
    }))
    if (t < steps - 1)
      next = lastOf(
        await feed(
          dec,
          kept.map((c) => [c.token]),
        ),
      )
  }
  return { beams, parents }
}

/**
 * Greedy speculative decoding of one row: the draft proposes `k` tokens, the target checks them
 * in one run and keeps them up to the first mismatch, where its own token replaces the draft's.
 * Both caches hold the sequence but its last token; after each round, `rewind` drops the
 * positions both took past the mismatch. The output is the target's greedy decoding.
 */
async function speculative(
  target: Decoder,
  draft: Decoder,
  prompt: number[],
  k: number,
  count: number,
): Promise<Generated & { accepted: number[]; rewound: number }> {
  await feed(target, [prompt.slice(0, -1)])
  await feed(draft, [prompt.slice(0, -1)])
  const seq = [...prompt]
  const logProbs: number[] = []
  const accepted: number[] = []
  let rewound = 0
  while (seq.length - prompt.length < count) {
    const pending = seq.at(-1) as number
    const proposal: number[] = []
    for (let token = pending; proposal.length < k;) {
      token = argmax(lastOf(await feed(draft, [[token]]))[0] as Float64Array)
      proposal.push(token)
    }
    // The target's choice after the pending token and after each of the first k - 1 drafts.
    const checks = (await feed(target, [[pending, ...proposal.slice(0, k - 1)]]))[0] ?? []
    let a = 0
    for (const lp of checks) {
      const choice = argmax(lp)
      seq.push(choice)
      logProbs.push(lp[choice] as number)
      if (choice !== proposal[a]) break
      a++
    }
    accepted.push(a)
    // Both caches took k tokens: keep the pending one and the a accepted, drop the others.
    const drop = Math.max(0, k - 1 - a)
    if (drop > 0) {
      orThrow(target.rewind([0], drop))
      orThrow(draft.rewind([0], drop))
      rewound += drop
    }
  }
  const tokens = seq.slice(prompt.length, prompt.length + count)
  const logProb = logProbs.slice(0, count).reduce((s, x) => s + x, 0)
  return { tokens, logProb, accepted, rewound }
}

// ---------------------------------------------------------------------------------------------

/**
 * Checks a continuation against a run without a cache on the whole sequence: the score
 * difference, and whether every token is the greedy choice.
 */
async function check(
  oracle: (seq: readonly number[]) => Promise<Float64Array[]>,
  prefix: readonly number[],
  gen: Generated,
): Promise<{ delta: number; greedy: boolean }> {
  const seq = [...prefix, ...gen.tokens]
  const lp = await oracle(seq)
  let sum = 0
  let greedy = true
  for (let t = prefix.length; t < seq.length; t++) {
    const before = lp[t - 1] as Float64Array
    sum += before[seq[t] as number] as number
    greedy &&= argmax(before) === seq[t]
  }
  return { delta: Math.abs(sum - gen.logProb), greedy }
}

const show = (tokens: readonly number[]) => `[${tokens.join(" ")}]`

export async function main(kind: "fixed" | "growing" = "fixed"): Promise<void> {
  process.env["ORT_DISABLE_TELEMETRY"] ??= "1"
  const decoders = await loadDecoders()
  const cfg = decoders.tinyDecoderConfig()
  const cache: KvCacheOptions =
    kind === "fixed" ? { kind: "fixed", capacity: cfg.maxPosition } : { kind: "growing" }
  const build = (c: DecoderConfig) =>
    kind === "fixed" ? decoders.fixedCacheDecoder(c) : decoders.growingDecoder(c)
  const targetModel = await ort.InferenceSession.create(build(cfg))
  const oracle = await withoutCache(decoders.noCacheDecoder(cfg))
  const backend = ortBackend({ ort }) as OrtBackend
  const open = (batchSize: number, session = targetModel): Decoder =>
    orThrow(createStatefulSession({ session, backend, batchSize, cache, outputs: ["logits"] }))
  const worst = { delta: 0, greedy: true }
  const record = ({ delta, greedy }: { delta: number; greedy: boolean }, isGreedy = true) => {
    worst.delta = Math.max(worst.delta, delta)
    if (isGreedy) worst.greedy &&= greedy
  }
  console.log(
    `\n## Decoding with a ${kind} KV cache (tiny decoder: vocab ${cfg.vocab}, ${cfg.layers} layers, ` +
      `${cfg.heads} heads; onnxruntime-node)`,
  )

  {
    const prompts = [
      [3, 1, 4, 1, 5],
      [2, 7, 1, 8, 2],
      [1, 4, 1, 4, 2],
    ]
    using dec = open(prompts.length)
    const out = await greedy(dec, prompts, 12)
    console.log("greedy, 3 prompts in one batch:")
    for (const [r, gen] of out.entries()) {
      const prompt = prompts[r] as number[]
      record(await check(oracle, prompt, gen))
      console.log(`  ${show(prompt)} → ${show(gen.tokens)}  log p ${gen.logProb.toFixed(4)}`)
    }
  }

  {
    const prompt = [9, 2, 6, 5, 3, 5]
    using dec = open(1)
    const live = backend.liveTensors()
    const { beams, parents } = await beamSearch(dec, prompt, 4, 12)
    console.log(`beam search, width 4, after ${show(prompt)}:`)
    for (const beam of beams) {
      record(await check(oracle, prompt, beam), false)
      console.log(`  ${show(beam.tokens)}  log p ${beam.logProb.toFixed(4)}`)
    }
    console.log(`  select per step: ${parents.map((p) => p.join("")).join(" ")}`)
    console.log(`  live ORT tensors: ${live} at batch 1, ${backend.liveTensors()} after 12 selects`)
  }

  {
    const prompt = [8, 9, 7, 9, 3, 2, 3]
    const suffixes = [[8], [4], [6], [2]]
    using dec = open(1)
    await feed(dec, [prompt]) // the prompt, computed once
    orThrow(dec.select([0, 0, 0, 0])) // four rows with its cache
    const out = await greedy(dec, suffixes, 8)
    console.log(`prefix sharing: ${show(prompt)} computed once, forked into 4 rows:`)
    for (const [r, gen] of out.entries()) {
      const suffix = suffixes[r] as number[]
      record(await check(oracle, [...prompt, ...suffix], gen))
      console.log(`  + ${show(suffix)} → ${show(gen.tokens)}  log p ${gen.logProb.toFixed(4)}`)
    }
  }

  {
    // The draft: the target's first layer alone (the same seed gives the same embedding, first
    // layer and head), cheaper and often, not always, of the target's opinion.
    const draftModel = await ort.InferenceSession.create(build({ ...cfg, layers: 1 }))
    const prompt = [6, 2, 6, 4, 3]
    using target = open(1)
    using draft = open(1, draftModel)
    const k = 4
    const gen = await speculative(target, draft, prompt, k, 24)
    record(await check(oracle, prompt, gen))
    console.log(`speculative decoding, k = ${k}, draft = the target's first layer:`)
    console.log(`  ${show(prompt)} → ${show(gen.tokens)}  log p ${gen.logProb.toFixed(4)}`)
    console.log(
      `  ${gen.accepted.length} target runs for ${gen.tokens.length} tokens; drafts accepted per ` +
        `round: ${gen.accepted.join(" ")}; ${gen.rewound} positions rewound`,
    )
  }

  console.log(
    `checked without a cache on each whole sequence: greedy tokens ${worst.greedy ? "equal" : "DIFFER"}, ` +
      `largest log p difference ${worst.delta.toExponential(1)}`,
  )
  if (!worst.greedy || worst.delta > 1e-4) process.exitCode = 1
}

if (import.meta.url === `file://${process.argv[1]}`) {
  await main(process.argv[2] === "growing" ? "growing" : "fixed")
}
