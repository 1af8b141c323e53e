// The hand-set decoders of `pnpm demo` (helpers/hand-decoders.ts): greedy decoding through a
// StatefulSession with a KV cache gives the sequence their rule predicts (the counter counts up,
// the copier repeats its last `period` tokens), and the tokens and logits of the same weights
// run without any cache on each whole sequence.
import { orThrow } from "@statesaver/core"
import * as ortNode from "onnxruntime-node"
import * as ortWeb from "onnxruntime-web"
import { describe, expect, it } from "vitest"
import {
  type KvCacheOptions,
  type StatefulSession,
  createStatefulSession,
  ortBackend,
} from "../src/index.js"
import { oracleLogits } from "./helpers/decoders.js"
import type { Runtime } from "./helpers/harness.js"
import {
  type HandDecoderConfig,
  type HandDecoderMode,
  copierConfig,
  counterConfig,
  handDecoder,
  ruleContinuation,
} from "./helpers/hand-decoders.js"

ortWeb.env.wasm.numThreads = 1

const STEPS = 14
const LOGIT_TOL = 1e-5

const models: readonly [string, HandDecoderConfig, number[][]][] = [
  [
    "counter",
    counterConfig(),
    [
      [3, 1, 4],
      [27, 28, 29],
      [9, 9, 9],
    ],
  ],
  [
    "copier (period 5)",
    copierConfig(5),
    [
      [3, 1, 4, 1, 5],
      [2, 7, 1, 8, 2],
      [31, 0, 30, 0, 29],
    ],
  ],
]
const caches: readonly [HandDecoderMode, KvCacheOptions][] = [
  ["fixed", { kind: "fixed", capacity: 32 }],
  ["growing", { kind: "growing" }],
]
const runtimes: readonly [string, Runtime][] = [
  ["onnxruntime-node", ortNode as unknown as Runtime],
  ["onnxruntime-web wasm", ortWeb as unknown as Runtime],
]

const argmax = (xs: Float32Array): number =>
  xs.reduce((best, x, i) => (x > (xs[best] as number) ? i : best), 0)

/** Runs one chunk of `n` tokens per row; returns each row's logits after its last token. */
async function feed(
  ort: Runtime,
  dec: StatefulSession<"logits">,
  chunk: readonly (readonly number[])[],
): Promise<Float32Array[]> {
  const n = chunk[0]?.length ?? 0
  const ids = new ort.Tensor("int64", BigInt64Array.from(chunk.flat(), BigInt), [chunk.length, n])
  const { logits } = orThrow(await dec.run({ input_ids: ids }))
  const V = logits.dims[2] as number
  const data = logits.data as Float32Array
  const rows = chunk.map((_, r) => data.slice(((r + 1) * n - 1) * V, (r + 1) * n * V))
  logits.dispose()
  return rows
}

/** Greedy decoding of `steps` tokens per row, and each step's logits. */
async function greedy(
  ort: Runtime,
  dec: StatefulSession<"logits">,
  prompts: readonly (readonly number[])[],
  steps: number,
): Promise<{ tokens: number[][]; logits: Float32Array[][] }> {
  const tokens: number[][] = prompts.map(() => [])
  const logits: Float32Array[][] = prompts.map(() => [])
  let last = await feed(ort, dec, prompts)
  for (let t = 0; t < steps; t++) {
    last.forEach((l, r) => {
      tokens[r]?.push(argmax(l))
      logits[r]?.push(l)
    })
    if (t < steps - 1)
      last = await feed(
        ort,
        dec,
        tokens.map((row) => [row.at(-1) as number]),
      )
  }
  return { tokens, logits }
}

describe.each(runtimes)("hand-set decoders on %s", (_, ort) => {
  describe.each(models)("%s", (_, cfg, prompts) => {
    it.each(caches)(
      "greedy through a %s cache gives the rule's tokens and the no-cache logits",
      async (mode, cache) => {
        const session = await ort.InferenceSession.create(handDecoder(cfg, mode))
        const oracle = await ort.InferenceSession.create(handDecoder(cfg, "none"))
        const backend = ortBackend({ ort })
        using dec = orThrow(
          createStatefulSession({
            session,
            backend,
            batchSize: prompts.length,
            cache,
            outputs: ["logits"],
          }),
        )
        const out = await greedy(ort, dec, prompts, STEPS)
        for (const [r, prompt] of prompts.entries()) {
          const rule = ruleContinuation(cfg, prompt, STEPS)
          expect(out.tokens[r]).toEqual(rule)
          // The same weights without a cache, on the whole sequence: its logits at each
          // generated position, and its greedy choices.
          const seq = [...prompt, ...rule]
          const [whole] = await oracleLogits(ort, oracle, [seq.slice(0, -1)])
          const V = cfg.vocab
          for (let t = 0; t < STEPS; t++) {
            const at = prompt.length - 1 + t
            const ref = (whole as Float32Array).subarray(at * V, (at + 1) * V)
            expect(argmax(ref)).toBe(rule[t])
            const got = out.logits[r]?.[t] as Float32Array
            const worst = got.reduce((m, x, v) => Math.max(m, Math.abs(x - (ref[v] as number))), 0)
            expect(worst).toBeLessThanOrEqual(LOGIT_TOL)
          }
        }
        // Confident, not merely right: the predicted token leads every other by ~confidence.
        const first = out.logits[0]?.[0] as Float32Array
        const sorted = Array.from(first).sort((a, b) => b - a)
        expect((sorted[0] as number) - (sorted[1] as number)).toBeGreaterThan(cfg.confidence - 0.01)
      },
    )
  })

  it("the copier reads its prompt from the cache: after select, rows repeat each other's prompts", async () => {
    const cfg = copierConfig(4)
    const session = await ort.InferenceSession.create(handDecoder(cfg, "fixed"))
    using dec = orThrow(
      createStatefulSession({
        session,
        backend: ortBackend({ ort }),
        batchSize: 2,
        cache: { kind: "fixed", capacity: 16 },
        outputs: ["logits"],
      }),
    )
    const a = [1, 2, 3, 4]
    const b = [20, 21, 22, 23]
    await feed(ort, dec, [a, b])
    // Swap the rows' caches, then feed each row the other's next token: each row continues the
    // prompt its cache holds, not the one its input came from.
    orThrow(dec.select([1, 0]))
    const out = await greedy(ort, dec, [[b[0] as number], [a[0] as number]], 7)
    expect(out.tokens).toEqual([
      ruleContinuation(cfg, [...b, b[0] as number], 7),
      ruleContinuation(cfg, [...a, a[0] as number], 7),
    ])
    expect(out.tokens[0]).toEqual([21, 22, 23, 20, 21, 22, 23])
  })
})
