/// <reference types="@webgpu/types" />
/**
 * Page 1: many audio streams through one Silero VAD v5 model with a StreamingSession, on the wasm
 * or WebGPU execution provider, with a live speech-probability plot per stream.
 */
import { orThrow } from "@statesaver/core"
import {
  type OrtTensor,
  type StreamingSession,
  createStreamingSession,
  ortBackend,
  sileroContext,
  stateOutputLocations,
  tensorScalar,
} from "@statesaver/onnxruntime"
import modelUrl from "@ricky0123/vad-web/dist/silero_vad_v5.onnx?url"
import * as ort from "onnxruntime-web/webgpu"
import mjsUrl from "onnxruntime-web/ort-wasm-simd-threaded.asyncify.mjs?url"
import wasmUrl from "onnxruntime-web/ort-wasm-simd-threaded.asyncify.wasm?url"
import speechUrl from "../../packages/onnxruntime/test/fixtures/speech.wav?url"
import { parseWav, rng, streamPlans } from "./audio.js"
import { startMicrophone, type Microphone } from "./microphone.js"
import { params, show, siteHeader } from "./nav.js"
import { type LivePlot, livePlot } from "./plot.js"
import { SegmentTracker, formatSegments } from "./segments.js"
import "./style.css"

siteHeader("streams.html")

/** Samples per frame at 16 kHz (32 ms). */
const FRAME = 512
const SAMPLE_RATE = 16000
/** Silero VAD v5's input and output names (its state pair is `stateN` → `state`). */
const MODEL_INPUTS = ["input", "state", "sr"]
const MODEL_OUTPUTS = ["output", "stateN"]

ort.env.wasm.wasmPaths = { wasm: wasmUrl, mjs: mjsUrl }
// Threads need cross-origin isolation (see the site's README); one thread otherwise.
ort.env.wasm.numThreads = Number(
  params.get("threads") ??
    (globalThis.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1),
)

/**
 * How frames reach the model, in one place. Silero VAD v5 is fed as its authors feed it: each
 * 512-sample frame after the last 64 samples of the stream's previous frame (576 samples). The
 * `sileroContext()` rule keeps those 64 samples per stream in the session's state (stored,
 * reset and evicted with the model's own state); the page feeds plain frames.
 */
const feeding = {
  rules: [sileroContext()],
  feeds: (frame: Float32Array): { frame: OrtTensor } => ({
    frame: new ort.Tensor("float32", frame, [1, FRAME]),
  }),
}

// Every read of GPU memory goes through mapAsync. Reads made while ONNX Runtime's `run` is in
// flight bring its CPU outputs back; any other read would be the library moving state.
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

interface Stream {
  readonly key: string
  readonly label: string
  readonly joins: number
  /** Scripted audio, or frames arriving from the microphone. */
  readonly audio: Float32Array | undefined
  readonly queue: Float32Array[]
  readonly frames: number
  done: number
  left: boolean
  readonly tracker: SegmentTracker
  readonly plot: LivePlot
  readonly card: HTMLElement
  readonly segmentsEl: HTMLElement
}

const backendSelect = document.getElementById("backend") as HTMLSelectElement
const paceSelect = document.getElementById("pace") as HTMLSelectElement
const startButton = document.getElementById("start") as HTMLButtonElement
const stopButton = document.getElementById("stop") as HTMLButtonElement
const joinButton = document.getElementById("join") as HTMLButtonElement
const micButton = document.getElementById("mic") as HTMLButtonElement
const grid = document.getElementById("streams") as HTMLElement

const hasWebGpu = "gpu" in navigator && (await navigator.gpu.requestAdapter()) !== null
if (!hasWebGpu) {
  const option = backendSelect.querySelector('option[value="webgpu"]') as HTMLOptionElement
  option.disabled = true
  option.textContent = "WebGPU (not available in this browser)"
}
backendSelect.value = params.get("backend") === "webgpu" && hasWebGpu ? "webgpu" : "wasm"
const webgpuNote = document.getElementById("webgpu-note") as HTMLElement
const showNote = () => (webgpuNote.hidden = backendSelect.value !== "webgpu")
showNote()
backendSelect.addEventListener("change", showNote)
paceSelect.value = params.get("pace") === "fast" ? "fast" : "realtime"

