/**
 * Streaming voice activity detection with Silero VAD v5 (shipped in @ricky0123/vad-web) on
 * onnxruntime-node, fed as its authors feed it: a StatefulSession carries the model's `state`
 * and, through `sileroContext()`, the last 64 samples of each 32 ms frame, which it prepends to
 * the next one. Speech segments are printed as they close.
 */
import { orThrow } from "@statesaver/core"
import {
  createStatefulSession,
  ortBackend,
  sileroContext,
  tensorScalar,
} from "@statesaver/onnxruntime"
import * as ort from "onnxruntime-node"
import { sileroV5Path, speechFixture } from "./speech.js"

const FRAME = 512
const START = 0.5
const END = 0.35
/** Frames of silence (~250 ms) that close a segment. */
const HANGOVER = 8

/** Runs the VAD over the committed speech fixture and prints the speech segments it finds. */
export async function main(): Promise<void> {
  process.env["ORT_DISABLE_TELEMETRY"] ??= "1"
  const { samples, sampleRate } = speechFixture()
  const model = sileroV5Path()
  const session = await ort.InferenceSession.create(model)
  using vad = orThrow(
    createStatefulSession({
      session,
      backend: ortBackend({ ort }),
      batchSize: 1,
      outputs: ["output"],
      rules: [sileroContext()],
    }),
  )
  const sr = new ort.Tensor("int64", BigInt64Array.from([BigInt(sampleRate)]), [])
  const seconds = (frame: number) => ((frame * FRAME) / sampleRate).toFixed(2)

  console.log(
    `Silero VAD v5, streaming ${(samples.length / sampleRate).toFixed(1)} s of speech in ${FRAME}-sample frames (each after the previous frame's last 64 samples)`,
  )
  let start: number | undefined
  let quiet = 0
  const frames = Math.floor(samples.length / FRAME)
  for (let f = 0; f < frames; f++) {
    const frame = new ort.Tensor("float32", samples.slice(f * FRAME, (f + 1) * FRAME), [1, FRAME])
    const out = orThrow(await vad.run({ frame, sr }))
    const p = orThrow(tensorScalar(out.output, "float32"))
    out.output.dispose()
    if (start === undefined) {
      if (p >= START) start = f
    } else if (p < END) {
      if (++quiet >= HANGOVER) {
        console.log(`  speech ${seconds(start)} s – ${seconds(f - quiet + 1)} s`)
        start = undefined
        quiet = 0
      }
    } else quiet = 0
  }
  if (start !== undefined) console.log(`  speech ${seconds(start)} s – ${seconds(frames)} s`)
}

if (import.meta.url === `file://${process.argv[1]}`) await main()
