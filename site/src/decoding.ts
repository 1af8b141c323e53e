/// <reference types="@webgpu/types" />
/**
 * Page 3: a tiny decoder generating through a StatefulSession with a KV cache, fixed-capacity or
 * growing, on the wasm or WebGPU execution provider: greedy decoding, beam search with `select`,
 * and the time per step of both kinds of cache.
 */
import { orThrow } from "@statesaver/core"
import {
  type KvCacheOptions,
  type OrtBackend,
  createStatefulSession,
  ortBackend,
  stateOutputLocations,
  tensorData,
} from "@statesaver/onnxruntime"
import * as ort from "onnxruntime-web/webgpu"
import mjsUrl from "onnxruntime-web/ort-wasm-simd-threaded.asyncify.mjs?url"
import wasmUrl from "onnxruntime-web/ort-wasm-simd-threaded.asyncify.wasm?url"
import { config, fixedCacheModel, growingCacheModel, noCacheModel } from "virtual:tiny-decoder"
import {
  type BeamStep,
  type Decoder,
  type Generated,
  argmax,
  beamSearch,
  feed,
  greedy,
  logSoftmax,
} from "./generate.js"
import { params, show, siteHeader } from "./nav.js"
import { livePlot } from "./plot.js"
import "./style.css"

siteHeader("decoding.html")

ort.env.wasm.wasmPaths = { wasm: wasmUrl, mjs: mjsUrl }
// A model this small runs fastest on one thread.
ort.env.wasm.numThreads = Number(params.get("threads") ?? 1)

/** The fixed cache holds every position the model has (its position table). */
const CAPACITY = config.maxPosition
const GREEDY_PROMPTS = [
  [3, 1, 4, 1, 5],
  [2, 7, 1],
  [1, 4, 1, 4, 2, 1, 3],
]
const GREEDY_STEPS = 12
const BEAM_PROMPT = [9, 2, 6, 5, 3, 5]
const WIDTH = 4
const BEAM_STEPS = 12
/** Timing: rows, prompt tokens per row, measured rounds after one warm-up round. */
const TIMING_ROWS = 4
const TIMING_PROMPT = 4
const ROUNDS = Math.max(1, Number(params.get("rounds") ?? 5))
/** The cache length the timing rounds stop at (?until=24 for a short run). */
const UNTIL = Math.min(
  CAPACITY,
  Math.max(TIMING_PROMPT + 1, Number(params.get("until") ?? CAPACITY)),
)
const BEAM_COLORS = ["#1f6feb", "#d1242f", "#2da44e", "#bf8700"]

/** The models' names (Optimum's): the state outputs stay on the GPU on WebGPU. */
const PAST = Array.from({ length: config.layers }, (_, l) => [
  `past_key_values.${l}.key`,
  `past_key_values.${l}.value`,
]).flat()
const PRESENT = PAST.map((name) => name.replace("past_key_values", "present"))
const INPUTS = ["input_ids", "attention_mask", "position_ids", ...PAST]
const OUTPUTS = ["logits", ...PRESENT]

// Every read of GPU memory goes through mapAsync. Reads made while ONNX Runtime's `run` is in
// flight bring its CPU outputs (the logits) back; any other read would be the cache moving.
const reads = { inRun: 0, outside: 0, running: 0 }
if (typeof GPUBuffer !== "undefined") {
  const original = GPUBuffer.prototype.mapAsync
  GPUBuffer.prototype.mapAsync = function (
    this: GPUBuffer,
    ...args: Parameters<GPUBuffer["mapAsync"]>
  ) {
    if (reads.running > 0) reads.inRun++
    else reads.outside++
    return original.apply(this, args)
  }
}

type Backend = "wasm" | "webgpu"
type Kind = "fixed" | "growing"

const backendSelect = document.getElementById("backend") as HTMLSelectElement
const cacheSelect = document.getElementById("cache") as HTMLSelectElement
const startButton = document.getElementById("start") as HTMLButtonElement
const gpuNote = document.getElementById("gpu-note") as HTMLElement

const hasWebGpu = "gpu" in navigator && (await navigator.gpu.requestAdapter()) !== null
if (!hasWebGpu) {
  const option = backendSelect.querySelector('option[value="webgpu"]') as HTMLOptionElement
  option.disabled = true
  option.textContent = "WebGPU (not available in this browser)"
}
backendSelect.value = params.get("backend") === "webgpu" && hasWebGpu ? "webgpu" : "wasm"
cacheSelect.value = params.get("cache") === "growing" ? "growing" : "fixed"

