/**
 * Decoders on the CPU runtimes (onnxruntime-node, onnxruntime-web wasm), with the decoder of
 * `kv.ts` (2 layers, 4 heads of 16, hidden 64, vocab 64, real attention), one token per step:
 *
 * 1. continuous batching: 16 conversations at different lengths (16 to 226 tokens) on a
 *    fixed-capacity cache, through one `StreamingSession` run per step, against 16
 *    `StatefulSession`s (batch 1) run one after another, and against a hand-batched ceiling (one
 *    `InferenceSession.run` per step over the 16 rows, masks, positions and block writes written
 *    by hand): tokens/s and the ratio to the ceiling; then conversations admitted in the
 *    reverse of the order each step lists them (rows moved once), and the same on a backend
 *    without `reorder` (a copy of every cache per step);
 * 2. a beam-search step (beam 4, context 256): the beams' caches reordered with `select`, then
 *    one token per beam, against the common hand-written way (the cache's data reordered on the
 *    host into new tensors, then the same run), on a growing and on a fixed-capacity cache.
 *
 * Each comparison runs its sides interleaved in one process, every round starting from the same
 * state (restored or rewound outside the timing); ratios are medians of per-round ratios. The
 * continuous batching also prints each side's time per step outside the model's run (the runs
 * are timed): the work a library adds to the model's, which moves far less from run to run than
 * the model's own time on a shared machine.
 */
import { orThrow } from "@statesaver/core"
import {
  type KvCacheOptions,
  type OrtBackend,
  type OrtTensor,
  type StatefulSession,
  type StreamingSession,
  createStatefulSession,
  createStreamingSession,
  ortBackend,
} from "@statesaver/onnxruntime"
import type { Runtime } from "../../packages/onnxruntime/test/helpers/harness.js"
import {
  fixedCacheDecoder,
  growingDecoder,
  tinyDecoderConfig,
} from "../../packages/onnxruntime/test/helpers/decoders.js"
import { compareSync, timedRuns } from "./harness.js"
import { cacheNames, interleave, perRuntime, type Side, startOver } from "./decoder-steps.js"

/** Tokens per timed round. */
const STEPS = 32
const ROUNDS = Number(process.env["STATESAVER_BENCH_ROUNDS"] ?? 15)
/**
 * Rounds of the continuous-batching comparisons: more than the beam step's, for medians that
 * move less from run to run (each round is a few tens of milliseconds).
 */
const BATCHING_ROUNDS = Number(process.env["STATESAVER_BENCH_ROUNDS"] ?? 31)
const CONTEXT = 256
const CAPACITY = CONTEXT + STEPS
const CHATS = 16
const BEAM = 4
/** Conversation i holds 16 + 14 i tokens when a round starts. */
const START = Array.from({ length: CHATS }, (_, i) => 16 + 14 * i)
const cfg = tinyDecoderConfig({
  vocab: 64,
  hidden: 64,
  heads: 4,
  headDim: 16,
  layers: 2,
  maxPosition: CAPACITY,
  seed: 7,
})
const { heads: H, headDim: D, layers: L, vocab: V } = cfg
const { past: PAST, present: PRESENT } = cacheNames(L)

type Session = Awaited<ReturnType<Runtime["InferenceSession"]["create"]>>

/** Token of row `row` at step `t`. */
const token = (row: number, t: number): bigint => BigInt((row * 7 + t * 13 + 5) % V)
const ids = (ort: Runtime, rows: number, t: number): OrtTensor =>
  new ort.Tensor(
    "int64",
    BigInt64Array.from({ length: rows }, (_, r) => token(r, t)),
    [rows, 1],
  )
const prompt = (ort: Runtime, n: number, seed: number): OrtTensor =>
  new ort.Tensor(
    "int64",
    BigInt64Array.from({ length: n }, (_, i) => BigInt((i * 5 + seed * 11 + 3) % V)),
    [1, n],
  )

/**
 * The hand-written fixed-cache loop over `rows` rows: cache tensors of CAPACITY positions, the
 * mask and positions built from each row's length, the new keys and values copied in at that
 * length. `reorder(t)`, if given, is the beam parents of step `t`: the cache's rows and lengths
 * are gathered on the host into new arrays before the run.
 */
