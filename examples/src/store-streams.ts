/**
 * Many concurrent audio streams through one Silero VAD v5 session (shipped in
 * @ricky0123/vad-web) on onnxruntime-node: a StreamingSession keeps each stream's `state` and,
 * through `sileroContext()`, its 64-sample context window in a StateStore and runs up to 16
 * streams per call. Streams join and leave over time; each one's
 * speech segments are printed when it ends, then the throughput.
 */
import { orThrow } from "@statesaver/core"
import {
  createStreamingSession,
  ortBackend,
  sileroContext,
  tensorScalar,
} from "@statesaver/onnxruntime"
import * as ort from "onnxruntime-node"
import { sileroV5Path, speechFixture } from "./speech.js"

const FRAME = 512
const MAX_BATCH = 16
const STREAMS = 24
const START = 0.5
const END = 0.35
/** Frames of silence (~250 ms) that close a segment. */
const HANGOVER = 8

interface Stream {
  readonly key: string
  /** First sample of the fixture this stream plays. */
  readonly offset: number
  readonly frames: number
  /** Tick at which the stream connects. */
  readonly joins: number
  done: number
  start: number | undefined
  quiet: number
  readonly segments: [number, number][]
}

/** Runs 24 streams through the VAD in batches of up to 16 and prints what each one heard. */
export async function main(): Promise<void> {
  process.env["ORT_DISABLE_TELEMETRY"] ??= "1"
  const { samples, sampleRate } = speechFixture()
  const model = sileroV5Path()
  const session = await ort.InferenceSession.create(model, { intraOpNumThreads: 1 })
  using vad = orThrow(
    createStreamingSession({
      session,
      ort,
      backend: ortBackend({ ort }),
      capacity: 64,
      outputs: ["output"],
      rules: [sileroContext()],
    }),
  )
  const sr = new ort.Tensor("int64", BigInt64Array.from([BigInt(sampleRate)]), [])
  const seconds = (frame: number) => ((frame * FRAME) / sampleRate).toFixed(2)
  const total = Math.floor(samples.length / FRAME)

  // Each stream plays the recording from its own point (0 to 1.25 s in) for 2 to 4 s; one
  // joins every 5 ticks, so more than 16 are sometimes connected and some wait a tick.
  const streams: Stream[] = Array.from({ length: STREAMS }, (_, s) => {
    const offset = ((s * 13) % 40) * FRAME
    return {
      key: `call-${String(s).padStart(2, "0")}`,
      offset,
      frames: Math.min(total - offset / FRAME, 60 + ((s * 29) % 70)),
      joins: s * 5,
      done: 0,
      start: undefined,
      quiet: 0,
      segments: [],
    }
  })
  console.log(
    `Silero VAD v5: ${STREAMS} streams joining and leaving, up to ${MAX_BATCH} per call (StreamingSession)`,
  )

  let tick = 0
  let calls = 0
  let frames = 0
  let busiest = 0
  const t0 = performance.now()
  while (streams.some((s) => s.done < s.frames)) {
    // The connected streams with audio left, least served first, at most MAX_BATCH of them.
    const ready = streams
      .filter((s) => s.joins <= tick && s.done < s.frames)
      .sort((a, b) => a.done - b.done)
      .slice(0, MAX_BATCH)
    tick++
    if (ready.length === 0) continue
    busiest = Math.max(busiest, ready.length)
    const batch = ready.map((s) => {
      const at = s.offset + s.done * FRAME
      return {
        key: s.key,
        feeds: { frame: new ort.Tensor("float32", samples.slice(at, at + FRAME), [1, FRAME]) },
      }
    })
    const outs = orThrow(await vad.run(batch, { shared: { sr } }))
    calls++
    for (const s of ready) {
      const out = outs.get(s.key)
      if (out === undefined) continue // never: every stream given has its outputs
      const p = orThrow(tensorScalar(out.output, "float32"))
      out.output.dispose()
      const f = s.done++
      frames++
      if (s.start === undefined) {
        if (p >= START) s.start = f
      } else if (p < END) {
        if (++s.quiet >= HANGOVER) {
          s.segments.push([s.start, f - s.quiet + 1])
          s.start = undefined
          s.quiet = 0
        }
      } else s.quiet = 0
      if (s.done === s.frames) {
        // The stream hung up: close its segment and free its state.
        if (s.start !== undefined) s.segments.push([s.start, s.frames])
        orThrow(vad.delete(s.key))
        const found = s.segments.map(([a, b]) => `${seconds(a)}–${seconds(b)} s`).join(", ")
        console.log(
          `  ${s.key} (from ${(s.offset / sampleRate).toFixed(2)} s, ${seconds(s.frames)} s long): ${found === "" ? "no speech" : `speech ${found}`}`,
        )
      }
    }
  }
  const elapsed = (performance.now() - t0) / 1000
  console.log(
    `  ${frames} frames in ${calls} calls (up to ${busiest} streams per call, ${vad.size} left open): ${(frames / elapsed).toFixed(0)} frames/s, ${((frames * FRAME) / sampleRate / elapsed).toFixed(0)}x real time`,
  )
}

if (import.meta.url === `file://${process.argv[1]}`) await main()