function setStatus(state: string, text: string): void {
  const el = document.getElementById("status") as HTMLElement
  el.dataset["state"] = state
  el.textContent = text
}

const cacheOptions = (kind: Kind): KvCacheOptions =>
  kind === "fixed" ? { kind: "fixed", capacity: CAPACITY } : { kind: "growing" }

/** An ONNX Runtime session of the decoder for `kind` on `backend`, and a state backend beside it. */
async function openModel(kind: Kind, backend: Backend) {
  const session = await ort.InferenceSession.create(
    kind === "fixed" ? fixedCacheModel : growingCacheModel,
    backend === "webgpu"
      ? {
          executionProviders: ["webgpu"],
          // The cache outputs stay on the GPU and are fed back from there; the logits come back.
          preferredOutputLocation: stateOutputLocations(INPUTS, OUTPUTS),
        }
      : { executionProviders: ["wasm"] },
  )
  // Instrumentation for the read-back counter: marks the time ONNX Runtime's run is in flight.
  let runs = 0
  const run = session.run.bind(session) as (...args: unknown[]) => Promise<unknown>
  ;(session as { run: (...args: unknown[]) => Promise<unknown> }).run = async (...args) => {
    reads.running++
    runs++
    try {
      return await run(...args)
    } finally {
      reads.running--
    }
  }
  const stateBackend =
    backend === "webgpu"
      ? ortBackend({ ort, location: "gpu-buffer", device: await ort.env.webgpu.device })
      : ortBackend({ ort })
  const open = (batchSize: number): Decoder =>
    orThrow(
      createStatefulSession({
        session,
        backend: stateBackend,
        batchSize,
        cache: cacheOptions(kind),
        outputs: ["logits"],
      }),
    )
  return { session, stateBackend, open, runs: () => runs }
}

let oracleReady: Promise<ort.InferenceSession> | undefined
/**
 * The same weights without a cache, on wasm: next-token log-probabilities after each position
 * of a sequence run whole.
 */
async function withoutCache(seq: readonly number[]): Promise<Float64Array[]> {
  oracleReady ??= ort.InferenceSession.create(noCacheModel, { executionProviders: ["wasm"] })
  const session = await oracleReady
  const T = seq.length
  const int64 = (values: Iterable<number>) =>
    new ort.Tensor("int64", BigInt64Array.from(values, BigInt), [1, T])
  const out = await session.run({
    input_ids: int64(seq),
    attention_mask: int64(seq.map(() => 1)),
    position_ids: int64(seq.keys()),
  })
  const logits = out["logits"] as ort.Tensor
  const data = orThrow(tensorData(logits, "float32", "logits"))
  const rows = seq.map((_, t) =>
    logSoftmax(data.subarray(t * config.vocab, (t + 1) * config.vocab)),
  )
  logits.dispose()
  return rows
}

/** A continuation against the no-cache run: score difference, and whether each token is greedy. */
async function check(prompt: readonly number[], gen: Generated) {
  const seq = [...prompt, ...gen.tokens]
  const lp = await withoutCache(seq)
  let sum = 0
  let isGreedy = true
  for (let t = prompt.length; t < seq.length; t++) {
    const before = lp[t - 1] as Float64Array
    sum += before[seq[t] as number] as number
    isGreedy &&= argmax(before) === seq[t]
  }
  return { delta: Math.abs(sum - gen.logProb), greedy: isGreedy }
}

const list = (tokens: readonly number[]) => `[${tokens.join(" ")}]`

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  text = "",
  className = "",
): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag)
  e.textContent = text
  if (className !== "") e.className = className
  return e
}

function row(cells: readonly (string | HTMLElement)[], header = false): HTMLTableRowElement {
  const tr = el("tr")
  for (const c of cells) {
    const td = el(header ? "th" : "td")
    if (typeof c === "string") td.textContent = c
    else td.append(c)
    tr.append(td)
  }
  return tr
}

interface GreedyRow {
  readonly tokens: HTMLElement
  readonly length: HTMLElement
  readonly logp: HTMLElement
  readonly checked: HTMLElement
}