export function handFixed(
  ort: Runtime,
  session: Session,
  rows: number,
  fill: (leaf: number) => Float32Array,
  start: readonly number[],
  reorder?: (t: number) => readonly number[],
) {
  const size = rows * H * CAPACITY * D
  const initial = PAST.map((_, i) => fill(i))
  let caches = initial.map((d) => d.slice())
  let lengths = Int32Array.from(start)
  const rowSize = H * CAPACITY * D
  const w = CAPACITY + 1
  let last: Float32Array = new Float32Array(0)
  const step = async (t: number) => {
    if (reorder !== undefined) {
      const parents = reorder(t)
      caches = caches.map((old) => {
        const next = new Float32Array(size)
        parents.forEach((p, r) =>
          next.set(old.subarray(p * rowSize, (p + 1) * rowSize), r * rowSize),
        )
        return next
      })
      lengths = Int32Array.from(parents, (p) => lengths[p] as number)
    }
    const mask = new BigInt64Array(rows * w)
    const positions = new BigInt64Array(rows)
    for (let r = 0; r < rows; r++) {
      const len = lengths[r] as number
      mask.fill(1n, r * w, r * w + len)
      mask[r * w + CAPACITY] = 1n
      positions[r] = BigInt(len)
    }
    const feeds: Record<string, OrtTensor> = {
      input_ids: ids(ort, rows, t),
      attention_mask: new ort.Tensor("int64", mask, [rows, w]),
      position_ids: new ort.Tensor("int64", positions, [rows, 1]),
    }
    PAST.forEach(
      (name, i) =>
        (feeds[name] = new ort.Tensor("float32", caches[i] as Float32Array, [
          rows,
          H,
          CAPACITY,
          D,
        ])),
    )
    const out = await session.run(feeds)
    PRESENT.forEach((name, i) => {
      const block = (out[name] as OrtTensor).data as Float32Array
      const cache = caches[i] as Float32Array
      for (let r = 0; r < rows; r++)
        for (let h = 0; h < H; h++) {
          const p = r * H + h
          cache.set(block.subarray(p * D, (p + 1) * D), (p * CAPACITY + (lengths[r] as number)) * D)
        }
    })
    last = (out["logits"] as OrtTensor).data as Float32Array
    for (const v of Object.values(out)) v.dispose()
    for (let r = 0; r < rows; r++) lengths[r] = (lengths[r] as number) + 1
  }
  return {
    step,
    rewind: () => {
      // With a reorder the cache's rows move: start again from copies of the first caches.
      // Without, the round's positions are dropped (masked, overwritten next round).
      if (reorder !== undefined) caches = initial.map((d) => d.slice())
      lengths = Int32Array.from(start)
    },
    logits: () => last,
  }
}

/** Largest difference between two logits arrays. */
const maxDiff = (a: Float32Array, b: Float32Array): number =>
  a.length !== b.length
    ? Infinity
    : a.reduce((m, x, i) => Math.max(m, Math.abs(x - (b[i] as number))), 0)

