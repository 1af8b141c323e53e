/**
 * Streaming voice activity detection with Silero VAD v5 (shipped in @ricky0123/vad-web) on
 * onnxruntime-node: a StatefulSession carries the model's `state` between 32 ms frames, and
 * speech segments are printed as they close.
 */
import { readFileSync } from "node:fs"
import { createRequire } from "node:module"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { orThrow } from "@statesaver/core"
import { createStatefulSession, ortBackend } from "@statesaver/onnxruntime"
import * as ort from "onnxruntime-node"

const FRAME = 512
const START = 0.5
const END = 0.35
/** Frames of silence (~250 ms) that close a segment. */
const HANGOVER = 8

/** Reads a 16-bit PCM mono wav file as floats in [-1, 1). */
function readWav(path: string): { samples: Float32Array; sampleRate: number } {
  const buf = readFileSync(path)
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength)
  let at = 12
  let sampleRate = 0
  while (at + 8 <= buf.length) {
    const id = buf.toString("ascii", at, at + 4)
    const size = view.getUint32(at + 4, true)
    if (id === "fmt ") sampleRate = view.getUint32(at + 12, true)
    if (id === "data") {
      const samples = new Float32Array(size >> 1)
      for (let i = 0; i < samples.length; i++)
        samples[i] = view.getInt16(at + 8 + 2 * i, true) / 32768
      return { samples, sampleRate }
    }
    at += 8 + size + (size % 2)
  }
  throw new Error(`${path}: no data chunk`)
}

/** Runs the VAD over the committed speech fixture and prints the speech segments it finds. */
export async function main(): Promise<void> {
  process.env["ORT_DISABLE_TELEMETRY"] ??= "1"
  const here = dirname(fileURLToPath(import.meta.url))
  const { samples, sampleRate } = readWav(
    join(here, "../../packages/onnxruntime/test/fixtures/speech.wav"),
  )
  const model = join(
    dirname(createRequire(import.meta.url).resolve("@ricky0123/vad-web")),
    "silero_vad_v5.onnx",
  )
  const session = await ort.InferenceSession.create(model)
  using vad = orThrow(
    createStatefulSession({ session, backend: ortBackend({ ort }), batchSize: 1 }),
  )
  const sr = new ort.Tensor("int64", BigInt64Array.from([BigInt(sampleRate)]), [])
  const seconds = (frame: number) => ((frame * FRAME) / sampleRate).toFixed(2)

  console.log(
    `Silero VAD v5, streaming ${(samples.length / sampleRate).toFixed(1)} s of speech in ${FRAME}-sample frames`,
  )
  let start: number | undefined
  let quiet = 0
  const frames = Math.floor(samples.length / FRAME)
  for (let f = 0; f < frames; f++) {
    const input = new ort.Tensor("float32", samples.slice(f * FRAME, (f + 1) * FRAME), [1, FRAME])
    const out = orThrow(await vad.run({ input, sr }))
    const p = (out["output"]?.data as Float32Array)[0] as number
    out["output"]?.dispose()
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
