/** Timing helpers for ratio benchmarks: both sides run interleaved, in one process. */

/** Median of a list of numbers. */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const mid = s.length >> 1
  return s.length % 2 === 1 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2
}

/**
 * The order of a round's runs of `n` sides, `repeats` runs each, such that every side follows
 * every other side equally often: the run before leaves garbage (and caches) that the next one
 * meets, so a side that always followed the same one would carry that side's cost. For a prime
 * `n` (2 and 3 here) the blocks `0, d, 2d, ... (mod n)` for `d = 1 ... n - 1` visit each ordered
 * pair once (round after round, the last run is followed by the first); `repeats` must be a
 * multiple of `n - 1`. Otherwise the sides take turns in order.
 */
export function balancedOrder(n: number, repeats: number): number[] {
  const prime = n >= 2 && Array.from({ length: n - 2 }, (_, i) => i + 2).every((d) => n % d !== 0)
  if (!prime || repeats % (n - 1) !== 0) return Array.from({ length: n * repeats }, (_, k) => k % n)
  const cycle = Array.from({ length: n - 1 }, (_, d) =>
    Array.from({ length: n }, (_, i) => (i * (d + 1)) % n),
  ).flat()
  return Array.from({ length: repeats / (n - 1) }, () => cycle).flat()
}

/** The runtimes a benchmark of both CPU runtimes can run: onnxruntime-node, onnxruntime-web (wasm). */
export const RUNTIMES = ["node", "web"] as const

/**
 * The runtimes to run a benchmark on, in order: `given` (`STATESAVER_BENCH_RUNTIMES`, names
 * separated by commas), else both. Throws an error naming the variable for a name that is not a
 * runtime, a repeated one, or none.
 */
export function benchRuntimes(given: string | undefined): (typeof RUNTIMES)[number][] {
  if (given === undefined) return [...RUNTIMES]
  const names = given.split(",").map((n) => n.trim())
  const known = (n: string): n is (typeof RUNTIMES)[number] =>
    (RUNTIMES as readonly string[]).includes(n)
  if (names.length === 0 || !names.every(known) || new Set(names).size !== names.length)
    throw new Error(
      `STATESAVER_BENCH_RUNTIMES must list distinct runtimes of ${RUNTIMES.join(", ")}, separated by commas; got ${JSON.stringify(given)}`,
    )
  return names as (typeof RUNTIMES)[number][]
}

/**
 * Nanoseconds spent in the `run` of sessions given to `timedRuns` so far: what a step spends
 * outside them is its own work.
 */
let inModel = 0

/** `session`, its `run` timed into the count `modelMicros` reads. */
export function timedRuns<S extends { run: (...args: never[]) => Promise<unknown> }>(
  session: S,
): S {
  const run = session.run.bind(session) as (...args: unknown[]) => Promise<unknown>
  ;(session as { run: unknown }).run = async (...args: unknown[]) => {
    const t0 = process.hrtime.bigint()
    try {
      return await run(...args)
    } finally {
      inModel += Number(process.hrtime.bigint() - t0)
    }
  }
  return session
}

/** Microseconds spent in the runs of `timedRuns` sessions so far. */
export const modelMicros = (): number => inModel / 1000

/** Nanoseconds per call of `fn`, timed over batches of `inner` calls. */
function timeBatch(fn: () => unknown, inner: number): number {
  const t0 = process.hrtime.bigint()
  for (let i = 0; i < inner; i++) fn()
  return Number(process.hrtime.bigint() - t0) / inner
}

/** Calls per batch so that one batch takes about `targetMs`. */
function calibrate(fn: () => unknown, targetMs: number): number {
  let inner = 1
  for (;;) {
    const ns = timeBatch(fn, inner) * inner
    if (ns > targetMs * 1e6 || inner > 1 << 24)
      return Math.max(1, Math.round((inner * targetMs * 1e6) / Math.max(ns, 1)))
    inner *= 2
  }
}

export interface Comparison {
  readonly name: string
  /** Median ns per call of the baseline and of the subject. */
  readonly baselineNs: number
  readonly subjectNs: number
  /** baseline time / subject time: throughput of the subject relative to the baseline. */
  readonly throughputRatio: number
}

/**
 * Runs `baseline` and `subject` in alternating rounds and compares their median times.
 * `throughputRatio` > 1 means the subject is faster.
 */
export function compareSync(
  name: string,
  baseline: () => unknown,
  subject: () => unknown,
  { rounds = 15, batchMs = 20 } = {},
): Comparison {
  for (let i = 0; i < 3; i++) {
    timeBatch(baseline, 50)
    timeBatch(subject, 50)
  }
  const nb = calibrate(baseline, batchMs)
  const ns = calibrate(subject, batchMs)
  const b: number[] = []
  const s: number[] = []
  for (let r = 0; r < rounds; r++) {
    b.push(timeBatch(baseline, nb))
    s.push(timeBatch(subject, ns))
  }
  const baselineNs = median(b)
  const subjectNs = median(s)
  return { name, baselineNs, subjectNs, throughputRatio: baselineNs / subjectNs }
}

/** Async variant: `subject` and `baseline` are awaited one call at a time. */
export async function compareAsync(
  name: string,
  baseline: () => Promise<unknown>,
  subject: () => Promise<unknown>,
  { rounds = 15, callsPerRound = 20, warmup = 20 } = {},
): Promise<Comparison> {
  for (let i = 0; i < warmup; i++) {
    await baseline()
    await subject()
  }
  const b: number[] = []
  const s: number[] = []
  const time = async (fn: () => Promise<unknown>) => {
    const t0 = process.hrtime.bigint()
    for (let i = 0; i < callsPerRound; i++) await fn()
    return Number(process.hrtime.bigint() - t0) / callsPerRound
  }
  for (let r = 0; r < rounds; r++) {
    b.push(await time(baseline))
    s.push(await time(subject))
  }
  const baselineNs = median(b)
  const subjectNs = median(s)
  return { name, baselineNs, subjectNs, throughputRatio: baselineNs / subjectNs }
}

const fmt = (ns: number): string =>
  ns >= 1e6
    ? `${(ns / 1e6).toFixed(2)} ms`
    : ns >= 1e3
      ? `${(ns / 1e3).toFixed(2)} µs`
      : `${ns.toFixed(0)} ns`

/** Prints one comparison as a table row. */
export function report(c: Comparison, extra = ""): void {
  console.log(
    `${c.name.padEnd(58)} baseline ${fmt(c.baselineNs).padStart(10)}  statesaver ${fmt(c.subjectNs).padStart(10)}  ratio ${c.throughputRatio.toFixed(2)}${extra}`,
  )
}