/** 16 conversations: one StreamingSession run per step, 16 StatefulSessions, the hand ceiling. */
async function continuousBatching(ort: Runtime, fixed: Session): Promise<void> {
  const cache: KvCacheOptions = { kind: "fixed", capacity: CAPACITY }
  const keys = START.map((_, i) => `chat-${i}`)
  // One by one: a StatefulSession of batch 1 per conversation, prefilled with its prompt.
  const alone: { s: StatefulSession<"logits">; backend: OrtBackend }[] = []
  for (const [i, n] of START.entries()) {
    const backend = ortBackend({ ort }) as OrtBackend
    const s = orThrow(
      createStatefulSession({
        session: fixed,
        backend,
        batchSize: 1,
        cache,
        outputs: ["logits"],
      }),
    ) as StatefulSession<"logits">
    orThrow(await s.run({ input_ids: prompt(ort, n, i) })).logits.dispose()
    alone.push({ s, backend })
  }
  // Continuous batching: every conversation in one StreamingSession, each prefilled alone (in
  // the order `admit` lists them), on `backend`.
  const streaming = async (backend: OrtBackend, admit: readonly number[]) => {
    const s = orThrow(
      createStreamingSession({
        session: fixed,
        ort,
        backend,
        capacity: CHATS,
        cache,
        outputs: ["logits"],
      }),
    ) as StreamingSession<"logits">
    for (const i of admit)
      for (const out of orThrow(
        await s.run([
          { key: keys[i] as string, feeds: { input_ids: prompt(ort, START[i] as number, i) } },
        ]),
      ).values())
        out.logits.dispose()
    return s
  }
  const inOrder = keys.map((_, i) => i)
  const chatsBackend = ortBackend({ ort }) as OrtBackend
  const chats = await streaming(chatsBackend, inOrder)

  let aloneLogits: Float32Array[] = []
  // Every side starts a round by dropping the positions its last round added (the lengths, as a
  // fixed cache's `rewind` does; the keys stay, masked, and are overwritten): restoring snapshots
  // instead made copies of every cache each round, whose collection fell into the timed steps.
  let aloneSteps = 0
  const oneByOne: Side = {
    rewind: () => {
      for (const { s } of alone) orThrow(s.rewind([0], aloneSteps))
      aloneSteps = 0
    },
    step: async (t) => {
      aloneSteps++
      aloneLogits = []
      for (const [i, { s }] of alone.entries()) {
        const out = orThrow(
          await s.run({
            input_ids: new ort.Tensor("int64", BigInt64Array.of(token(i, t)), [1, 1]),
          }),
        )
        aloneLogits.push(out.logits.data as Float32Array)
        out.logits.dispose()
      }
    },
  }
  let batchedLogits: Float32Array[] = []
  /** `StreamingSession.run` of every conversation per step, in key order. */
  const runSide = (s: StreamingSession<"logits">) => {
    let steps = 0
    const side: Side = {
      rewind: () => {
        orThrow(s.rewind(keys, steps))
        steps = 0
      },
      step: async (t) => {
        steps++
        const outs = orThrow(
          await s.run(
            keys.map((key, i) => ({
              key,
              feeds: {
                input_ids: new ort.Tensor("int64", BigInt64Array.of(token(i, t)), [1, 1]),
              },
            })),
          ),
        )
        batchedLogits = []
        for (const out of outs.values()) {
          batchedLogits.push(out.logits.data as Float32Array)
          out.logits.dispose()
        }
      },
    }
    return { side, count: () => steps++ }
  }
  const run = runSide(chats)
  const batched = run.side
  // The same session fed as the ceiling is: the tokens of every conversation as one tensor, the
  // logits of every conversation as one tensor (`runBatch`).
  let batchLogits: Float32Array = new Float32Array(0)
  const wholeBatch: Side = {
    rewind: batched.rewind,
    step: async (t) => {
      run.count()
      const { logits } = orThrow(await chats.runBatch(keys, { input_ids: ids(ort, CHATS, t) }))
      batchLogits = logits.data as Float32Array
      logits.dispose()
    },
  }
  // The ceiling starts from the same caches, copied out of the one-by-one sessions.
  const rowSize = H * CAPACITY * D
  const handBatched = () =>
    handFixed(
      ort,
      fixed,
      CHATS,
      (leaf) => {
        const data = new Float32Array(CHATS * rowSize)
        alone.forEach(({ s }, r) =>
          data.set(s.state()[PAST[leaf] as string]?.data as Float32Array, r * rowSize),
        )
        return data
      },
      START,
    )
  const hand = handBatched()
  // A second, identical ceiling in the same rounds: its ratio to the first is the noise floor.
  const again = handBatched()

  // The three sides compute the same logits (checked on a first step from the start); bytes
  // statesaver copies in that step.
  const copied = () => [
    chatsBackend.bytesCopied(),
    alone.reduce((sum, { backend }) => sum + backend.bytesCopied(), 0),
  ]
  const copies: number[] = []
  for (const side of [hand, oneByOne, batched, wholeBatch]) {
    side.rewind()
    const before = copied()
    await side.step(0)
    copies.push(...copied().map((x, i) => x - (before[i] as number)))
  }
  const streamingBytes = copies[4] as number
  const aloneBytes = copies[3] as number
  const ceiling = hand.logits()
  const row = (r: number) => ceiling.subarray(r * V, (r + 1) * V)
  const diff = Math.max(
    ...keys.map((_, r) =>
      Math.max(
        maxDiff(row(r), aloneLogits[r] as Float32Array),
        maxDiff(row(r), batchedLogits[r] as Float32Array),
        maxDiff(row(r), batchLogits.subarray(r * V, (r + 1) * V)),
      ),
    ),
  )

  // Each side is compared with the ceiling in rounds of its own, the two interleaved: 16 runs of
  // batch 1 per step leave other garbage and other caches behind than a batched step does.
  const pairs = [
    await interleave([hand, batched, again], STEPS, BATCHING_ROUNDS),
    await interleave([hand, oneByOne], STEPS, BATCHING_ROUNDS),
    await interleave([hand, wholeBatch, again], STEPS, BATCHING_ROUNDS),
  ]
  // Conversations that joined in the reverse of the order each step lists them (as after
  // conversations join and leave): their rows are not side by side in key order. The store moves
  // them once; a backend without `reorder` (as every backend before the move) copies each step.
  const reversed = inOrder.slice().reverse()
  const movedBackend = ortBackend({ ort }) as OrtBackend
  const moved = await streaming(movedBackend, reversed)
  const { reorder: _, ...fixedRows } = ortBackend({ ort }) as OrtBackend
  const copying = await streaming(fixedRows as OrtBackend, reversed)
  const steadyBytes = async (side: Side, backend: OrtBackend) => {
    side.rewind()
    await side.step(0)
    const before = backend.bytesCopied()
    await side.step(1)
    return backend.bytesCopied() - before
  }
  const movedRun = runSide(moved).side
  const copyingRun = runSide(copying).side
  const movedBytes = await steadyBytes(movedRun, movedBackend)
  const copyingBytes = await steadyBytes(copyingRun, fixedRows as OrtBackend)
  const out = await interleave([hand, movedRun, copyingRun], STEPS, BATCHING_ROUNDS)
  const floor = (1 / (pairs[0]?.ratio[2] as number)).toFixed(3)
  const floor2 = (1 / (pairs[2]?.ratio[2] as number)).toFixed(3)
  const us = [pairs[0]?.us[0], pairs[0]?.us[1], pairs[1]?.us[1], pairs[2]?.us[1]] as number[]
  const tps = us.map((u) => ((CHATS * 1e6) / u).toFixed(0).padStart(6))
  const toCeiling = (i: number) => (1 / (pairs[i - 1]?.ratio[1] as number)).toFixed(3)
  console.log(
    `  continuous batching, ${CHATS} conversations (${START[0]}..${START.at(-1)} tokens, fixed cache of ${CAPACITY}), tokens/s, median of ${BATCHING_ROUNDS} rounds of ${STEPS} steps; (xN) = tokens/s / the ceiling's, median of per-round ratios, target >= 0.95`,
  )
  console.log(
    `    hand-batched ceiling ${tps[0]}   StreamingSession.run ${tps[1]} (x${toCeiling(1)})   ${CHATS} StatefulSessions one by one ${tps[2]} (x${toCeiling(2)})   A/A: a second ceiling x${floor}   [logits agree within ${diff.toExponential(1)}]`,
  )
  console.log(
    `    StreamingSession.runBatch (tokens in, logits out as one tensor each) ${tps[3]} (x${toCeiling(3)})   A/A x${floor2}`,
  )
  // A step's own work (outside the model's run), each side against the ceiling's in its rounds.
  const own = (p: { own: number[] } | undefined, i: number) => (p?.own[i] as number).toFixed(1)
  console.log(
    `    µs per step outside the model's run (median): ceiling ${own(pairs[0], 0)} and ${own(pairs[2], 0)}, StreamingSession.run ${own(pairs[0], 1)}, runBatch ${own(pairs[2], 1)}, the second ceiling ${own(pairs[0], 2)}; conversations admitted in reverse order: ceiling ${own(out, 0)}, StreamingSession.run ${own(out, 1)}`,
  )
  console.log(
    `    bytes statesaver copies per step: StreamingSession ${streamingBytes} B, one by one ${aloneBytes} B; the ceiling writes ${CHATS * PAST.length * H * D * 4} B (the new positions)`,
  )
  console.log(
    `    conversations admitted in reverse order: StreamingSession.run ${((CHATS * 1e6) / (out.us[1] as number)).toFixed(0).padStart(6)} (x${(1 / (out.ratio[1] as number)).toFixed(3)}), ${movedBytes} B copied per step after one move; on a backend without reorder ${((CHATS * 1e6) / (out.us[2] as number)).toFixed(0).padStart(6)} (x${(1 / (out.ratio[2] as number)).toFixed(3)}), ${copyingBytes} B per step`,
  )
  for (const s of [chats, moved, copying]) s.dispose()
  for (const { s } of alone) s.dispose()
}

