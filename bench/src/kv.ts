/**
 * KV caches on the CPU runtimes (onnxruntime-node, onnxruntime-web wasm), with a decoder built in
 * code (2 layers, 4 heads of 16, hidden 64, vocab 64; or a small one, below), batch 4, one token
 * per step:
 *
 * 1. bytes statesaver copies per token (`backend.bytesCopied()`) with a fixed-capacity cache,
 *    against the bytes a growing cache's model writes (its whole `present` cache);
 * 2. tokens/s of the fixed cache against the growing cache at context 64/256/1024, the fixed
 *    cache either sized to the context (`capacity = context + steps`) or one size for every
 *    context (`capacity = 1024 + steps`);
 * 3. a StatefulSession step with derived `attention_mask`/`position_ids` (and the block writes
 *    of a fixed cache) against a hand-written loop that builds the same inputs and feeds the
 *    same model.
 *
 * Every comparison runs both sides interleaved in one process; one process per runtime, and for
 * the derived inputs one per runtime, cache kind and context, each in several processes
 * (`STATESAVER_BENCH_KV_PROCESSES`, default 3) whose ratios' median is reported beside them.
 * `STATESAVER_BENCH_KV_CACHE=growing|fixed`, `STATESAVER_BENCH_KV_CONTEXT=64|256|1024` and
 * `STATESAVER_BENCH_RUNTIMES=node|web` run only those comparisons: many processes of one are the
 * way to its median where single processes differ by more than the target allows.
 * Each derived-inputs line also gives both sides' time per step outside the model's run (the
 * runs are timed): the hand-written loop's, then the session's. A round of the derived inputs
 * runs each side `STATESAVER_BENCH_REPEATS` times (default 8; see `REPEATS`); with
 * `STATESAVER_BENCH_GC=1` each comparison also prints what the collector and the kernel spent in
 * each side's runs (collections, system CPU time, page faults).
 */
import { orThrow } from "@statesaver/core"
import {
  type KvCacheOptions,
  type OrtBackend,
  type OrtTensor,
  type StatefulSession,
  createStatefulSession,
  ortBackend,
} from "@statesaver/onnxruntime"
import type { Runtime } from "../../packages/onnxruntime/test/helpers/harness.js"
import {
  fixedCacheDecoder,
  growingDecoder,
  tinyDecoderConfig,
} from "../../packages/onnxruntime/test/helpers/decoders.js"
import { REPEATS, cacheNames, interleave, perRuntime, startOver } from "./decoder-steps.js"
import { median, timedRuns } from "./harness.js"

const CONTEXTS = [64, 256, 1024] as const
const BATCH = 4
/** Tokens per timed round (the context goes from c to c + STEPS). */
const STEPS = 32
const ROUNDS = Number(process.env["STATESAVER_BENCH_ROUNDS"] ?? 15)
/** One fixed cache for every context: the longest context plus a round. */
const SHARED = 1024 + STEPS
/**
 * The decoder's sizes: `tiny` (the default, where the session's fixed cost per step shows most)
 * or `small` (`STATESAVER_BENCH_KV_MODEL=small`: 4 layers, 4 heads of 64, hidden 256, vocab 2048,
 * a step closer to a real small decoder's).
 */
const MODEL = process.env["STATESAVER_BENCH_KV_MODEL"] ?? "tiny"
if (MODEL !== "tiny" && MODEL !== "small")
  throw new Error(`STATESAVER_BENCH_KV_MODEL must be tiny or small, got ${MODEL}`)
const cfg = tinyDecoderConfig({
  ...(MODEL === "small"
    ? { vocab: 2048, hidden: 256, heads: 4, headDim: 64, layers: 4 }
    : { vocab: 64, hidden: 64, heads: 4, headDim: 16, layers: 2 }),
  maxPosition: SHARED,
  seed: 7,
})
const { heads: H, headDim: D, layers: L } = cfg
const { past: PAST, present: PRESENT } = cacheNames(L)

interface Models {
  readonly fixed: Awaited<ReturnType<Runtime["InferenceSession"]["create"]>>
  readonly growing: Awaited<ReturnType<Runtime["InferenceSession"]["create"]>>
}

