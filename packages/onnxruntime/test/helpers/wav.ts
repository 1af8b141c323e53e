import { readFileSync } from "node:fs"

/** Reads a 16-bit PCM mono wav file as floats in [-1, 1) and its sample rate. */
export function readWav(path: string): { samples: Float32Array; sampleRate: number } {
  const buf = readFileSync(path)
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength)
  if (buf.toString("ascii", 0, 4) !== "RIFF" || buf.toString("ascii", 8, 12) !== "WAVE")
    throw new Error(`${path}: not a wav file`)
  let at = 12
  let sampleRate = 0
  while (at + 8 <= buf.length) {
    const id = buf.toString("ascii", at, at + 4)
    const size = view.getUint32(at + 4, true)
    if (id === "fmt ") {
      if (
        view.getUint16(at + 8, true) !== 1 ||
        view.getUint16(at + 10, true) !== 1 ||
        view.getUint16(at + 22, true) !== 16
      ) {
        throw new Error(`${path}: expected 16-bit PCM mono`)
      }
      sampleRate = view.getUint32(at + 12, true)
    } else if (id === "data") {
      const n = Math.floor(size / 2)
      const samples = new Float32Array(n)
      for (let i = 0; i < n; i++) samples[i] = view.getInt16(at + 8 + 2 * i, true) / 32768
      return { samples, sampleRate }
    }
    at += 8 + size + (size % 2)
  }
  throw new Error(`${path}: no data chunk`)
}
