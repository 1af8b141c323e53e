/**
 * What the decoder benchmarks share: the cache's input and output names, interleaved rounds of
 * steps with medians of per-round ratios, and a run per ONNX Runtime in a child process each.
 */
import { spawnSync } from "node:child_process"
import { type PerformanceEntry, PerformanceObserver, performance } from "node:perf_hooks"
import { fileURLToPath } from "node:url"
import * as ortNode from "onnxruntime-node"
import * as ortWeb from "onnxruntime-web"
import { orThrow } from "@statesaver/core"
import type { StatefulSession } from "@statesaver/onnxruntime"
import type { Runtime } from "../../packages/onnxruntime/test/helpers/harness.js"
import { balancedOrder, benchRuntimes, median, modelMicros } from "./harness.js"

/** `past_key_values.N.key/value` of `layers` layers, and the `present.N.*` outputs they pair with. */
export function cacheNames(layers: number): { past: string[]; present: string[] } {
  const past = Array.from({ length: layers }, (_, l) => [
    `past_key_values.${l}.key`,
    `past_key_values.${l}.value`,
  ]).flat()
  return { past, present: past.map((p) => p.replace("past_key_values", "present")) }
}

/**
 * A function that puts a growing-cache session back to its state now, as a hand-written loop goes
 * back to its first tensors: new tensors over fresh copies of today's arrays, `save`d, nothing
 * decoded per call. Copies, because `select` moves rows within the arrays the session holds.
 */
export function startOver(ort: Runtime, s: StatefulSession<string>): () => void {
  const first = Object.entries(s.state()).map(
    ([name, t]) => [name, t.type, (t.data as Float32Array).slice(), t.dims] as const,
  )
  return () =>
    void orThrow(
      s.save(
        Object.fromEntries(
          first.map(([name, type, data, dims]) => [
            name,
            new ort.Tensor(type as "float32", data.slice(), dims),
          ]),
        ),
      ),
    )
}

/** One way of running steps: `rewind` (untimed) returns it to its start. */
export interface Side {
  readonly step: (t: number) => Promise<void>
  readonly rewind: () => void
}

/** Nanoseconds of `steps` steps after an untimed `rewind`, those in the model, and when it ran. */
async function run(
  side: Side,
  steps: number,
): Promise<{ ns: number; model: number; from: number; to: number; sys: number; faults: number }> {
  side.rewind()
  const m0 = modelMicros()
  const from = performance.now()
  const u0 = process.resourceUsage()
  const t0 = process.hrtime.bigint()
  for (let t = 0; t < steps; t++) await side.step(t)
  const ns = Number(process.hrtime.bigint() - t0)
  const u1 = process.resourceUsage()
  return {
    ns,
    model: (modelMicros() - m0) * 1000,
    from,
    to: performance.now(),
    sys: u1.systemCPUTime - u0.systemCPUTime,
    faults: u1.minorPageFault - u0.minorPageFault,
  }
}

/**
 * Runs of `steps` steps per side in a round where one run is too short a sample
 * (`STATESAVER_BENCH_REPEATS` overrides it). A growing cache's model hands back its whole new
 * cache at every step, and on onnxruntime-node that brings a collection of a few ms every 30–40
 * MB: with one run per side in a round, whether a run holds one moves the round's ratio by up to
 * 20%. With eight, each side's share of them is what its own garbage makes.
 */
export const REPEATS = Number(process.env["STATESAVER_BENCH_REPEATS"] ?? 8)
// Even: the derived inputs' three sides follow one another equally only over pairs of runs.
if (!Number.isSafeInteger(REPEATS) || REPEATS < 2 || REPEATS % 2 !== 0)
  throw new Error(`STATESAVER_BENCH_REPEATS must be a positive even integer, got ${REPEATS}`)

/** Steps each side runs before the timed rounds (`STATESAVER_BENCH_WARMUP` overrides it). */
const WARMUP_STEPS = Number(process.env["STATESAVER_BENCH_WARMUP"] ?? 2000)

/**
 * Each side's median µs/step and its median ratio to side 0 over `rounds` rounds; in a round,
 * every side runs `repeats` times, in the `balancedOrder` (which side starts rotates from round
 * to round): a per-round ratio cancels the machine's load drifting between rounds. `own`: each
 * side's median µs per step outside the model's run (the whole step unless its session is
 * `timedRuns`), the part of a step a library can change. `spent`: what the collector and the kernel
 * spent in each side's timed runs, from `PerformanceObserver` and `process.resourceUsage()`: a
 * side that made more garbage or touched more new memory would show it here.
 */