const tokenIds = (ort: Runtime, n: number, seed: number): OrtTensor =>
  new ort.Tensor(
    "int64",
    BigInt64Array.from({ length: BATCH * n }, (_, i) =>
      BigInt((i * 7 + seed * 13 + 5) % cfg.vocab),
    ),
    [BATCH, n],
  )

/** A StatefulSession at `context` tokens (one prefill run) and a snapshot to return to it. */
async function prefilled(
  ort: Runtime,
  models: Models,
  cache: KvCacheOptions,
  context: number,
): Promise<{ s: StatefulSession<"logits">; backend: OrtBackend; at: Uint8Array }> {
  const backend = ortBackend({ ort }) as OrtBackend
  const session = cache.kind === "fixed" ? models.fixed : models.growing
  const s = orThrow(
    createStatefulSession({ session, backend, batchSize: BATCH, cache, outputs: ["logits"] }),
  ) as StatefulSession<"logits">
  orThrow(await s.run({ input_ids: tokenIds(ort, context, 1) })).logits.dispose()
  return { s, backend, at: orThrow(await s.snapshot()) }
}

/** One token per row through the session. */
const sessionStep = (ort: Runtime, s: StatefulSession<"logits">) => async (t: number) => {
  orThrow(await s.run({ input_ids: tokenIds(ort, 1, t) })).logits.dispose()
}

const all = Array.from({ length: BATCH }, (_, r) => r)

/** Bytes statesaver copies per token, fixed cache, and what a growing cache's model writes. */
async function bytesPerToken(ort: Runtime, models: Models): Promise<void> {
  console.log(
    `  bytes per token (batch ${BATCH}): statesaver's copies, fixed cache (backend.bytesCopied()) | what a growing cache's model writes (present.*)`,
  )
  for (const context of CONTEXTS) {
    const { s, backend } = await prefilled(
      ort,
      models,
      { kind: "fixed", capacity: SHARED },
      context,
    )
    const before = backend.bytesCopied()
    for (let t = 0; t < 8; t++) await sessionStep(ort, s)(t)
    const fixed = (backend.bytesCopied() - before) / 8
    s.dispose()
    const growing = 2 * L * BATCH * H * (context + 1) * D * 4
    console.log(
      `    context ${String(context).padStart(4)}: fixed ${String(fixed).padStart(6)} B/token   growing ${String(growing).padStart(8)} B/token (${(growing / fixed).toFixed(0)}x)`,
    )
  }
}

/** Tokens/s of the growing cache and of fixed caches, at each context. */
async function tokensPerSecond(ort: Runtime, models: Models): Promise<void> {
  console.log(
    `  tokens/s, batch ${BATCH}, median of ${ROUNDS} rounds of ${STEPS} tokens: growing | fixed, capacity context+${STEPS} | fixed, capacity ${SHARED}; (xN) = fixed/growing tokens/s, median of per-round ratios`,
  )
  for (const context of CONTEXTS) {
    const variants: KvCacheOptions[] = [
      { kind: "growing" },
      { kind: "fixed", capacity: context + STEPS },
      { kind: "fixed", capacity: SHARED },
    ]
    const made = []
    for (const cache of variants) made.push(await prefilled(ort, models, cache, context))
    const { us, ratio } = await interleave(
      made.map(({ s, at }) => ({
        step: sessionStep(ort, s),
        rewind: () => void orThrow(s.restore(at)),
      })),
      STEPS,
      ROUNDS,
    )
    // Tokens/s ratios: the growing cache's time over the fixed cache's.
    const [g, tight, shared] = us.map((u) => ((BATCH * 1e6) / u).toFixed(0).padStart(6))
    const speedup = (i: number) => (1 / (ratio[i] as number)).toFixed(2)
    console.log(
      `    context ${String(context).padStart(4)}: growing ${g}   fixed ${tight} (x${speedup(1)})   fixed ${SHARED} ${shared} (x${speedup(2)})`,
    )
    for (const { s } of made) s.dispose()
  }
}

/**
 * The hand-written fixed-cache loop: cache tensors of `capacity` positions (copies of `start`,
 * the caches a session prefilled, when given), the mask and positions built from each row's
 * length, the new keys and values copied in at that length.
 */
