/**
 * What the decoder benchmarks share: the cache's input and output names, interleaved rounds of
 * steps with medians of per-round ratios, and a run per ONNX Runtime in a child process each.
 */
import { spawnSync } from "node:child_process"
import { fileURLToPath } from "node:url"
import * as ortNode from "onnxruntime-node"
import * as ortWeb from "onnxruntime-web"
import { orThrow } from "@statesaver/core"
import type { StatefulSession } from "@statesaver/onnxruntime"
import type { Runtime } from "../../packages/onnxruntime/test/helpers/harness.js"
import { median, modelMicros } from "./harness.js"

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

/** Microseconds per step of `steps` steps, after an untimed `rewind`, and those in the model. */
async function round(side: Side, steps: number): Promise<{ us: number; model: number }> {
  side.rewind()
  const m0 = modelMicros()
  const t0 = process.hrtime.bigint()
  for (let t = 0; t < steps; t++) await side.step(t)
  const us = Number(process.hrtime.bigint() - t0) / steps / 1000
  return { us, model: (modelMicros() - m0) / steps }
}

/** Steps each side runs before the timed rounds (`STATESAVER_BENCH_WARMUP` overrides it). */
const WARMUP_STEPS = Number(process.env["STATESAVER_BENCH_WARMUP"] ?? 2000)

/**
 * Each side's median µs/step and its median ratio to side 0 over `rounds` rounds in which every
 * side runs once (the order rotates): a per-round ratio cancels the machine's load drifting
 * between rounds. `own`: each side's median µs per step outside the model's run (the whole step
 * unless its session is `timedRuns`), the part of a step a library can change.
 */
export async function interleave(
  sides: readonly Side[],
  steps: number,
  rounds: number,
): Promise<{ us: number[]; ratio: number[]; own: number[] }> {
  // V8 optimizes a session's code only after a few thousand steps: each side warms up past that
  // first, so that the rounds compare steady states.
  const warmup = Math.ceil(WARMUP_STEPS / steps)
  for (const side of sides) for (let w = 0; w < warmup; w++) await round(side, steps)
  const times = sides.map(() => [] as number[])
  const own = sides.map(() => [] as number[])
  for (let r = 0; r < rounds; r++)
    for (let k = 0; k < sides.length; k++) {
      const i = (r + k) % sides.length
      const { us, model } = await round(sides[i] as Side, steps)
      ;(times[i] as number[]).push(us)
      ;(own[i] as number[]).push(us - model)
    }
  const base = times[0] as number[]
  return {
    us: times.map(median),
    ratio: times.map((t) => median(t.map((x, r) => x / (base[r] as number)))),
    own: own.map(median),
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
 * Runs `bench` on onnxruntime-node and onnxruntime-web (wasm, one thread), each in a child
 * process of `moduleUrl` (the two runtimes do not share a process well), after printing `title`.
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
    console.log(title)
    for (const runtime of ["node", "web"]) {
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