/** Beam parents of step `t`: the best beam forks, the worst is dropped, the order rotates. */
const parents = (t: number): number[] => {
  const k = t % BEAM
  return [k, k, (k + 1) % BEAM, (k + 2) % BEAM]
}

/** The hand-written growing-cache beam loop: the cache's rows gathered on the host, then a run. */
function handGrowingBeam(ort: Runtime, session: Session, start: readonly OrtTensor[]) {
  let past = [...start]
  let length = CONTEXT
  let last: Float32Array = new Float32Array(0)
  const step = async (t: number) => {
    const order = parents(t)
    const rowSize = H * length * D
    const reordered = past.map((old) => {
      const data = old.data as Float32Array
      const next = new Float32Array(BEAM * rowSize)
      order.forEach((p, r) => next.set(data.subarray(p * rowSize, (p + 1) * rowSize), r * rowSize))
      return new ort.Tensor("float32", next, old.dims)
    })
    for (const p of past) if (!start.includes(p)) p.dispose()
    const w = length + 1
    const feeds: Record<string, OrtTensor> = {
      input_ids: ids(ort, BEAM, t),
      attention_mask: new ort.Tensor("int64", new BigInt64Array(BEAM * w).fill(1n), [BEAM, w]),
      position_ids: new ort.Tensor("int64", new BigInt64Array(BEAM).fill(BigInt(length)), [
        BEAM,
        1,
      ]),
    }
    PAST.forEach((name, i) => (feeds[name] = reordered[i] as OrtTensor))
    const out = await session.run(feeds)
    past = PRESENT.map((name) => out[name] as OrtTensor)
    last = (out["logits"] as OrtTensor).data as Float32Array
    ;(out["logits"] as OrtTensor).dispose()
    length++
  }
  const rewind = () => {
    for (const p of past) if (!start.includes(p)) p.dispose()
    past = [...start]
    length = CONTEXT
  }
  return { step, rewind, logits: () => last }
}

