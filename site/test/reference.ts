/**
 * The expected speech segments, computed in Node: Silero VAD v5 on onnxruntime-node, one stream at
 * a time, its state carried by hand (no statesaver), with the Node demo's thresholds written out
 * again here. Each 512-sample frame is fed after the last 64 samples of the previous one (zeros
 * before the first), as Silero's own wrapper feeds the model.
 */
import { readFileSync } from "node:fs"
import { createRequire } from "node:module"
import { dirname, join } from "node:path"
import * as ort from "onnxruntime-node"
import { parseWav } from "../src/audio.js"
import { repoRoot } from "./harness.js"

const FRAME = 512
const CONTEXT = 64

export function speech(): { samples: Float32Array; sampleRate: number } {
  const bytes = readFileSync(join(repoRoot, "packages/onnxruntime/test/fixtures/speech.wav"))
  return parseWav(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength))
}

export function sileroPath(): string {
  const require = createRequire(join(repoRoot, "site/package.json"))
  return join(dirname(require.resolve("@ricky0123/vad-web")), "silero_vad_v5.onnx")
}

export interface Expected {
  readonly probabilities: number[]
  /** Segments in seconds, rounded to 2 decimals as the pages print them. */
  readonly segments: [string, string][]
}

/** Runs each audio alone through the model and returns its probabilities and segments. */
export async function expectedSegments(
  audios: Float32Array[],
  sampleRate: number,
): Promise<Expected[]> {
  const session = await ort.InferenceSession.create(sileroPath(), { intraOpNumThreads: 1 })
  const sr = new ort.Tensor("int64", BigInt64Array.from([BigInt(sampleRate)]), [])
  const out: Expected[] = []
  try {
    for (const audio of audios) {
      let state = new ort.Tensor("float32", new Float32Array(2 * 128), [2, 1, 128])
      const probabilities: number[] = []
      const frames = Math.floor(audio.length / FRAME)
      for (let f = 0; f < frames; f++) {
        const window = new Float32Array(CONTEXT + FRAME)
        if (f > 0) window.set(audio.subarray(f * FRAME - CONTEXT, f * FRAME))
        window.set(audio.subarray(f * FRAME, (f + 1) * FRAME), CONTEXT)
        const input = new ort.Tensor("float32", window, [1, CONTEXT + FRAME])
        const r = await session.run({ input, state, sr })
        probabilities.push((r["output"]?.data as Float32Array)[0] as number)
        state = r["stateN"] as typeof state
      }
      // Open at p >= 0.5; close after 8 frames in a row below 0.35, at the first of them.
      const segments: [number, number][] = []
      let open = -1
      let below = 0
      probabilities.forEach((p, f) => {
        if (open < 0) {
          if (p >= 0.5) open = f
          return
        }
        below = p < 0.35 ? below + 1 : 0
        if (below === 8) {
          segments.push([open, f - 7])
          open = -1
          below = 0
        }
      })
      if (open >= 0) segments.push([open, frames])
      const sec = (f: number) => ((f * FRAME) / sampleRate).toFixed(2)
      out.push({ probabilities, segments: segments.map(([a, b]) => [sec(a), sec(b)]) })
    }
  } finally {
    await session.release()
  }
  return out
}

/** "speech 0.67–1.57 s, 1.89–3.23 s" or "no speech" → [["0.67", "1.57"], ["1.89", "3.23"]]. */
export function parseSegments(text: string): [string, string][] {
  return [...text.matchAll(/(\d+\.\d\d)\s*s?\s*–\s*(\d+\.\d\d)\s*s/g)].map(
    (m) => [m[1], m[2]] as [string, string],
  )
}
