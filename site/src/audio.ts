/**
 * The audio the streams page plays: the repository's speech recording (16 kHz, 16-bit PCM mono),
 * shifted, mixed and attenuated into several streams that join and leave at set times.
 */

/** Reads a 16-bit PCM mono wav file as floats in [-1, 1) and its sample rate. */
export function parseWav(bytes: ArrayBuffer): { samples: Float32Array; sampleRate: number } {
  const view = new DataView(bytes)
  const ascii = (at: number, n: number) =>
    String.fromCharCode(...new Uint8Array(bytes, at, n).values())
  if (ascii(0, 4) !== "RIFF" || ascii(8, 4) !== "WAVE") throw new Error("not a wav file")
  let at = 12
  let sampleRate = 0
  while (at + 8 <= bytes.byteLength) {
    const id = ascii(at, 4)
    const size = view.getUint32(at + 4, true)
    if (id === "fmt ") {
      if (
        view.getUint16(at + 8, true) !== 1 ||
        view.getUint16(at + 10, true) !== 1 ||
        view.getUint16(at + 22, true) !== 16
      ) {
        throw new Error("expected 16-bit PCM mono")
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
  throw new Error("no data chunk")
}

/** A seeded PRNG (mulberry32): uniform numbers in [0, 1), the same sequence for a seed everywhere. */
export function rng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** One scripted stream: what it plays and when it connects. */
export interface StreamPlan {
  readonly key: string
  /** What the stream is, in a few words. */
  readonly label: string
  /** Tick (one frame time) at which the stream connects; it leaves when its audio ends. */
  readonly joins: number
  /** Its audio at the recording's sample rate. */
  readonly audio: Float32Array
}

/** `length` samples of `source` from `from` (negative: leading silence), zero past its end. */
function window(source: Float32Array, from: number, length: number, gain = 1): Float32Array {
  const out = new Float32Array(length)
  for (let i = 0; i < length; i++) {
    const j = from + i
    if (j >= 0 && j < source.length) out[i] = gain * (source[j] as number)
  }
  return out
}

/**
 * The scripted streams: the recording as it is, shifted, cut, mixed with a delayed copy of itself,
 * quieter under noise, and a late joiner. Pure: the tests build the same audio to compute the
 * expected segments.
 */
export function streamPlans(speech: Float32Array, sampleRate: number): StreamPlan[] {
  const s = (seconds: number) => Math.round(seconds * sampleRate)
  const n = speech.length
  const noise = rng(7)
  const quiet = window(speech, 0, n, 0.4)
  for (let i = 0; i < n; i++) quiet[i] = (quiet[i] as number) + 0.01 * (2 * noise() - 1)
  const mixed = window(speech, s(2.5), n)
  const echo = window(speech, 0, n, 0.6)
  for (let i = 0; i < n; i++) mixed[i] = (mixed[i] as number) + (echo[i] as number)
  return [
    { key: "recording", label: "the recording as it is", joins: 0, audio: speech },
    {
      key: "shifted",
      label: "1.5 s of silence, then the recording",
      joins: 10,
      audio: window(speech, -s(1.5), n),
    },
    {
      key: "cut",
      label: "from 4.5 s in, 4 s long",
      joins: 30,
      audio: window(speech, s(4.5), s(4)),
    },
    {
      key: "mixed",
      label: "two talkers: 2.5 s in, over the start at 60%",
      joins: 45,
      audio: mixed,
    },
    { key: "noisy", label: "at 40% under white noise", joins: 60, audio: quiet },
    {
      key: "late",
      label: "joins late: the first 3 s",
      joins: 150,
      audio: window(speech, 0, s(3)),
    },
  ]
}
