// Generation recipes through a StatefulSession with a KV cache: greedy decoding, beam search
// (width 4, the beams' caches reordered with `select` each step), prefix sharing (a prompt's
// cache computed once and forked with `select([0, 0, 0, 0])`) and speculative decoding (a draft's
// tokens accepted up to the first mismatch, the rest dropped with `rewind`).
// Oracle: reference searches that never hold a cache (helpers/search.ts): at every step they run
// the same weights without any cache on each whole sequence alone. The cached searches must give
// the same tokens and scores within 1e-4 (sums of natural-log probabilities).
import { orThrow } from "@statesaver/core"
import * as ortNode from "onnxruntime-node"
import * as ortWeb from "onnxruntime-web"
import { describe, expect, it } from "vitest"
import {
  type KvCacheOptions,
  type OrtBackend,
  createStatefulSession,
  ortBackend,
} from "../src/index.js"
import {
  type DecoderConfig,
  fixedCacheDecoder,
  growingDecoder,
  tinyDecoderConfig,
  seededTokens,
} from "./helpers/decoders.js"
import type { Runtime } from "./helpers/harness.js"
import { argmax, best, logSoftmax, referenceSearch } from "./helpers/search.js"

ortWeb.env.wasm.numThreads = 1

const cfg = tinyDecoderConfig()
const V = cfg.vocab
const SCORE_TOL = 1e-4
const CAPACITY = 48

interface Kind {
  readonly name: "fixed" | "growing"
  readonly build: (c: DecoderConfig) => Uint8Array
  readonly cache: KvCacheOptions
}
const kinds: readonly Kind[] = [
  { name: "fixed", build: fixedCacheDecoder, cache: { kind: "fixed", capacity: CAPACITY } },
  { name: "growing", build: growingDecoder, cache: { kind: "growing" } },
]
const runtimes: readonly [string, Runtime][] = [
  ["onnxruntime-node", ortNode as unknown as Runtime],
  ["onnxruntime-web wasm", ortWeb as unknown as Runtime],
]

/** Deterministic tokens in [0, vocab). */
const tokens = (n: number, seed: number): number[] => seededTokens(n, seed, V)

// ---------------------------------------------------------------------------------------------
// The cached side: a session over a KV cache

async function cachedDecoder(ort: Runtime, kind: Kind, batchSize: number, c = cfg) {
  const session = await ort.InferenceSession.create(kind.build(c))
  const backend = ortBackend({ ort }) as OrtBackend
  const s = orThrow(
    createStatefulSession({ session, backend, batchSize, cache: kind.cache, outputs: ["logits"] }),
  )
  return {
    s,
    backend,
    /** Feeds one chunk per row (equal lengths); the logits [rows, n, vocab], copied. */
    async step(chunk: readonly (readonly number[])[]): Promise<Float32Array> {
      const n = (chunk[0] as readonly number[]).length
      const ids = new ort.Tensor("int64", BigInt64Array.from(chunk.flat(), BigInt), [
        chunk.length,
        n,
      ])
      const out = orThrow(await s.run({ input_ids: ids }))
      const logits = (out.logits.data as Float32Array).slice()
      expect(out.logits.dims).toEqual([chunk.length, n, V])
      out.logits.dispose()
      return logits
    },
  }
}

/** Log-probabilities of the next token after position `i` of row `r` of `[rows, n, V]` logits. */
const nextLogProbs = (logits: Float32Array, n: number, r: number, i = n - 1) =>
  logSoftmax(logits, (r * n + i) * V, V)

/** The reference side: no cache, every sequence run whole. */
const reference = (ort: Runtime, c = cfg) => referenceSearch(ort, c)

// ---------------------------------------------------------------------------------------------

