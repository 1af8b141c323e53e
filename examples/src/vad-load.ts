/**
 * A load generator for the VAD server: `streams` clients, each sending the speech fixture from
 * its own offset frame by frame (the next frame after the previous answer), bounded in frames
 * and seconds. Prints p50/p99 latency and frames/s, and checks every answer's step.
 *
 *   tsx src/vad-load.ts --url http://127.0.0.1:8080 --streams 64 --frames 200 --seconds 30
 */
import { speechFixture } from "./speech.js"

const FRAME = 512

export interface LoadOptions {
  readonly url: string
  readonly streams: number
  readonly frames: number
  readonly seconds: number
  /** Prefix of the stream keys (runs that must not share streams use different ones). */
  readonly prefix: string
}

export interface LoadResult {
  readonly frames: number
  readonly seconds: number
  readonly p50: number
  readonly p99: number
  /** Answers that were errors, by tag (retried, except a KeyError: that stream stops). */
  readonly errors: Record<string, number>
  /** Frames answered with a step other than the one sent (a stream that went back). */
  readonly stepMismatches: number
  /** Per stream, the speech probability of each frame. */
  readonly probabilities: number[][]
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

/** Frame `i` of stream `s`, as the bytes the server takes. */
export function frameBytes(samples: Float32Array, s: number, i: number): Buffer {
  const frames = Math.floor(samples.length / FRAME)
  const at = ((s * 13 + i) % frames) * FRAME
  const out = Buffer.alloc(FRAME * 4)
  for (let n = 0; n < FRAME; n++) out.writeFloatLE(samples[at + n] as number, n * 4)
  return out
}

export async function load(options: LoadOptions): Promise<LoadResult> {
  const { samples } = speechFixture()
  const latencies: number[] = []
  const errors: Record<string, number> = {}
  let stepMismatches = 0
  let done = 0
  const deadline = performance.now() + options.seconds * 1000
  const probabilities: number[][] = Array.from({ length: options.streams }, () => [])
  const t0 = performance.now()
  await Promise.all(
    Array.from({ length: options.streams }, async (_, s) => {
      const key = `${options.prefix}${s}`
      for (let i = 0; i < options.frames && performance.now() < deadline;) {
        const q = new URLSearchParams()
        if (i === 0) q.set("start", "1")
        if (i === options.frames - 1) q.set("end", "1")
        const t = performance.now()
        let status = 0
        let body: { step?: number; probability?: number; error?: string; message?: string } = {}
        try {
          const res = await fetch(`${options.url}/v1/streams/${key}/frames?${q}`, {
            method: "POST",
            body: new Uint8Array(frameBytes(samples, s, i)),
          })
          status = res.status
          body = (await res.json()) as typeof body
        } catch (e) {
          body = { error: e instanceof Error ? e.name : "network" }
        }
        if (status !== 200) {
          const tag = body.error ?? String(status)
          errors[tag] = (errors[tag] ?? 0) + 1
          // An unknown stream lost its state: this client gives up on it.
          if (tag === "KeyError") {
            if (process.env["VAD_LOAD_VERBOSE"]) console.error(`${key} frame ${i}: ${body.message}`)
            break
          }
          await sleep(20) // a killed worker: the stream comes back on another
          continue
        }
        latencies.push(performance.now() - t)
        if (body.step !== i) stepMismatches++
        probabilities[s]?.push(body.probability as number)
        done++
        i++
      }
    }),
  )
  const seconds = (performance.now() - t0) / 1000
  latencies.sort((a, b) => a - b)
  const pct = (p: number) =>
    latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? 0
  return {
    frames: done,
    seconds,
    p50: pct(0.5),
    p99: pct(0.99),
    errors,
    stepMismatches,
    probabilities,
  }
}

export async function main(argv = process.argv.slice(2)): Promise<void> {
  const arg = (name: string, fallback: string) => {
    const i = argv.indexOf(`--${name}`)
    return i < 0 ? fallback : (argv[i + 1] as string)
  }
  const r = await load({
    url: arg("url", "http://127.0.0.1:8080"),
    streams: Number(arg("streams", "64")),
    frames: Number(arg("frames", "200")),
    seconds: Number(arg("seconds", "30")),
    prefix: arg("prefix", `load-${process.pid}-`),
  })
  console.log(
    `${r.frames} frames in ${r.seconds.toFixed(1)} s: ${(r.frames / r.seconds).toFixed(0)} frames/s, latency p50 ${r.p50.toFixed(1)} ms, p99 ${r.p99.toFixed(1)} ms; retried errors ${JSON.stringify(r.errors)}; step mismatches ${r.stepMismatches}`,
  )
}

if (import.meta.url === `file://${process.argv[1]}`) await main()