export function handFixed(
  ort: Runtime,
  session: Models["fixed"],
  capacity: number,
  context: number,
  start?: readonly Float32Array[],
) {
  const caches = PAST.map(
    (_, i) =>
      new ort.Tensor("float32", start?.[i]?.slice() ?? new Float32Array(BATCH * H * capacity * D), [
        BATCH,
        H,
        capacity,
        D,
      ]),
  )
  const lengths = new Int32Array(BATCH)
  const step = async (t: number) => {
    const w = capacity + 1
    const mask = new BigInt64Array(BATCH * w)
    const positions = new BigInt64Array(BATCH)
    for (let r = 0; r < BATCH; r++) {
      const len = lengths[r] as number
      mask.fill(1n, r * w, r * w + len)
      mask[r * w + capacity] = 1n
      positions[r] = BigInt(len)
    }
    const feeds: Record<string, OrtTensor> = {
      input_ids: tokenIds(ort, 1, t),
      attention_mask: new ort.Tensor("int64", mask, [BATCH, w]),
      position_ids: new ort.Tensor("int64", positions, [BATCH, 1]),
    }
    PAST.forEach((name, i) => (feeds[name] = caches[i] as OrtTensor))
    const out = await session.run(feeds)
    PRESENT.forEach((name, i) => {
      const block = (out[name] as OrtTensor).data as Float32Array
      const cache = (caches[i] as OrtTensor).data as Float32Array
      for (let r = 0; r < BATCH; r++)
        for (let h = 0; h < H; h++) {
          const p = r * H + h
          cache.set(block.subarray(p * D, (p + 1) * D), (p * capacity + (lengths[r] as number)) * D)
        }
    })
    for (const v of Object.values(out)) v.dispose()
    for (let r = 0; r < BATCH; r++) lengths[r] = (lengths[r] as number) + 1
  }
  return { step, rewind: () => lengths.fill(context) }
}

/**
 * The hand-written growing-cache loop: presents fed back, a mask of ones, positions = past. Each
 * round starts from fresh copies of the prefilled cache, as the session is put back to it
 * (`startOver`): the same untimed copies, and the same garbage for the timed steps' collections.
 */
function handGrowing(ort: Runtime, session: Models["growing"], start: readonly OrtTensor[]) {
  const copies = (): OrtTensor[] =>
    start.map((t) => new ort.Tensor("float32", (t.data as Float32Array).slice(), t.dims))
  let past = copies()
  const context = start[0]?.dims[2] as number
  let length = context
  const step = async (t: number) => {
    const w = length + 1
    const feeds: Record<string, OrtTensor> = {
      input_ids: tokenIds(ort, 1, t),
      attention_mask: new ort.Tensor("int64", new BigInt64Array(BATCH * w).fill(1n), [BATCH, w]),
      position_ids: new ort.Tensor("int64", new BigInt64Array(BATCH).fill(BigInt(length)), [
        BATCH,
        1,
      ]),
    }
    PAST.forEach((name, i) => (feeds[name] = past[i] as OrtTensor))
    const out = await session.run(feeds)
    const next = PRESENT.map((name) => out[name] as OrtTensor)
    for (const p of past) p.dispose()
    past = next
    ;(out["logits"] as OrtTensor).dispose()
    length++
  }
  const rewind = () => {
    for (const p of past) p.dispose()
    past = copies()
    length = context
  }
  return { step, rewind }
}

/**
 * The derived-inputs comparisons to run: the cache kinds and contexts that
 * `STATESAVER_BENCH_KV_CACHE` and `STATESAVER_BENCH_KV_CONTEXT` pick, each of them when unset.
 * Throws an error naming the variable for a value that is neither.
 */
function derivedComparisons(): {
  kinds: KvCacheOptions["kind"][]
  contexts: (typeof CONTEXTS)[number][]
} {
  const only = process.env["STATESAVER_BENCH_KV_CACHE"]
  if (only !== undefined && only !== "growing" && only !== "fixed")
    throw new Error(`STATESAVER_BENCH_KV_CACHE must be growing or fixed, got ${only}`)
  const kinds = (only === undefined ? ["growing", "fixed"] : [only]) as KvCacheOptions["kind"][]
  const at = process.env["STATESAVER_BENCH_KV_CONTEXT"]
  const contexts = at === undefined ? [...CONTEXTS] : CONTEXTS.filter((c) => String(c) === at)
  if (contexts.length === 0)
    throw new Error(`STATESAVER_BENCH_KV_CONTEXT must be one of ${CONTEXTS.join(", ")}, got ${at}`)
  return { kinds, contexts }
}