const speech = parseWav(await (await fetch(speechUrl)).arrayBuffer())
if (speech.sampleRate !== SAMPLE_RATE) throw new Error(`expected ${SAMPLE_RATE} Hz audio`)
const model = new Uint8Array(await (await fetch(modelUrl)).arrayBuffer())

function setStatus(state: string, text: string): void {
  const el = document.getElementById("status") as HTMLElement
  el.dataset["state"] = state
  el.textContent = text
}

/** A session of Silero VAD on `backend`, and a StreamingSession over it. */
async function createVad(
  backend: Backend,
): Promise<{ session: ort.InferenceSession; vad: StreamingSession<"output"> }> {
  const session = await ort.InferenceSession.create(
    model,
    backend === "webgpu"
      ? {
          executionProviders: ["webgpu"],
          // The state output stays on the GPU and is fed back from there; `output` comes back.
          preferredOutputLocation: stateOutputLocations(MODEL_INPUTS, MODEL_OUTPUTS),
        }
      : { executionProviders: ["wasm"] },
  )
  // Instrumentation for the read-back counter: marks the time ONNX Runtime's run is in flight.
  const run = session.run.bind(session) as (...args: unknown[]) => Promise<unknown>
  ;(session as { run: (...args: unknown[]) => Promise<unknown> }).run = async (...args) => {
    reads.running++
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
  const vad = orThrow(
    createStreamingSession({
      session,
      ort,
      backend: stateBackend,
      capacity: 64,
      outputs: ["output"],
      rules: feeding.rules,
    }),
  )
  return { session, vad }
}

function addStream(
  key: string,
  label: string,
  joins: number,
  audio: Float32Array | undefined,
): Stream {
  const card = document.createElement("section")
  card.className = "card"
  card.dataset["key"] = key
  const title = document.createElement("h3")
  title.textContent = key
  const sub = document.createElement("div")
  sub.className = "muted"
  sub.textContent = `${label}${joins > 0 ? ` · joins at ${((joins * FRAME) / SAMPLE_RATE).toFixed(2)} s` : ""}`
  const plotEl = document.createElement("div")
  plotEl.className = "plot"
  const segmentsEl = document.createElement("div")
  segmentsEl.className = "segments"
  segmentsEl.dataset["key"] = key
  segmentsEl.textContent = "waiting to join"
  const leave = document.createElement("button")
  leave.textContent = "Leave now"
  card.append(title, sub, plotEl, segmentsEl, leave)
  grid.append(card)
  const frames = audio === undefined ? Infinity : Math.floor(audio.length / FRAME)
  const stream: Stream = {
    key,
    label,
    joins,
    audio,
    queue: [],
    frames,
    done: 0,
    left: false,
    tracker: new SegmentTracker(),
    card,
    segmentsEl,
    plot: livePlot(plotEl, {
      series: [
        { label: "p(speech)", stroke: "#1f6feb" },
        { label: "segment", stroke: "rgba(0,0,0,0)", fill: "rgba(46,160,67,0.35)", stepped: true },
      ],
      x: {
        label: "s",
        min: 0,
        ...(audio === undefined ? {} : { max: frames * (FRAME / SAMPLE_RATE) }),
      },
      y: { label: "p(speech)", min: 0, max: 1 },
      height: 150,
      legend: false,
    }),
  }
  leave.addEventListener("click", () => leaving.add(stream))
  return stream
}

/** Streams asked to leave from the page: applied between two runs (a run in flight refuses it). */
const leaving = new Set<Stream>()
let streams: Stream[] = []
let joined = 0
let mic: Microphone | undefined
let stopRequested = false
let running: Promise<void> | undefined

/** Plays the scripted streams (and any joined later) through the model until they all left. */
async function play(backend: Backend, pace: "realtime" | "fast"): Promise<void> {
  setStatus("loading", `creating the ${backend} session…`)
  const { session, vad } = await createVad(backend)
  const sr = new ort.Tensor("int64", BigInt64Array.from([BigInt(SAMPLE_RATE)]), [])
  grid.replaceChildren()
  // ?streams=recording,shifted plays only those; ?frames=30 cuts every stream to its first 30 frames.
  const only = params.get("streams")?.split(",")
  const limit = Number(params.get("frames") ?? 0)
  streams = streamPlans(speech.samples, SAMPLE_RATE)
    .filter((p) => only === undefined || only.includes(p.key))
    .map((p) =>
      addStream(p.key, p.label, p.joins, limit ? p.audio.subarray(0, limit * FRAME) : p.audio),
    )
  probabilities.clear()
  const readsAtStart = { ...reads }
  let tick = 0
  let calls = 0
  let frames = 0
  const t0 = performance.now()
  setStatus("running", `running on ${backend}`)
  try {
    while (!stopRequested) {
      for (const s of leaving) finish(s, vad)
      leaving.clear()
      const active = streams.filter((s) => !s.left && s.joins <= tick)
      const ready = active.filter((s) => (s.audio === undefined ? s.queue.length > 0 : true))
      const waiting = streams.some((s) => !s.left)
      if (!waiting) break
      if (pace === "realtime") {
        const due = t0 + tick * ((FRAME / SAMPLE_RATE) * 1000)
        const wait = due - performance.now()
        if (wait > 0) await new Promise((r) => setTimeout(r, wait))
      } else if (ready.length === 0 && mic !== undefined) {
        await new Promise((r) => setTimeout(r, 5))
      }
      tick++
      if (ready.length === 0) continue
      const batch = ready.map((s) => {
        const frame =
          s.audio === undefined
            ? (s.queue.shift() as Float32Array)
            : s.audio.subarray(s.done * FRAME, (s.done + 1) * FRAME)
        return { key: s.key, feeds: feeding.feeds(frame) }
      })
      const outs = orThrow(await vad.run(batch, { shared: { sr } }))
      calls++
      for (const s of ready) {
        const out = outs.get(s.key)
        if (out === undefined) continue // never: every stream given has its outputs
        const p = orThrow(tensorScalar(out.output, "float32"))
        out.output.dispose()
        frames++
        step(s, p)
        if (s.done >= s.frames) finish(s, vad)
      }
      const seconds = (performance.now() - t0) / 1000
      show("fps", (frames / seconds).toFixed(0))
      show("realtime", ((frames * FRAME) / SAMPLE_RATE / seconds).toFixed(1))
      show("calls", String(calls))
      show("batch", String(ready.length))
      if (backend === "webgpu") {
        show("state-reads", String((reads.outside - readsAtStart.outside) / frames))
        show("output-reads", ((reads.inRun - readsAtStart.inRun) / calls).toFixed(2))
      } else {
        show("state-reads", "– (wasm)")
        show("output-reads", "– (wasm)")
      }
    }
  } finally {
    for (const s of streams) if (!s.left) finish(s, vad)
    vad.dispose()
    await session.release()
  }
  const seconds = (performance.now() - t0) / 1000
  const summary = `${frames} frames in ${calls} calls on ${backend}, ${(frames / seconds).toFixed(0)} frames/s`
  document.body.dataset["frames"] = String(frames)
  document.body.dataset["calls"] = String(calls)
  document.body.dataset["stateReads"] = String(reads.outside - readsAtStart.outside)
  document.body.dataset["outputReads"] = String(reads.inRun - readsAtStart.inRun)
  setStatus(stopRequested ? "stopped" : "done", `${stopRequested ? "stopped" : "done"}: ${summary}`)
}

/** Every stream's probabilities of the last run, for anyone who wants the numbers behind the plots. */
const probabilities = new Map<string, number[]>()
;(globalThis as { statesaverDemo?: unknown }).statesaverDemo = { probabilities }

/** Takes a stream's next probability: plot, segment tracking. */
function step(s: Stream, p: number): void {
  const f = s.done++
  const ps = probabilities.get(s.key) ?? []
  ps.push(p)
  probabilities.set(s.key, ps)
  const closed = s.tracker.push(p)
  // Frames after a closed segment's end were drawn inside it while it was still open.
  if (closed !== undefined) for (let i = closed[1]; i < f; i++) s.plot.set(1, i, 0)
  s.plot.push(((f + 1) * FRAME) / SAMPLE_RATE, p, s.tracker.open === undefined ? 0 : 1)
  const open = s.tracker.open
  const found = formatSegments(s.tracker.segments, FRAME, SAMPLE_RATE)
  s.segmentsEl.textContent =
    open === undefined
      ? found
      : `${s.tracker.segments.length > 0 ? `${found}, ` : ""}speech since ${((open * FRAME) / SAMPLE_RATE).toFixed(2)} s…`
}

/** The stream left: its open segment closes, its state is freed. */
function finish(s: Stream, vad: StreamingSession<"output">): void {
  if (s.left) return
  s.left = true
  if (s.audio === undefined) {
    mic?.stop()
    mic = undefined
  }
  const segments = s.tracker.finish()
  if (vad.store.has(s.key)) orThrow(vad.delete(s.key))
  s.segmentsEl.textContent = `speech ${formatSegments(segments, FRAME, SAMPLE_RATE)}`.replace(
    "speech no speech",
    "no speech",
  )
  s.segmentsEl.dataset["done"] = "true"
  s.card.classList.add("left")
  s.card.querySelector("button")?.remove()
}

function start(): void {
  if (running) return
  stopRequested = false
  startButton.disabled = true
  stopButton.disabled = false
  joinButton.disabled = false
  micButton.disabled = !navigator.mediaDevices?.getUserMedia
  running = play(backendSelect.value as Backend, paceSelect.value as "realtime" | "fast")
    .catch((e: unknown) => {
      console.error(e)
      setStatus("error", `error: ${e instanceof Error ? e.message : String(e)}`)
    })
    .finally(() => {
      running = undefined
      mic?.stop()
      mic = undefined
      startButton.disabled = false
      stopButton.disabled = true
      joinButton.disabled = true
      micButton.disabled = true
    })
}

async function stop(): Promise<void> {
  stopRequested = true
  await running
}

startButton.addEventListener("click", start)
stopButton.addEventListener("click", () => void stop())
backendSelect.addEventListener("change", () => {
  if (running) void stop().then(start)
})
const joinRandom = rng(99)
joinButton.addEventListener("click", () => {
  const from = Math.floor(joinRandom() * 4 * SAMPLE_RATE)
  const audio = speech.samples.slice(from, from + 3 * SAMPLE_RATE)
  joined++
  // Joins at the next tick: `joins: 0` is already past.
  streams.push(
    addStream(
      `joined-${joined}`,
      `the recording from ${(from / SAMPLE_RATE).toFixed(2)} s, 3 s`,
      0,
      audio,
    ),
  )
})
micButton.addEventListener("click", () => {
  if (mic !== undefined) return
  micButton.disabled = true
  const stream = addStream("microphone", "your microphone, 16 kHz", 0, undefined)
  streams.push(stream)
  startMicrophone(SAMPLE_RATE, FRAME, (frame) => stream.queue.push(frame))
    .then((m) => {
      mic = m
    })
    .catch((e: unknown) => {
      stream.segmentsEl.textContent = `no microphone: ${e instanceof Error ? e.message : String(e)}`
      stream.left = true
      stream.card.classList.add("left")
    })
})

setStatus("idle", "ready")
if (params.get("autostart") === "1") start()