/** A beam step: `select` then one token per beam, against the hand-written host reorder. */
async function beamStep(ort: Runtime, models: Record<"fixed" | "growing", Session>) {
  console.log(
    `  beam search step, beam ${BEAM}, context ${CONTEXT} -> ${CONTEXT + STEPS}: hand-written host reorder / select, µs per step, ratio = select time / hand time (median of per-round ratios), target <= 1.03; A/A = a second hand-written loop / the first, in the same rounds (the noise floor)`,
  )
  const line: string[] = []
  for (const cache of [
    { kind: "growing" },
    { kind: "fixed", capacity: CAPACITY },
  ] as KvCacheOptions[]) {
    const s = orThrow(
      createStatefulSession({
        session: models[cache.kind],
        backend: ortBackend({ ort }),
        batchSize: 1,
        cache,
        outputs: ["logits"],
      }),
    ) as StatefulSession<"logits">
    orThrow(await s.run({ input_ids: prompt(ort, CONTEXT, 1) })).logits.dispose()
    orThrow(s.select([0, 0, 0, 0]))
    const at = orThrow(await s.snapshot())
    // A growing cache starts each round over from the same arrays, as the hand-written loop
    // does; a fixed cache's blocks are written in place, so it is restored.
    const rewind = cache.kind === "growing" ? startOver(ort, s) : () => void orThrow(s.restore(at))
    let ourLogits: Float32Array = new Float32Array(0)
    const ours: Side = {
      rewind,
      step: async (t) => {
        orThrow(s.select(parents(t)))
        const out = orThrow(await s.run({ input_ids: ids(ort, BEAM, t) }))
        ourLogits = out.logits.data as Float32Array
        out.logits.dispose()
      },
    }
    // The hand-written loop starts from copies of the same cache.
    const copies = PAST.map((name) => {
      const t = s.state()[name] as OrtTensor
      return new ort.Tensor("float32", (t.data as Float32Array).slice(), t.dims)
    })
    const byHand = () =>
      cache.kind === "growing"
        ? handGrowingBeam(ort, models.growing, copies)
        : handFixed(
            ort,
            models.fixed,
            BEAM,
            (leaf) => copies[leaf]?.data as Float32Array,
            Array<number>(BEAM).fill(CONTEXT),
            parents,
          )
    const hand = byHand()
    // A second, identical hand-written loop in the same rounds: the noise floor.
    const again = byHand()
    // Both ways compute the same logits over a whole round.
    for (const side of [hand, ours]) {
      side.rewind()
      for (let t = 0; t < STEPS; t++) await side.step(t)
    }
    const diff = maxDiff(hand.logits(), ourLogits)
    const { us, ratio } = await interleave([hand, ours, again], STEPS, ROUNDS)
    const [h, o] = us.map((u) => u.toFixed(0).padStart(5))
    // The reorder alone (no run): select against the host gather of the same cache tensors.
    orThrow(s.restore(at))
    let k = 0
    const alone = compareSync(
      "",
      () => {
        const order = parents(k++)
        return copies.map((old) => {
          const data = old.data as Float32Array
          const rowSize = data.length / BEAM
          const next = new Float32Array(data.length)
          order.forEach((p, r) =>
            next.set(data.subarray(p * rowSize, (p + 1) * rowSize), r * rowSize),
          )
          return new ort.Tensor("float32", next, old.dims)
        })
      },
      () => orThrow(s.select(parents(k++))),
    )
    line.push(
      `${cache.kind} ${h} / ${o} µs, ratio ${(ratio[1] as number).toFixed(3)} (A/A ${(ratio[2] as number).toFixed(3)}); the reorder alone ${(alone.baselineNs / 1000).toFixed(0)} / ${(alone.subjectNs / 1000).toFixed(0)} µs, ratio ${(1 / alone.throughputRatio).toFixed(2)} [logits agree within ${diff.toExponential(1)}]`,
    )
    hand.rewind()
    again.rewind()
    s.dispose()
  }
  console.log(`    ${line.join("   ")}`)
}

async function bench(label: string, ort: Runtime, provider: string): Promise<void> {
  const options = { executionProviders: [provider], intraOpNumThreads: 1, interOpNumThreads: 1 }
  // The models' runs are timed: a step's time outside them is its own work.
  const models = {
    fixed: timedRuns(await ort.InferenceSession.create(fixedCacheDecoder(cfg), options)),
    growing: timedRuns(await ort.InferenceSession.create(growingDecoder(cfg), options)),
  }
  console.log(label)
  const parts = (process.env["STATESAVER_BENCH_DECODERS"] ?? "batching,beam").split(",")
  if (parts.includes("batching")) await continuousBatching(ort, models.fixed)
  if (parts.includes("beam")) await beamStep(ort, models)
}

/** Runs the decoder benchmarks, one child process per runtime. */
export async function main(): Promise<void> {
  await perRuntime(
    import.meta.url,
    `Decoders: decoder ${L} layers x ${H} heads x ${D}, hidden ${cfg.hidden}, vocab ${V}; 1 token per step, 1 thread`,
    bench,
  )
}

if (import.meta.url === `file://${process.argv[1]}`) await main()