/** The greedy table: one line per prompt, its tokens filled in as they come. */
function greedyTable(prefill: readonly number[]): GreedyRow[] {
  const table = document.getElementById("greedy") as HTMLTableElement
  table.replaceChildren(
    row(["prompt", "generated", "cache length", "log p", "no-cache check"], true),
  )
  return GREEDY_PROMPTS.map((prompt, r) => {
    const tr = row([list(prompt), "", String(prefill[r]), "", ""])
    tr.dataset["row"] = String(r)
    table.append(tr)
    const [, tokens, length, logp, checked] = [...tr.cells]
    return { tokens, length, logp, checked } as GreedyRow
  })
}

/** The beam grid: a `select` line and one line per beam; a column per step. */
function beamGrid() {
  const table = document.getElementById("beams") as HTMLTableElement
  const head = row(["step"], true)
  const selectLine = row(["select(rows)"])
  selectLine.className = "select"
  const lines = Array.from({ length: WIDTH }, (_, b) => {
    const tr = row([`beam ${b}`])
    ;(tr.cells[0] as HTMLTableCellElement).style.color = BEAM_COLORS[b] as string
    return tr
  })
  const positionsLine = row(["cache positions held"])
  positionsLine.className = "muted"
  table.replaceChildren(head, selectLine, ...lines, positionsLine)
  return (t: number, step: BeamStep) => {
    head.append(el("th", String(t + 1)))
    selectLine.append(el("td", step.parents.join(" ")))
    step.parents.forEach((parent, b) => {
      const td = el("td")
      td.className = "beam"
      td.style.borderLeftColor = BEAM_COLORS[parent] as string
      td.style.background = `${BEAM_COLORS[parent] as string}1f`
      td.title = `beam ${b} continues beam ${parent} of the previous step`
      td.append(
        el("b", String(step.tokens[b])),
        el("span", parent === b ? "" : `←${parent}`, "from"),
        el("span", String(step.lengths[b]), "len"),
      )
      lines[b]?.append(td)
    })
    positionsLine.append(el("td", String(step.positions)))
  }
}

const scorePlotEl = document.getElementById("score-plot") as HTMLElement
const timingPlotEl = document.getElementById("timing-plot") as HTMLElement

/** What the last run showed, for anyone who wants the numbers behind the page. */
interface Shown {
  backend: Backend
  cache: Kind
  greedy: { prompt: number[]; tokens: number[]; logProb: number; lengths: number[] }[]
  beams: { tokens: number[]; logProb: number }[]
  steps: BeamStep[]
  runs: number
  tokens: number
  stateReads: number
  logitReads: number
  worstDelta: number
  greedyEqual: boolean
  timings: Partial<Record<Kind, Timing>>
}
const shown: { last?: Shown } = {}
;(globalThis as { statesaverDemo?: unknown }).statesaverDemo = shown