describe.each(runtimes)("generation through select and rewind on %s", (_, ort) => {
  describe.each(kinds)("$name cache", (kind) => {
    it("greedy decoding of 3 prompts of different lengths (right-padded, the padding rewound) equals greedy search without a cache: tokens and scores", async () => {
      const STEPS = 16
      const prompts = [tokens(5, 1), tokens(3, 2), tokens(4, 3)]
      const P = 5
      const d = await cachedDecoder(ort, kind, prompts.length)
      // One run takes the same number of tokens in every row: pad on the right, read each row's
      // logits after its last real token (causal: padding after it changes nothing), then drop
      // the padding from the cache.
      const padded = prompts.map((p) => [...p, ...Array<number>(P - p.length).fill(0)])
      let logits = await d.step(padded)
      let next = prompts.map((p, r) => nextLogProbs(logits, P, r, p.length - 1))
      for (const [r, p] of prompts.entries())
        if (p.length < P) orThrow(d.s.rewind([r], P - p.length))
      const generated: number[][] = prompts.map(() => [])
      const scores = prompts.map(() => 0)
      for (let t = 0; t < STEPS; t++) {
        for (const r of prompts.keys()) {
          const lp = next[r] as Float64Array
          const { token } = argmax(lp)
          generated[r]?.push(token)
          scores[r] = (scores[r] as number) + (lp[token] as number)
        }
        if (t < STEPS - 1) {
          logits = await d.step(generated.map((g) => [g.at(-1) as number]))
          next = prompts.map((_, r) => nextLogProbs(logits, 1, r))
        }
      }
      const ref = await reference(ort)
      for (const [r, prompt] of prompts.entries()) {
        const want = await ref.greedy(prompt, STEPS)
        expect(want.gap).toBeGreaterThan(SCORE_TOL)
        expect(generated[r]).toEqual(want.tokens)
        expect(Math.abs((scores[r] as number) - want.score)).toBeLessThan(SCORE_TOL)
      }
      d.s.dispose()
      expect(d.backend.liveTensors()).toBe(0)
    })

    it("beam search (width 4) reorders the beams' caches with select and equals beam search without a cache; live tensors flat", async () => {
      const WIDTH = 4
      const STEPS = 20
      const prompt = tokens(6, 4)
      const d = await cachedDecoder(ort, kind, 1)
      let logits = await d.step([prompt])
      let n = prompt.length
      let beams: { tokens: number[]; score: number }[] = [{ tokens: [], score: 0 }]
      const live: number[] = [d.backend.liveTensors()]
      const parents: number[][] = []
      for (let t = 0; t < STEPS; t++) {
        const candidates = beams.flatMap((b, parent) => {
          const lp = nextLogProbs(logits, n, parent)
          return Array.from({ length: V }, (_, token) => ({
            parent,
            token,
            score: b.score + (lp[token] as number),
          }))
        })
        const { kept } = best(candidates, WIDTH)
        // Each beam's cache follows its parent: reorder, duplicate, drop rows (the first step
        // forks the prompt's row into four).
        orThrow(d.s.select(kept.map((k) => k.parent)))
        parents.push(kept.map((k) => k.parent))
        beams = kept.map((k) => ({
          tokens: [...(beams[k.parent] as { tokens: number[] }).tokens, k.token],
          score: k.score,
        }))
        live.push(d.backend.liveTensors())
        if (t < STEPS - 1) {
          logits = await d.step(beams.map((b) => [b.tokens.at(-1) as number]))
          n = 1
          live.push(d.backend.liveTensors())
        }
      }
      expect(d.s.batchSize).toBe(WIDTH)
      // The search did reorder: some step kept a beam's parent at another index, or twice.
      expect(parents.slice(1).some((p) => p.some((parent, i) => parent !== i))).toBe(true)
      const want = await (await reference(ort)).beam(prompt, WIDTH, STEPS)
      expect(want.gap).toBeGreaterThan(SCORE_TOL)
      expect(beams.map((b) => b.tokens)).toEqual(want.beams)
      for (const [i, b] of beams.entries())
        expect(Math.abs(b.score - (want.scores[i] as number))).toBeLessThan(SCORE_TOL)
      // One tensor per state leaf whatever the batch: select frees what it replaces.
      expect(live[0]).toBeGreaterThan(0)
      expect(new Set(live)).toEqual(new Set([live[0]]))
      d.s.dispose()
      expect(d.backend.liveTensors()).toBe(0)
    })

    it("prefix sharing: a prompt's cache computed once, forked with select([0, 0, 0, 0]), each row continuing differently equals its own search without a cache", async () => {
      const GREEDY = 10
      const prompt = tokens(7, 5)
      const suffixes = [tokens(3, 6), tokens(3, 7), tokens(3, 8), tokens(3, 9)]
      const d = await cachedDecoder(ort, kind, 1)
      await d.step([prompt])
      const live = d.backend.liveTensors()
      orThrow(d.s.select([0, 0, 0, 0]))
      expect(d.backend.liveTensors()).toBe(live)
      let logits = await d.step(suffixes)
      let n = 3
      const generated: number[][] = suffixes.map(() => [])
      const scores = suffixes.map(() => 0)
      for (let t = 0; t < GREEDY; t++) {
        for (const r of suffixes.keys()) {
          const lp = nextLogProbs(logits, n, r)
          const { token } = argmax(lp)
          generated[r]?.push(token)
          scores[r] = (scores[r] as number) + (lp[token] as number)
        }
        if (t < GREEDY - 1) logits = await d.step(generated.map((g) => [g.at(-1) as number]))
        n = 1
      }
      const ref = await reference(ort)
      const wanted = []
      for (const [r, suffix] of suffixes.entries()) {
        const want = await ref.greedy([...prompt, ...suffix], GREEDY)
        wanted.push(want.tokens)
        expect(want.gap).toBeGreaterThan(SCORE_TOL)
        expect(generated[r]).toEqual(want.tokens)
        expect(Math.abs((scores[r] as number) - want.score)).toBeLessThan(SCORE_TOL)
      }
      // The rows did continue differently.
      expect(new Set(wanted.map((w) => w.join())).size).toBeGreaterThan(1)
      d.s.dispose()
      expect(d.backend.liveTensors()).toBe(0)
    })

    it("speculative decoding: drafts accepted up to the first mismatch, the rest rewound, equals greedy search without a cache", async () => {
      const K = 4
      const WANT = 24
      const prompts = [tokens(6, 10), tokens(6, 11)]
      const rows = prompts.length
      // The draft: the target's first layer only (the same seed gives the same embedding, first
      // layer and head), a cheap model that agrees with the target often but not always.
      const target = await cachedDecoder(ort, kind, rows)
      const draft = await cachedDecoder(ort, kind, rows, tinyDecoderConfig({ layers: 1 }))
      // Both caches hold each sequence but its last token, which is pending.
      const seqs = prompts.map((p) => [...p])
      const lead = prompts.map((p) => p.slice(0, -1))
      await target.step(lead)
      await draft.step(lead)
      const logProbs: number[][] = prompts.map(() => [])
      const accepted: number[] = []
      let rewound = 0
      while (seqs.some((s, r) => s.length - (prompts[r] as number[]).length < WANT)) {
        // The draft proposes K tokens per row, one run each, from each row's pending token.
        const proposals: number[][] = prompts.map(() => [])
        let feed = seqs.map((s) => [s.at(-1) as number])
        for (let i = 0; i < K; i++) {
          const l = await draft.step(feed)
          feed = feed.map((_, r) => [argmax(nextLogProbs(l, 1, r)).token])
          feed.forEach((f, r) => proposals[r]?.push(f[0] as number))
        }
        // The target checks them in one run over [pending, d1 .. d(K-1)].
        const chunk = seqs.map((s, r) => [
          s.at(-1) as number,
          ...(proposals[r] as number[]).slice(0, K - 1),
        ])
        const l = await target.step(chunk)
        const drop = new Map<number, number[]>()
        for (let r = 0; r < rows; r++) {
          const proposal = proposals[r] as number[]
          let a = 0
          for (; a < K; a++) {
            const lp = nextLogProbs(l, K, r, a)
            const { token } = argmax(lp)
            ;(seqs[r] as number[]).push(token)
            ;(logProbs[r] as number[]).push(lp[token] as number)
            if (token !== proposal[a]) break // the target's token replaces the first wrong draft
          }
          accepted.push(Math.min(a, K))
          // Both caches took K tokens; those after the first mismatch are dropped.
          const n = Math.max(0, K - 1 - a)
          if (n > 0) drop.set(n, [...(drop.get(n) ?? []), r])
        }
        for (const [n, rs] of drop) {
          orThrow(target.s.rewind(rs, n))
          orThrow(draft.s.rewind(rs, n))
          rewound += n * rs.length
        }
      }
      // The drafts were sometimes all accepted, sometimes all rejected, sometimes in part.
      expect(accepted).toContain(0)
      expect(accepted).toContain(K)
      expect(accepted.some((a) => a > 0 && a < K)).toBe(true)
      expect(rewound).toBeGreaterThan(0)
      const ref = await reference(ort)
      for (const [r, prompt] of prompts.entries()) {
        const want = await ref.greedy(prompt, WANT)
        expect(want.gap).toBeGreaterThan(SCORE_TOL)
        expect((seqs[r] as number[]).slice(prompt.length, prompt.length + WANT)).toEqual(
          want.tokens,
        )
        const score = (logProbs[r] as number[]).slice(0, WANT).reduce((x, y) => x + y, 0)
        expect(Math.abs(score - want.score)).toBeLessThan(SCORE_TOL)
      }
      target.s.dispose()
      draft.s.dispose()
      expect(target.backend.liveTensors() + draft.backend.liveTensors()).toBe(0)
    })

    it("beams selecting a row out of range get a RowIndexError and the cache is unchanged", async () => {
      const d = await cachedDecoder(ort, kind, 1)
      await d.step([tokens(4, 12)])
      orThrow(d.s.select([0, 0, 0, 0]))
      const before = orThrow(await d.s.snapshot())
      expect(d.s.select([0, 4, 1, 2])).toMatchObject({
        _tag: "Left",
        left: { _tag: "RowIndexError", actual: 4 },
      })
      expect(d.s.batchSize).toBe(4)
      expect(orThrow(await d.s.snapshot())).toEqual(before)
      d.s.dispose()
    })
  })
})
