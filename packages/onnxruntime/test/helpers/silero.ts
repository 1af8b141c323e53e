// Silero VAD as shipped in @ricky0123/vad-web, and its published usage as an oracle: vad-web's
// own `Silero` model class (dist/models/silero.js), which feeds the model the previous frame's
// last 64 samples ⧺ the 512-sample frame. None of statesaver's code is in the oracle.
import { readFileSync } from "node:fs"
import { createRequire } from "node:module"
import { dirname, join } from "node:path"
import * as ortWeb from "onnxruntime-web"

const require = createRequire(import.meta.url)

/** The directory of vad-web's dist, which holds the Silero models. */
export const vadDist = dirname(require.resolve("@ricky0123/vad-web"))

/** Samples per frame at 16 kHz. */
export const FRAME = 512

interface VadWebSilero {
  process(frame: Float32Array): Promise<{ isSpeech: number }>
}
const { Silero } = require(join(vadDist, "models", "silero.js")) as {
  Silero: { new: (ort: unknown, fetch: () => Promise<ArrayBuffer>) => Promise<VadWebSilero> }
}

/** The bytes of a model file shipped in vad-web (`silero_vad_v5.onnx`, ...). */
export const modelBytes = (file: string): Uint8Array => readFileSync(join(vadDist, file))

/**
 * Speech probabilities of one stream from vad-web's Silero class on onnxruntime-web, a fresh
 * instance (zero state, zero context) per call.
 */
export async function vadWebProbabilities(
  file: string,
  stream: readonly Float32Array[],
): Promise<number[]> {
  const bytes = modelBytes(file)
  const model = await Silero.new(ortWeb, async () => Uint8Array.from(bytes).buffer)
  const out: number[] = []
  // vad-web keeps a copy of the frame tail; pass copies so nothing is shared with the caller.
  for (const f of stream) out.push((await model.process(f.slice())).isSpeech)
  return out
}

/** `count` frames of `samples` from `offset` (zero-padded past the end). */
export function framesOf(samples: Float32Array, offset: number, count: number): Float32Array[] {
  return Array.from({ length: count }, (_, i) => {
    const f = new Float32Array(FRAME)
    f.set(samples.subarray(offset + i * FRAME, Math.min(samples.length, offset + (i + 1) * FRAME)))
    return f
  })
}

/** Frames stacked as one `[rows, 512]` float32 tensor of `ort` (the `frame` feed). */
export function frameTensor(
  ort: { Tensor: typeof ortWeb.Tensor },
  rows: readonly Float32Array[],
): ortWeb.Tensor {
  const data = new Float32Array(rows.length * FRAME)
  rows.forEach((r, i) => data.set(r, i * FRAME))
  return new ort.Tensor("float32", data, [rows.length, FRAME])
}

/** The largest absolute difference between two equally long lists of probabilities. */
export function worstGap(a: readonly number[], b: readonly number[]): number {
  if (a.length !== b.length) return Number.POSITIVE_INFINITY
  return a.reduce((worst, p, i) => Math.max(worst, Math.abs(p - (b[i] as number))), 0)
}