/** Greedy and beam search with the chosen cache, checked against the no-cache run. */
async function generate(backend: Backend, kind: Kind): Promise<Shown> {
  setStatus("loading", `creating the ${backend} session…`)
  const model = await openModel(kind, backend)
  try {
    setStatus("running", `generating on ${backend}, ${kind} cache`)
    const readsAtStart = { ...reads }
    const runsAtStart = model.runs()
    // Greedy: three prompts of different lengths in one batch.
    const lengths: number[][] = GREEDY_PROMPTS.map(() => [])
    let cells: GreedyRow[] = []
    const g = await (async () => {
      using dec = model.open(GREEDY_PROMPTS.length)
      return await greedy(ort.Tensor, dec, GREEDY_PROMPTS, GREEDY_STEPS, {
        // The prompts are in, the padding rewound: each row's length is its prompt's.
        prefill: (prefill) => {
          cells = greedyTable(prefill)
          prefill.forEach((length, r) => lengths[r]?.push(length))
        },
        step: (s) =>
          s.tokens.forEach((token, r) => {
            const c = cells[r] as GreedyRow
            c.tokens.textContent = `${c.tokens.textContent ?? ""} ${token}`.trim()
            lengths[r]?.push(s.lengths[r] as number)
            c.length.textContent = `${lengths[r]?.[0]} → ${s.lengths[r]}`
          }),
      })
    })()
    g.out.forEach((gen, r) => {
      ;(cells[r] as GreedyRow).logp.textContent = gen.logProb.toFixed(4)
    })
    // Beam search from one prompt: `select` forks it into 4 beams, then follows the parents.
    const steps: BeamStep[] = []
    const addColumn = beamGrid()
    scorePlotEl.replaceChildren()
    const scores = livePlot(scorePlotEl, {
      series: BEAM_COLORS.map((stroke, b) => ({ label: `beam ${b}`, stroke })),
      x: { label: "step", min: 1, max: BEAM_STEPS },
      y: { label: "log p of the beam" },
      height: 200,
    })
    const beams = await (async () => {
      using dec = model.open(1)
      return await beamSearch(ort.Tensor, dec, BEAM_PROMPT, WIDTH, BEAM_STEPS, (s) => {
        addColumn(steps.length, s)
        steps.push(s)
        scores.push(steps.length, ...s.scores)
      })
    })()
    const runs = model.runs() - runsAtStart
    const tokens = GREEDY_PROMPTS.length * GREEDY_STEPS + WIDTH * BEAM_STEPS
    const stateReads = reads.outside - readsAtStart.outside
    const logitReads = reads.inRun - readsAtStart.inRun
    show("runs", String(runs))
    show("state-reads", backend === "webgpu" ? String(stateReads / tokens) : "– (wasm)")
    // The check, without a cache on each whole sequence.
    let worst = 0
    let greedyEqual = true
    for (const [r, gen] of g.out.entries()) {
      const c = await check(GREEDY_PROMPTS[r] as number[], gen)
      worst = Math.max(worst, c.delta)
      greedyEqual &&= c.greedy
      ;(cells[r] as GreedyRow).checked.textContent = c.greedy
        ? `greedy, Δ ${c.delta.toExponential(1)}`
        : "NOT the greedy choice"
    }
    const result = document.getElementById("beam-result") as HTMLTableElement
    result.replaceChildren(row(["beam", "tokens", "log p", "no-cache log p Δ"], true))
    for (const [b, beam] of beams.entries()) {
      const c = await check(BEAM_PROMPT, beam)
      worst = Math.max(worst, c.delta)
      const tr = row([
        `beam ${b}`,
        list(beam.tokens),
        beam.logProb.toFixed(4),
        c.delta.toExponential(1),
      ])
      ;(tr.cells[0] as HTMLTableCellElement).style.color = BEAM_COLORS[b] as string
      result.append(tr)
    }
    show("checked", `${worst.toExponential(1)}${greedyEqual ? "" : " (greedy tokens differ)"}`)
    return {
      backend,
      cache: kind,
      greedy: g.out.map((gen, r) => ({
        prompt: GREEDY_PROMPTS[r] as number[],
        tokens: gen.tokens,
        logProb: gen.logProb,
        lengths: lengths[r] as number[],
      })),
      beams: beams.map((b) => ({ tokens: b.tokens, logProb: b.logProb })),
      steps,
      runs,
      tokens,
      stateReads,
      logitReads,
      worstDelta: worst,
      greedyEqual,
      timings: {},
    }
  } finally {
    await model.session.release()
  }
}

interface Timing {
  /** Generated tokens (all rows) per second over the measured rounds. */
  tokensPerSecond: number
  /** Median milliseconds of a step over the measured rounds, by the cache length it reached. */
  msByLength: Map<number, number>
  stateReadsPerToken: number
  bytesCopiedPerToken: number
}

const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 === 1 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2
}

/**
 * Greedy decoding of TIMING_ROWS rows up to the capacity with each kind of cache, ROUNDS times
 * after a warm-up round. The kinds take turns, round by round, so both see the same machine.
 */
