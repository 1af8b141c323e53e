/**
 * A decoder whose output a person can check: one attention layer with hand-set weights (no
 * training, no tokenizer) that predicts next token = (the token `back` positions earlier +
 * `shift`) mod vocab. The counter (back 1, shift 1) counts up; the copier (back 5, shift 0)
 * repeats its last 5 tokens, which it can only find in its KV cache. Both run through a
 * StatefulSession with a fixed-capacity cache: greedy decoding, beam search (width 4, the
 * beams' caches reordered with `select`), throughput; then conversations joining and leaving
 * one StreamingSession; each checked against the same weights run without a cache on each
 * whole sequence.
 *
 * The models are built by the onnxruntime tests' helper, loaded at run time (the examples'
 * project does not compile test files, so its signatures are restated here).
 */
import { orThrow } from "@statesaver/core"
import {
  type StatefulSession,
  createStatefulSession,
  createStreamingSession,
  ortBackend,
} from "@statesaver/onnxruntime"
import * as ort from "onnxruntime-node"
import { argmax, logSoftmax, withoutCache } from "./logits.js"

interface HandDecoderConfig {
  readonly vocab: number
  readonly maxPosition: number
  readonly back: number
  readonly shift: number
  readonly sharpness: number
  readonly confidence: number
}
interface HandDecoders {
  counterConfig(): HandDecoderConfig
  copierConfig(period?: number): HandDecoderConfig
  handDecoder(cfg: HandDecoderConfig, mode: "fixed" | "growing" | "none"): Uint8Array
  ruleContinuation(cfg: HandDecoderConfig, prompt: readonly number[], count: number): number[]
}

const HELPER = new URL("../../packages/onnxruntime/test/helpers/hand-decoders.ts", import.meta.url)
const NAMES = ["counterConfig", "copierConfig", "handDecoder", "ruleContinuation"]

async function loadHandDecoders(): Promise<HandDecoders> {
  const mod = (await import(HELPER.href)) as Record<string, unknown>
  const missing = NAMES.filter((name) => typeof mod[name] !== "function")
  if (missing.length > 0)
    throw new Error(`${HELPER.pathname} no longer exports ${missing.join(", ")}`)
  return mod as unknown as HandDecoders
}

type Decoder = StatefulSession<"logits">

const CAPACITY = 64

/** Feeds one chunk per row (all of one length): each row's log-probabilities after its last token. */
async function feed(dec: Decoder, chunk: readonly (readonly number[])[]): Promise<Float64Array[]> {
  const n = chunk[0]?.length ?? 0
  const ids = new ort.Tensor("int64", BigInt64Array.from(chunk.flat(), BigInt), [chunk.length, n])
  const { logits } = orThrow(await dec.run({ input_ids: ids }))
  const V = logits.dims[2] as number
  const data = logits.data as Float32Array
  const rows = chunk.map((_, r) =>
    logSoftmax(data.subarray(((r + 1) * n - 1) * V, (r + 1) * n * V)),
  )
  logits.dispose()
  return rows
}

/** Greedy decoding of `steps` tokens after each row's prompt. */
async function greedy(
  dec: Decoder,
  prompts: readonly number[][],
  steps: number,
): Promise<number[][]> {
  const out: number[][] = prompts.map(() => [])
  let next = await feed(dec, prompts)
  for (let t = 0; t < steps; t++) {
    const chosen = next.map(argmax)
    chosen.forEach((token, r) => out[r]?.push(token))
    if (t < steps - 1)
      next = await feed(
        dec,
        chosen.map((token) => [token]),
      )
  }
  return out
}

interface Beam {
  readonly tokens: number[]
  readonly logProb: number
}

/** Beam search from one prompt: `select` gives each kept beam its parent's cache. */
async function beamSearch(
  dec: Decoder,
  prompt: number[],
  width: number,
  steps: number,
): Promise<Beam[]> {
  let next = await feed(dec, [prompt])
  let beams: Beam[] = [{ tokens: [], logProb: 0 }]
  for (let t = 0; t < steps; t++) {
    const kept = beams
      .flatMap((beam, parent) =>
        Array.from(next[parent] as Float64Array, (lp, token) => ({
          parent,
          token,
          logProb: beam.logProb + lp,
        })),
      )
      .sort((a, b) => b.logProb - a.logProb) // stable: ties keep (parent, token) order
      .slice(0, width)
    orThrow(dec.select(kept.map((c) => c.parent)))
    beams = kept.map((c) => ({
      tokens: [...(beams[c.parent] as Beam).tokens, c.token],
      logProb: c.logProb,
    }))
    if (t < steps - 1)
      next = await feed(
        dec,
        kept.map((c) => [c.token]),
      )
  }
  return beams
}