export async function interleave(
  sides: readonly Side[],
  steps: number,
  rounds: number,
  repeats = 1,
): Promise<{
  us: number[]
  ratio: number[]
  own: number[]
  /**
   * Per side: µs of collections per step, major and minor collections per run of `steps` steps,
   * µs of system CPU time and minor page faults per step.
   */
  spent: { us: number; major: number; minor: number; sys: number; faults: number }[]
}> {
  // V8 optimizes a session's code only after a few thousand steps: each side warms up past that
  // first, so that the rounds compare steady states.
  const warmup = Math.ceil(WARMUP_STEPS / steps)
  for (const side of sides) for (let w = 0; w < warmup; w++) await run(side, steps)
  const times = sides.map(() => [] as number[])
  const own = sides.map(() => [] as number[])
  const collections = new GcLog()
  const kernel = sides.map(() => ({ sys: 0, faults: 0 }))
  const n = sides.length
  const order = balancedOrder(n, repeats)
  for (let r = 0; r < rounds; r++) {
    const round = sides.map(() => ({ ns: 0, model: 0 }))
    for (const k of order) {
      const i = (k + r) % n
      const out = await run(sides[i] as Side, steps)
      const sum = round[i] as { ns: number; model: number }
      sum.ns += out.ns
      sum.model += out.model
      collections.window(i, out.from, out.to)
      const spent = kernel[i] as { sys: number; faults: number }
      spent.sys += out.sys
      spent.faults += out.faults
    }
    const per = steps * repeats * 1000
    round.forEach(({ ns, model }, i) => {
      ;(times[i] as number[]).push(ns / per)
      ;(own[i] as number[]).push((ns - model) / per)
    })
  }
  const base = times[0] as number[]
  const runs = rounds * repeats
  return {
    us: times.map(median),
    ratio: times.map((t) => median(t.map((x, r) => x / (base[r] as number)))),
    own: own.map(median),
    spent: (await collections.done(n)).map((g, i) => ({
      sys: (kernel[i] as { sys: number }).sys / (runs * steps),
      faults: (kernel[i] as { faults: number }).faults / (runs * steps),
      us: (g.ms * 1000) / (runs * steps),
      major: g.major / runs,
      minor: g.minor / runs,
    })),
  }
}

/** Garbage collections per side: their time and count, from the timed rounds' windows. */
class GcLog {
  readonly #entries: PerformanceEntry[] = []
  readonly #windows: { side: number; from: number; to: number }[] = []
  readonly #observer = new PerformanceObserver((list) => this.#entries.push(...list.getEntries()))
  constructor() {
    this.#observer.observe({ entryTypes: ["gc"] })
  }
  window(side: number, from: number, to: number): void {
    this.#windows.push({ side, from, to })
  }
  /** Per side: ms of collections, and how many were major (mark-compact) and minor (scavenges). */
  async done(sides: number): Promise<{ ms: number; major: number; minor: number }[]> {
    // Entries arrive after the event loop turns.
    await new Promise((resolve) => setTimeout(resolve, 50))
    this.#observer.disconnect()
    const out = Array.from({ length: sides }, () => ({ ms: 0, major: 0, minor: 0 }))
    for (const e of this.#entries) {
      const w = this.#windows.find((w) => e.startTime >= w.from && e.startTime < w.to)
      if (w === undefined) continue
      const o = out[w.side] as { ms: number; major: number; minor: number }
      o.ms += e.duration
      const kind = (e as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind
      if (kind === 1) o.minor++
      // Mark-compact work: whole (2) or incremental marking (4).
      else if (kind === 2 || kind === 4) o.major++
    }
    return out
  }
}

/**
 * A part measured in several processes: a comparison's ratio also depends on the process (where
 * each side's arrays lie in memory, how the heap grew), so one process's ratio is one sample.
 */
export interface Repeated {
  /** Processes per repeated part. */
  readonly processes: number
  /** Whether a part is repeated. */
  readonly applies: (part: Readonly<Record<string, string>>) => boolean
  /** What is printed for a repeated part, from each of its processes' output. */
  readonly combine: (outputs: readonly string[]) => string
}

/**
 * Runs `bench` on onnxruntime-node and onnxruntime-web (wasm, one thread), or on those that
 * `STATESAVER_BENCH_RUNTIMES` lists (`node`, `web`), each in a child process of `moduleUrl` (the
 * two runtimes do not share a process well), after printing `title`.
 * With `parts`, one child per runtime and part, each with that part's variables set: parts that
 * would share a session's code in one process (a growing and a fixed cache) measure apart. With
 * `repeated`, the parts it applies to run in that many processes each.
 */
export async function perRuntime(
  moduleUrl: string,
  title: string,
  bench: (label: string, ort: Runtime, provider: string) => Promise<void>,
  parts: readonly Readonly<Record<string, string>>[] = [{}],
  repeated?: Repeated,
): Promise<void> {
  process.env["ORT_DISABLE_TELEMETRY"] ??= "1"
  const only = process.env["STATESAVER_BENCH_RUNTIME"]
  if (only === undefined) {
    const runtimes = benchRuntimes(process.env["STATESAVER_BENCH_RUNTIMES"])
    console.log(title)
    for (const runtime of runtimes) {
      for (const part of parts) {
        const times = repeated?.applies(part) === true ? repeated.processes : 1
        const outputs: string[] = []
        for (let i = 0; i < times; i++) {
          const child = spawnSync(process.execPath, ["--import", "tsx", fileURLToPath(moduleUrl)], {
            encoding: "utf8",
            env: { ...process.env, ...part, STATESAVER_BENCH_RUNTIME: runtime },
          })
          if (child.status !== 0) process.stderr.write(child.stderr)
          outputs.push(child.stdout)
        }
        process.stdout.write(times > 1 && repeated ? repeated.combine(outputs) : outputs.join(""))
      }
    }
    return
  }
  if (only === "web") {
    ortWeb.env.wasm.numThreads = 1
    await bench("onnxruntime-web (wasm)", ortWeb as unknown as Runtime, "wasm")
  } else await bench("onnxruntime-node (cpu)", ortNode as unknown as Runtime, "cpu")
}