async function time(backend: Backend): Promise<Record<Kind, Timing>> {
  const prompts = Array.from({ length: TIMING_ROWS }, (_, r) =>
    Array.from({ length: TIMING_PROMPT }, (_, i) => (7 * r + 3 * i + 1) % config.vocab),
  )
  const stepsPerRound = UNTIL - TIMING_PROMPT
  // One at a time: ONNX Runtime's WebGPU EP creates one session at a time.
  const models = [await openModel("fixed", backend), await openModel("growing", backend)]
  const decoders = models.map((m) => m.open(TIMING_ROWS))
  try {
    const measured = models.map(() => ({
      ms: 0,
      reads: 0,
      copied: 0,
      byLength: new Map<number, number[]>(),
    }))
    for (let round = 0; round <= ROUNDS; round++) {
      for (const [k, dec] of decoders.entries()) {
        const backendOf = models[k]?.stateBackend as OrtBackend
        const m = measured[k] as (typeof measured)[number]
        orThrow(dec.reset())
        let next = (await feed(ort.Tensor, dec, prompts)).map((p) => p.at(-1) as Float64Array)
        for (let t = 0; t < stepsPerRound; t++) {
          const readsBefore = reads.outside
          const copiedBefore = backendOf.bytesCopied()
          const t0 = performance.now()
          const chosen = next.map(argmax)
          next = (
            await feed(
              ort.Tensor,
              dec,
              chosen.map((token) => [token]),
            )
          ).map((p) => p.at(-1) as Float64Array)
          const dt = performance.now() - t0
          if (round === 0) continue
          m.ms += dt
          m.reads += reads.outside - readsBefore
          m.copied += backendOf.bytesCopied() - copiedBefore
          const length = TIMING_PROMPT + t + 1
          m.byLength.set(length, [...(m.byLength.get(length) ?? []), dt])
        }
      }
      setStatus("running", `timing both caches on ${backend}: round ${round} of ${ROUNDS}…`)
    }
    const tokens = TIMING_ROWS * stepsPerRound * ROUNDS
    const timing = (m: (typeof measured)[number]): Timing => ({
      tokensPerSecond: tokens / (m.ms / 1000),
      msByLength: new Map([...m.byLength].map(([length, dts]) => [length, median(dts)])),
      stateReadsPerToken: m.reads / tokens,
      bytesCopiedPerToken: m.copied / tokens,
    })
    return {
      fixed: timing(measured[0] as (typeof measured)[number]),
      growing: timing(measured[1] as (typeof measured)[number]),
    }
  } finally {
    for (const dec of decoders) dec.dispose()
    for (const m of models) await m.session.release()
  }
}

async function play(backend: Backend, kind: Kind): Promise<void> {
  show("until", UNTIL === CAPACITY ? `${UNTIL} (the capacity)` : String(UNTIL))
  show("rounds", String(ROUNDS))
  const t0 = performance.now()
  gpuNote.hidden = backend !== "webgpu"
  const result = await generate(backend, kind)
  shown.last = result
  setStatus("running", `timing both caches on ${backend}…`)
  result.timings = await time(backend)
  for (const k of ["fixed", "growing"] as const) {
    const timing = result.timings[k] as Timing
    show(`${k}-tps`, timing.tokensPerSecond.toFixed(0))
    show(`${k}-reads`, backend === "webgpu" ? String(timing.stateReadsPerToken) : "– (wasm)")
    show(`${k}-copied`, timing.bytesCopiedPerToken.toFixed(0))
  }
  timingPlotEl.replaceChildren()
  const plot = livePlot(timingPlotEl, {
    series: [
      { label: "fixed cache", stroke: "#1f6feb" },
      { label: "growing cache", stroke: "#d1242f" },
    ],
    x: { label: "cache length after the step" },
    y: { label: "ms per step (median)", min: 0 },
    height: 220,
  })
  for (let length = TIMING_PROMPT + 1; length <= UNTIL; length++) {
    plot.push(
      length,
      result.timings.fixed?.msByLength.get(length) ?? null,
      result.timings.growing?.msByLength.get(length) ?? null,
    )
  }
  const data = document.body.dataset
  data["runs"] = String(result.runs)
  data["stateReads"] = String(result.stateReads)
  data["logitReads"] = String(result.logitReads)
  setStatus(
    "done",
    `done: ${result.runs} runs on ${backend} with a ${kind} cache, checked without a cache ` +
      `(largest log p difference ${result.worstDelta.toExponential(1)}), in ` +
      `${((performance.now() - t0) / 1000).toFixed(1)} s`,
  )
}

let running: Promise<void> | undefined
function start(): void {
  if (running) return
  for (const c of [startButton, backendSelect, cacheSelect]) c.disabled = true
  running = play(backendSelect.value as Backend, cacheSelect.value as Kind)
    .catch((e: unknown) => {
      console.error(e)
      setStatus("error", `error: ${e instanceof Error ? e.message : String(e)}`)
    })
    .finally(() => {
      running = undefined
      for (const c of [startButton, backendSelect, cacheSelect]) c.disabled = false
    })
}

startButton.addEventListener("click", start)
setStatus("idle", "ready")
if (params.get("autostart") === "1") start()