/** A session step with derived inputs against the hand-written loop, each cache kind. */
async function derivedOverhead(ort: Runtime, models: Models): Promise<void> {
  if (process.env["STATESAVER_BENCH_KV_HEADER"] !== "0") {
    console.log(
      `  StatefulSession step (derived inputs) vs hand-written loop (same inputs, same model), batch ${BATCH}: ratio = ours / hand, target <= 1.03; A/A = a second hand-written loop / the first, in the same rounds (the noise floor)`,
    )
  }
  // One comparison per process when `main` runs the suite (STATESAVER_BENCH_KV_CACHE and
  // STATESAVER_BENCH_KV_CONTEXT pick it): sessions measured before in the same process (another
  // cache kind, another context) leave the sessions' shared code and the heap in a state that
  // slows the next session's steps and not the hand-written loops'.
  const { kinds, contexts } = derivedComparisons()
  for (const context of contexts) {
    const capacity = context + STEPS
    const line: string[] = []
    for (const kind of kinds) {
      const cache: KvCacheOptions = kind === "fixed" ? { kind, capacity } : { kind }
      const { s } = await prefilled(ort, models, cache, context)
      let hand: { step: (t: number) => Promise<void>; rewind: () => void }
      // A second, identical hand-written loop in the same rounds: its ratio to the first is the
      // noise floor of this comparison on this machine (1 when timing were exact).
      let again: typeof hand
      let start: OrtTensor[] = []
      if (cache.kind === "fixed") {
        // The same prefilled cache as the session's, copied: the same inputs.
        const prefill = PAST.map((name) => s.state()[name]?.data as Float32Array)
        hand = handFixed(ort, models.fixed, capacity, context, prefill)
        again = handFixed(ort, models.fixed, capacity, context, prefill)
      } else {
        // The same prefilled cache, as the hand-written loop's own tensors.
        start = PAST.map((name) => {
          const t = s.state()[name] as OrtTensor
          return new ort.Tensor("float32", (t.data as Float32Array).slice(), t.dims)
        })
        hand = handGrowing(ort, models.growing, start)
        again = handGrowing(ort, models.growing, start)
      }
      const ours = {
        step: sessionStep(ort, s),
        rewind:
          cache.kind === "fixed"
            ? () => {
                const held = (s.state()["cache_length"]?.data as Int32Array)[0] as number
                orThrow(s.rewind(all, held - context))
              }
            : startOver(ort, s),
      }
      const { us, ratio, own, spent } = await interleave(
        [hand, ours, again],
        STEPS,
        ROUNDS,
        REPEATS,
      )
      if (process.env["STATESAVER_BENCH_GC"] === "1") {
        const per = (f: (g: (typeof spent)[number]) => string) => spent.map(f).join(" / ")
        console.log(
          `${SPENT} collections ${per((g) => g.us.toFixed(1))} µs (${per((g) => g.major.toFixed(2))} major, ${per((g) => g.minor.toFixed(2))} minor per ${STEPS} steps); system CPU ${per((g) => g.sys.toFixed(1))} µs; ${per((g) => g.faults.toFixed(1))} page faults`,
        )
      }
      const [h, o] = us.map((u) => u.toFixed(0).padStart(5))
      const [oh, oo] = own.map((u) => u.toFixed(1))
      line.push(
        `${cache.kind} ${h} / ${o} µs, ratio ${(ratio[1] as number).toFixed(3)} (A/A ${(ratio[2] as number).toFixed(3)}); outside the model's run ${oh} / ${oo} µs`,
      )
      s.dispose()
      hand.rewind()
      again.rewind()
      for (const t of start) t.dispose()
    }
    console.log(`    context ${String(context).padStart(4)}: ${line.join("   ")}`)
  }
}