const show = (tokens: readonly number[]) => `[${tokens.join(" ")}]`

export async function main(): Promise<void> {
  process.env["ORT_DISABLE_TELEMETRY"] ??= "1"
  const hd = await loadHandDecoders()
  const backend = ortBackend({ ort })
  const counter = hd.counterConfig()
  const copier = hd.copierConfig(5)
  const cache = { kind: "fixed", capacity: CAPACITY } as const
  const open = async (cfg: HandDecoderConfig, batchSize: number) => {
    const session = await ort.InferenceSession.create(hd.handDecoder(cfg, "fixed"))
    return orThrow(
      createStatefulSession({ session, backend, batchSize, cache, outputs: ["logits"] }),
    )
  }
  let ruleHolds = true
  let cacheAgrees = true
  let largest = 0
  /** Checks a continuation against the rule and against the model run without a cache. */
  const check = async (
    cfg: HandDecoderConfig,
    oracle: (seq: readonly number[]) => Promise<Float64Array[]>,
    prompt: readonly number[],
    gen: readonly number[],
    logProb?: number,
  ) => {
    const seq = [...prompt, ...gen]
    const lp = await oracle(seq)
    let sum = 0
    for (let t = prompt.length; t < seq.length; t++) {
      const before = lp[t - 1] as Float64Array
      sum += before[seq[t] as number] as number
      if (logProb === undefined && argmax(before) !== seq[t]) cacheAgrees = false
    }
    if (logProb !== undefined) largest = Math.max(largest, Math.abs(sum - logProb))
    else if (show(gen) !== show(hd.ruleContinuation(cfg, prompt, gen.length))) ruleHolds = false
  }

  console.log(
    `\n## A decoder you can check by eye (one attention layer, hand-set weights, vocab ${copier.vocab}; ` +
      `fixed KV cache of ${CAPACITY} positions; onnxruntime-node)`,
  )
  const started = performance.now()

  {
    const oracle = await withoutCache(hd.handDecoder(counter, "none"))
    const prompts = [
      [3, 1, 4],
      [9, 9, 9],
      [26, 27, 28],
    ]
    using dec = await open(counter, prompts.length)
    const out = await greedy(dec, prompts, 10)
    console.log(
      `counter (next = last token + 1, mod ${counter.vocab}), greedy, 3 prompts in one batch:`,
    )
    for (const [r, gen] of out.entries()) {
      const prompt = prompts[r] as number[]
      await check(counter, oracle, prompt, gen)
      console.log(`  ${show(prompt)} → ${show(gen)}`)
    }
  }

  const oracle = await withoutCache(hd.handDecoder(copier, "none"))
  {
    const prompts = [
      [3, 1, 4, 1, 5],
      [2, 7, 1, 8, 2],
      [10, 20, 30, 20, 10],
    ]
    using dec = await open(copier, prompts.length)
    const out = await greedy(dec, prompts, 12)
    console.log(
      `copier (next = the token ${copier.back} back: repeats the last ${copier.back}, read from the cache), greedy:`,
    )
    for (const [r, gen] of out.entries()) {
      const prompt = prompts[r] as number[]
      await check(copier, oracle, prompt, gen)
      console.log(`  ${show(prompt)} → ${show(gen)}`)
    }
  }

  {
    const prompt = [6, 2, 8, 3, 1]
    using dec = await open(copier, 1)
    const beams = await beamSearch(dec, prompt, 4, 8)
    const perToken = -Math.log1p((copier.vocab - 1) * Math.exp(-copier.confidence))
    console.log(
      `copier, beam search width 4 after ${show(prompt)} (log p of the copied token ${perToken.toFixed(4)}, ` +
        `of any other ${(perToken - copier.confidence).toFixed(4)}):`,
    )
    for (const beam of beams) {
      await check(copier, oracle, prompt, beam.tokens, beam.logProb)
      console.log(`  ${show(beam.tokens)}  log p ${beam.logProb.toFixed(4)}`)
    }
  }

  {
    // Many conversations in one StreamingSession: each joins with its prompt in a run of its
    // own, then every conversation under way takes its next token in one batched run per step,
    // whatever its length, and leaves after 10 tokens.
    const session = await ort.InferenceSession.create(hd.handDecoder(copier, "fixed"))
    using chats = orThrow(
      createStreamingSession({ session, ort, backend, capacity: 8, cache, outputs: ["logits"] }),
    )
    const plan = [
      { key: "ann", at: 0, prompt: [1, 2, 3, 4, 5] },
      { key: "ben", at: 2, prompt: [9, 8, 7, 6, 5, 4] },
      { key: "cid", at: 3, prompt: [20, 0, 20, 0, 21, 1, 22] },
      { key: "dot", at: 5, prompt: [5, 10, 15, 20, 25, 30, 31, 3] },
    ]
    const LENGTH = 10
    const generated = new Map(plan.map(({ key }) => [key, [] as number[]]))
    /** The conversations under way and the token each feeds next. */
    const next = new Map<string, number>()
    const lastRow = (logits: Float32Array, row: number, n: number) =>
      logits.subarray((row * n + n - 1) * copier.vocab, (row * n + n) * copier.vocab)
    for (let step = 0; step === 0 || next.size > 0; step++) {
      for (const { key, at, prompt } of plan) {
        if (at !== step) continue
        const ids = new ort.Tensor("int64", BigInt64Array.from(prompt, BigInt), [1, prompt.length])
        const joined = orThrow(await chats.run([{ key, feeds: { input_ids: ids } }])).get(key)
        const token = argmax(lastRow(joined?.logits.data as Float32Array, 0, prompt.length))
        joined?.logits.dispose()
        generated.get(key)?.push(token)
        next.set(key, token)
      }
      const keys = [...next.keys()]
      const input_ids = new ort.Tensor(
        "int64",
        BigInt64Array.from(keys, (k) => BigInt(next.get(k) as number)),
        [keys.length, 1],
      )
      const { logits } = orThrow(await chats.runBatch(keys, { input_ids }))
      for (const [row, key] of keys.entries()) {
        const token = argmax(lastRow(logits.data as Float32Array, row, 1))
        const mine = generated.get(key) as number[]
        mine.push(token)
        next.set(key, token)
        if (mine.length === LENGTH) {
          next.delete(key)
          orThrow(chats.delete(key)) // the conversation ended
        }
      }
      logits.dispose()
    }
    console.log(
      `copier, ${plan.length} conversations in one StreamingSession (joining at steps ${plan.map((c) => c.at).join(", ")}, ` +
        `one batched run per step over those under way):`,
    )
    for (const { key, prompt } of plan) {
      const gen = generated.get(key) as number[]
      await check(copier, oracle, prompt, gen)
      console.log(`  ${key}: ${show(prompt)} → ${show(gen)}`)
    }
  }

  {
    const rows = 16
    const steps = CAPACITY - copier.back + 1 // the last token is never fed: the cache ends full
    const prompts = Array.from({ length: rows }, (_, r) =>
      Array.from({ length: copier.back }, (_, i) => (r * 7 + i * 3) % copier.vocab),
    )
    using dec = await open(copier, rows)
    const t0 = performance.now()
    const out = await greedy(dec, prompts, steps)
    const seconds = (performance.now() - t0) / 1000
    for (const [r, gen] of out.entries())
      if (show(gen) !== show(hd.ruleContinuation(copier, prompts[r] as number[], steps)))
        ruleHolds = false
    console.log(
      `throughput: ${rows} rows × ${steps} tokens (cache filled to ${CAPACITY}) in ${(seconds * 1000).toFixed(0)} ms: ` +
        `${Math.round((rows * steps) / seconds)} tokens/s, ${((seconds * 1000) / steps).toFixed(2)} ms per step`,
    )
  }

  console.log(
    `checked: every greedy continuation ${ruleHolds ? "follows" : "BREAKS"} the rule; the same model ` +
      `without a cache on each whole sequence: ${cacheAgrees ? "equal" : "DIFFERENT"} tokens, beam ` +
      `scores within ${largest.toExponential(1)} (section: ${((performance.now() - started) / 1000).toFixed(1)} s)`,
  )
  if (!ruleHolds || !cacheAgrees || largest > 1e-4) process.exitCode = 1
}

if (import.meta.url === `file://${process.argv[1]}`) await main()
