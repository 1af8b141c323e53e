/** The speech recording and the Silero VAD model the audio examples and benchmarks use. */
import { createRequire } from "node:module"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { readWav } from "../../packages/onnxruntime/test/helpers/wav.js"

/** The committed 16 kHz speech fixture (espeak-ng), as floats in [-1, 1). */
export function speechFixture(): { samples: Float32Array; sampleRate: number } {
  const here = dirname(fileURLToPath(import.meta.url))
  return readWav(join(here, "../../packages/onnxruntime/test/fixtures/speech.wav"))
}

/** Path of Silero VAD v5 as shipped inside @ricky0123/vad-web. */
export function sileroV5Path(): string {
  return join(
    dirname(createRequire(import.meta.url).resolve("@ricky0123/vad-web")),
    "silero_vad_v5.onnx",
  )
}