async function bench(label: string, ort: Runtime, provider: string): Promise<void> {
  const options = { executionProviders: [provider], intraOpNumThreads: 1, interOpNumThreads: 1 }
  // The models' runs are timed: a step's time outside them is its own work.
  const models: Models = {
    fixed: timedRuns(await ort.InferenceSession.create(fixedCacheDecoder(cfg), options)),
    growing: timedRuns(await ort.InferenceSession.create(growingDecoder(cfg), options)),
  }
  if (process.env["STATESAVER_BENCH_LABEL"] !== "0") console.log(`${label}`)
  const parts = (process.env["STATESAVER_BENCH_KV"] ?? "bytes,tps,derived").split(",")
  if (parts.includes("bytes")) await bytesPerToken(ort, models)
  if (parts.includes("tps")) await tokensPerSecond(ort, models)
  if (parts.includes("derived")) await derivedOverhead(ort, models)
}

/**
 * Runs the KV-cache benchmarks, one child process per runtime; the derived-inputs comparison in
 * one child per runtime, cache kind and context.
 */
export async function main(): Promise<void> {
  const given = (process.env["STATESAVER_BENCH_KV"] ?? "bytes,tps,derived").split(",")
  const rest = given.filter((p) => p !== "derived").join(",")
  const parts: Record<string, string>[] = rest === "" ? [] : [{ STATESAVER_BENCH_KV: rest }]
  if (given.includes("derived")) {
    // Only the comparisons STATESAVER_BENCH_KV_CACHE and STATESAVER_BENCH_KV_CONTEXT pick, when set.
    const { kinds, contexts } = derivedComparisons()
    for (const context of contexts) {
      for (const kind of kinds) {
        parts.push({
          STATESAVER_BENCH_KV: "derived",
          STATESAVER_BENCH_KV_CACHE: kind,
          STATESAVER_BENCH_KV_CONTEXT: String(context),
          // The runtime's label and the comparison's header once, from the first process.
          ...(parts.length > 0 ? { STATESAVER_BENCH_LABEL: "0" } : {}),
          ...(parts.length > (rest === "" ? 0 : 1) ? { STATESAVER_BENCH_KV_HEADER: "0" } : {}),
        })
      }
    }
  }
  const processes = Number(process.env["STATESAVER_BENCH_KV_PROCESSES"] ?? 3)
  if (!Number.isSafeInteger(processes) || processes < 1)
    throw new Error(`STATESAVER_BENCH_KV_PROCESSES must be a positive integer, got ${processes}`)
  await perRuntime(
    import.meta.url,
    `KV caches: decoder ${L} layers x ${H} heads x ${D}, hidden ${cfg.hidden}, vocab ${cfg.vocab}; batch ${BATCH}, 1 token per step, 1 thread`,
    bench,
    parts,
    {
      processes,
      applies: (part) => part["STATESAVER_BENCH_KV"] === "derived",
      combine: combineProcesses,
    },
  )
}

/** The start of the line `STATESAVER_BENCH_GC=1` prints before a comparison's. */
const SPENT = "      hand / session / second hand, per step:"

/** A derived-inputs comparison's line: context, cache kind, ratio and A/A. */
const COMPARISON = /context\s+(\d+): (\w+)\s+\d+ \/\s+\d+ µs, ratio ([\d.]+) \(A\/A ([\d.]+)\)/

/**
 * The output of a comparison's processes: the first's whole (with the runtime's label and the
 * header, when it prints them), each other's comparison line, then the median of their ratios.
 */
function combineProcesses(outputs: readonly string[]): string {
  const lines = outputs.flatMap((out, i) =>
    out
      .split("\n")
      .filter((l) => l !== "" && (i === 0 || COMPARISON.test(l) || l.startsWith(SPENT))),
  )
  const found = lines.flatMap((l) => {
    const m = COMPARISON.exec(l)
    return m === null ? [] : [m]
  })
  const first = found[0]
  if (first === undefined) return lines.map((l) => `${l}\n`).join("")
  const ratio = median(found.map((m) => Number(m[3])))
  const aa = median(found.map((m) => Number(m[4])))
  const summary = `    context ${(first[1] as string).padStart(4)}: ${first[2]}, median of ${found.length} processes: ratio ${ratio.toFixed(3)} (A/A ${aa.toFixed(3)})`
  return [...lines, summary].map((l) => `${l}\n`).join("")
}

if (import.meta.url === `file://${process.argv[1]}`) await main()
