import {
  BackendError,
  BusyError,
  DisposedError,
  KeyError,
  OptionError,
  StateError,
  type StreamKey,
  formatPath,
} from "@statesaver/core"
import type { OrtTensor } from "./ort-backend.js"
import * as E from "./internal/either.js"
import type { Feeds } from "./session-types.js"
import type { StreamingSession } from "./streaming-session.js"

/**
 * What a tier needs of the session's store (a `StreamingSession`'s `store` has it).
 *
 * @category batching
 * @since 0.3.0
 */
export interface TierStore {
  has(key: StreamKey): boolean
  delete(key: StreamKey): boolean
  snapshot(key: StreamKey): Promise<E.Either<StateError, Uint8Array>>
  restore(key: StreamKey, snapshot: Uint8Array): E.Either<StateError, unknown>
  flush(): Promise<void>
}

/**
 * A persistence tier under a session's store (`createRedisTier` from `@statesaver/redis`
 * implements it). The batcher calls it between runs, never during one.
 *
 * @category batching
 * @since 0.3.0
 */
export interface StreamTier {
  attach(store: TierStore): E.Either<StateError, void>
  /** Makes streams ready before a run; per request, the stream's step count or its error. */
  prepare(
    requests: readonly { readonly key: StreamKey; readonly start?: boolean }[],
  ): Promise<E.Either<StateError, number>[]>
  /** One step ran for each key; per key, its step count once acknowledged, or its error. */
  advanced(keys: readonly StreamKey[]): Promise<E.Either<StateError, number>[]>
  /** The stream ended: written back and released. */
  end(key: StreamKey): Promise<E.Either<StateError, void>>
  /** Forgets the stream everywhere. */
  delete(key: StreamKey): Promise<E.Either<StateError, boolean>>
  /** Periodic work (lease renewal, timed checkpoints). */
  tick(): Promise<void>
  flush(): Promise<E.Either<StateError, void>>
  close(): Promise<E.Either<StateError, void>>
}

/**
 * A push that was aborted (its `signal`) before it ran; `actual` is the signal's reason.
 *
 * @category errors
 * @since 0.3.0
 */
export class AbortedError extends StateError {
  readonly _tag = "AbortedError" as const
  constructor(fields: { readonly path: string; readonly reason: unknown }) {
    super(`stream ${fields.path}: push aborted before it ran`, {
      path: fields.path,
      expected: "a push that was not aborted",
      actual: fields.reason,
    })
  }
}

/**
 * Options of `createStreamBatcher`.
 *
 * @category batching
 * @since 0.3.0
 */
export interface StreamBatcherOptions<O extends string> {
  readonly session: StreamingSession<O>
  /** Where streams live besides this process (Redis). Default: the session's store alone. */
  readonly tier?: StreamTier
  /** Most streams per run (a positive integer). Default 32. */
  readonly maxBatch?: number
  /** Longest a push waits for batch-mates when the batcher is idle, in ms (>= 0). Default 2. */
  readonly maxWaitMs?: number
  /** Most pushes waiting; past it `push` resolves to a `BusyError` (backpressure). Default 1024. */
  readonly maxQueue?: number
  /** Per-call feeds given to every run (Silero's `sr`). */
  readonly shared?: Feeds
  /**
   * Every this many ms, between runs: the session's `sweep()` (idle eviction, needs the
   * session's `idleTtlMs`) and the tier's `tick()`. The timer is `unref`'d. Default: no timer.
   */
  readonly sweepEveryMs?: number
  /** Called with each metric event. */
  readonly onMetric?: (event: BatcherEvent) => void
}

/**
 * Options of one `push`.
 *
 * @category batching
 * @since 0.3.0
 */
export interface PushOptions {
  /** A new sequence: the stream starts at init (what was stored for the key is dropped). */
  readonly start?: boolean
  /** The last frame: after it runs, the stream is written back, released and dropped here. */
  readonly end?: boolean
  /** Aborting it before the push runs resolves it to an `AbortedError`. */
  readonly signal?: AbortSignal
}

/**
 * One push's result: the stream's outputs (yours to dispose) and the index of the step it ran
 * as (0 for the first frame after `start`). After a worker failed, `step` tells a client from
 * which frame the stream resumed.
 *
 * @category batching
 * @since 0.3.0
 */
export interface PushResult<O extends string> {
  readonly outputs: Record<O, OrtTensor>
  readonly step: number
}

/**
 * Metric events of a batcher.
 *
 * @category metrics
 * @since 0.3.0
 */
export type BatcherEvent =
  | { readonly type: "queue"; readonly depth: number }
  | {
      readonly type: "batch"
      readonly size: number
      /** Longest time a push of this batch waited in the queue. */
      readonly waitMs: number
      readonly runMs: number
    }
  | { readonly type: "push"; readonly ms: number; readonly error: string | undefined }
  | { readonly type: "streams"; readonly held: number }

/**
 * Concurrent per-stream requests, batched: `push` queues one frame of one stream and resolves
 * to that stream's outputs. Frames of one stream run in order, never two in one run.
 *
 * @category batching
 * @since 0.3.0
 */
export interface StreamBatcher<O extends string = string> {
  /** Pushes waiting (not running). */
  readonly depth: number
  readonly closed: boolean
  push(
    key: StreamKey,
    feeds: Feeds,
    options?: PushOptions,
  ): Promise<E.Either<StateError, PushResult<O>>>
  /** Back to init before the stream's next frame (after the frames already pushed). */
  reset(key: StreamKey): Promise<E.Either<StateError, void>>
  /** The stream ended: written back (with a tier) and dropped here, after its pushed frames. */
  end(key: StreamKey): Promise<E.Either<StateError, void>>
  /** Forgets the stream here and in the tier, after its pushed frames. */
  delete(key: StreamKey): Promise<E.Either<StateError, boolean>>
  /** The stream's state as snapshot bytes, after its pushed frames. */
  snapshot(key: StreamKey): Promise<E.Either<StateError, Uint8Array>>
  /** Sets the stream's state (a new sequence, step 0), after its pushed frames. */
  restore(key: StreamKey, bytes: Uint8Array): Promise<E.Either<StateError, void>>
  /** Drains the queue, then writes every held stream back (the tier's `close`). Idempotent. */
  close(): Promise<E.Either<StateError, void>>
}

type Job<O extends string> =
  | {
      readonly kind: "push"
      readonly key: StreamKey
      readonly feeds: Feeds
      readonly start: boolean
      readonly end: boolean
      readonly signal: AbortSignal | undefined
      readonly at: number
      readonly resolve: (r: E.Either<StateError, PushResult<O>>) => void
    }
  | {
      readonly kind: "op"
      readonly key: StreamKey
      readonly at: number
      readonly run: () => Promise<void>
    }

/** `setImmediate` where the runtime has it (Node, Bun, Deno), not in browsers. */
const immediate = {
  set: (globalThis as { setImmediate?: (f: () => void) => unknown }).setImmediate,
  clear: (globalThis as { clearImmediate?: (h: unknown) => void }).clearImmediate,
}

const keyOk = (k: unknown): k is StreamKey =>
  typeof k === "string" || (typeof k === "number" && Number.isFinite(k))

/**
 * Creates a batcher over a `StreamingSession`, with or without a tier. Bad options are an
 * `OptionError` naming the option.
 *
 * @example
 * declare const vad: StreamingSession<"output">, sr: OrtTensor, frame: OrtTensor
 * const batcher = orThrow(createStreamBatcher({ session: vad, maxBatch: 32, maxWaitMs: 2, shared: { sr } }))
 * const r = await batcher.push("call-1", { frame }, { start: true }) // a session with sileroContext()
 * if (r._tag === "Right") r.right.outputs.output.dispose()
 * @category batching
 * @since 0.3.0
 */
export function createStreamBatcher<O extends string>(
  options: StreamBatcherOptions<O>,
): E.Either<OptionError | StateError, StreamBatcher<O>> {
  const bad = (path: string, expected: string, actual: unknown) =>
    E.left(new OptionError({ path, expected, actual }))
  if (typeof options !== "object" || options === null)
    return bad("options", "an options object", options)
  const { session, maxBatch = 32, maxWaitMs = 2, maxQueue = 1024, sweepEveryMs } = options
  if (typeof session !== "object" || session === null || typeof session.run !== "function")
    return bad("session", "a StreamingSession", session)
  if (typeof maxBatch !== "number" || !Number.isInteger(maxBatch) || maxBatch < 1)
    return bad("maxBatch", "a positive integer", maxBatch)
  if (typeof maxWaitMs !== "number" || !(maxWaitMs >= 0) || !Number.isFinite(maxWaitMs))
    return bad("maxWaitMs", "a finite number of milliseconds >= 0", maxWaitMs)
  if (typeof maxQueue !== "number" || !Number.isInteger(maxQueue) || maxQueue < 1)
    return bad("maxQueue", "a positive integer", maxQueue)
  if (
    sweepEveryMs !== undefined &&
    (typeof sweepEveryMs !== "number" || !(sweepEveryMs > 0) || !Number.isFinite(sweepEveryMs))
  )
    return bad("sweepEveryMs", "a positive finite number of milliseconds", sweepEveryMs)
  if (options.onMetric !== undefined && typeof options.onMetric !== "function")
    return bad("onMetric", "a function", options.onMetric)
  const tier = options.tier ?? new LocalTier(session)
  for (const m of ["attach", "prepare", "advanced", "end", "delete", "tick", "flush", "close"]) {
    if (typeof (tier as unknown as Record<string, unknown>)[m] !== "function")
      return bad("tier", `a StreamTier (with ${m})`, tier)
  }
  const attached = tier.attach(session.store as unknown as TierStore)
  if (attached._tag === "Left") return attached
  return E.right(
    new Batcher(session, tier, {
      maxBatch,
      maxWaitMs,
      maxQueue,
      shared: options.shared,
      sweepEveryMs,
      onMetric: options.onMetric,
    }),
  )
}

/** The tier of a batcher without one: the session's store, START semantics and step counts. */
class LocalTier implements StreamTier {
  readonly #steps = new Map<StreamKey, number>()
  #store: TierStore | undefined

  constructor(private readonly session: StreamingSession<string>) {}

  attach(store: TierStore): E.Either<StateError, void> {
    this.#store = store
    return E.right(undefined)
  }

  async prepare(
    requests: readonly { readonly key: StreamKey; readonly start?: boolean }[],
  ): Promise<E.Either<StateError, number>[]> {
    return requests.map(({ key, start }) => {
      if (start === true) {
        if (this.session.has(key)) this.session.delete(key)
        this.#steps.set(key, 0)
        return E.right(0)
      }
      const steps = this.#steps.get(key)
      if (steps !== undefined && (steps === 0 || this.session.has(key))) return E.right(steps)
      this.#steps.delete(key)
      return E.left(
        new KeyError({
          path: formatPath([key]),
          expected: "a stream held by the session, or start: true for a new stream",
          actual: key,
          ...(steps === undefined
            ? {}
            : { detail: "the stream was evicted and its state is gone (no tier keeps it)" }),
        }),
      )
    })
  }

  async advanced(keys: readonly StreamKey[]): Promise<E.Either<StateError, number>[]> {
    return keys.map((key) => {
      const steps = (this.#steps.get(key) ?? 0) + 1
      this.#steps.set(key, steps)
      return E.right(steps)
    })
  }

  async end(key: StreamKey): Promise<E.Either<StateError, void>> {
    this.#steps.delete(key)
    const r = this.session.delete(key)
    return r._tag === "Left" ? r : E.right(undefined)
  }

  async delete(key: StreamKey): Promise<E.Either<StateError, boolean>> {
    const had = this.#steps.delete(key)
    const r = this.session.delete(key)
    return r._tag === "Left" ? r : E.right(r.right || had)
  }

  async tick(): Promise<void> {}

  async flush(): Promise<E.Either<StateError, void>> {
    try {
      await this.#store?.flush()
      return E.right(undefined)
    } catch (cause) {
      const first = cause instanceof AggregateError ? (cause.errors[0] as unknown) : cause
      return E.left(
        first instanceof StateError
          ? first
          : new BackendError({
              backend: this.session.store.backend.name,
              operation: "onEvict",
              cause: first,
            }),
      )
    }
  }

  close(): Promise<E.Either<StateError, void>> {
    return this.flush()
  }
}

interface Config {
  readonly maxBatch: number
  readonly maxWaitMs: number
  readonly maxQueue: number
  readonly shared: Feeds | undefined
  readonly sweepEveryMs: number | undefined
  readonly onMetric: ((event: BatcherEvent) => void) | undefined
}

class Batcher<O extends string> implements StreamBatcher<O> {
  /** Per stream, its jobs in order; a stream is in `#order` while it has jobs. */
  readonly #queues = new Map<StreamKey, Job<O>[]>()
  #waiting = 0
  #running = false
  /** The pending start of a cycle, and how to cancel it. */
  #timer: (() => void) | undefined
  #sweep: ReturnType<typeof setInterval> | undefined
  #closed = false
  #closing: Promise<E.Either<StateError, void>> | undefined
  #drained: (() => void) | undefined
  #maintenance = false

  constructor(
    readonly session: StreamingSession<O>,
    readonly tier: StreamTier,
    readonly config: Config,
  ) {
    if (config.sweepEveryMs !== undefined) {
      const t = setInterval(() => {
        this.#maintenance = true
        this.#schedule(0)
      }, config.sweepEveryMs)
      const handle: unknown = t
      if (typeof handle === "object" && handle !== null && "unref" in handle) {
        if (typeof handle.unref === "function") handle.unref()
      }
      this.#sweep = t
    }
  }

  get depth(): number {
    return this.#waiting
  }

  get closed(): boolean {
    return this.#closed
  }

  #emit(event: BatcherEvent): void {
    const f = this.config.onMetric
    if (f === undefined) return
    try {
      f(event)
    } catch {
      // A metrics listener never breaks serving.
    }
  }

  #refuse(key: unknown): StateError | undefined {
    if (this.#closed) return new DisposedError({ what: "StreamBatcher" })
    if (!keyOk(key)) return new KeyError({ expected: "a string or finite number key", actual: key })
    if (this.#waiting >= this.config.maxQueue) {
      return new BusyError({
        operation: "push",
        inFlight: `${this.config.maxQueue} queued requests`,
        detail: "the queue is full (maxQueue): retry later",
      })
    }
    return undefined
  }

  #enqueue(job: Job<O>): void {
    let q = this.#queues.get(job.key)
    if (q === undefined) {
      q = []
      this.#queues.set(job.key, q)
    }
    q.push(job)
    this.#waiting++
    this.#emit({ type: "queue", depth: this.#waiting })
    // A full batch runs now; otherwise the first push waits up to maxWaitMs for batch-mates.
    this.#schedule(this.#queues.size >= this.config.maxBatch ? 0 : this.config.maxWaitMs)
  }

  #schedule(ms: number): void {
    if (this.#running) return
    if (this.#timer !== undefined) {
      if (ms > 0) return
      this.#timer()
    }
    const fire = () => {
      this.#timer = undefined
      void this.#cycle()
    }
    // A full batch runs at once: setTimeout(0) waits a millisecond or more, a run of a small
    // model takes a few.
    if (ms === 0 && typeof immediate.set === "function" && typeof immediate.clear === "function") {
      const handle = immediate.set(fire)
      this.#timer = () => immediate.clear?.(handle)
      return
    }
    const handle = setTimeout(fire, ms)
    this.#timer = () => clearTimeout(handle)
  }

  push(
    key: StreamKey,
    feeds: Feeds,
    options: PushOptions = {},
  ): Promise<E.Either<StateError, PushResult<O>>> {
    const refused = this.#refuse(key)
    if (refused !== undefined) return Promise.resolve(E.left(refused))
    if (typeof options !== "object" || options === null) {
      return Promise.resolve(
        E.left(new OptionError({ path: "options", expected: "push options", actual: options })),
      )
    }
    const { start = false, end = false, signal } = options
    for (const [name, v] of [
      ["start", start],
      ["end", end],
    ] as const) {
      if (typeof v !== "boolean")
        return Promise.resolve(
          E.left(new OptionError({ path: name, expected: "a boolean", actual: v })),
        )
    }
    if (
      signal !== undefined &&
      !(typeof signal === "object" && signal !== null && "aborted" in signal)
    ) {
      return Promise.resolve(
        E.left(new OptionError({ path: "signal", expected: "an AbortSignal", actual: signal })),
      )
    }
    const at = performance.now()
    return new Promise((resolve) => {
      this.#enqueue({
        kind: "push",
        key,
        feeds,
        start,
        end,
        signal,
        at,
        resolve: (r) => {
          this.#emit({
            type: "push",
            ms: performance.now() - at,
            error: r._tag === "Left" ? r.left._tag : undefined,
          })
          resolve(r)
        },
      })
    })
  }

  #op<A>(
    key: StreamKey,
    f: () => Promise<E.Either<StateError, A>>,
  ): Promise<E.Either<StateError, A>> {
    const refused = this.#refuse(key)
    if (refused !== undefined) return Promise.resolve(E.left(refused))
    return new Promise((resolve) => {
      this.#enqueue({
        kind: "op",
        key,
        at: performance.now(),
        run: async () => resolve(await f()),
      })
    })
  }

  reset(key: StreamKey): Promise<E.Either<StateError, void>> {
    return this.#op(key, async () => {
      const [r] = await this.tier.prepare([{ key, start: true }])
      return r === undefined || r._tag === "Right" ? E.right(undefined) : r
    })
  }

  end(key: StreamKey): Promise<E.Either<StateError, void>> {
    return this.#op(key, () => this.tier.end(key))
  }

  delete(key: StreamKey): Promise<E.Either<StateError, boolean>> {
    return this.#op(key, () => this.tier.delete(key))
  }

  snapshot(key: StreamKey): Promise<E.Either<StateError, Uint8Array>> {
    return this.#op(key, async () => {
      const [r] = await this.tier.prepare([{ key }])
      if (r !== undefined && r._tag === "Left") return r
      if (!this.session.has(key)) {
        // Started and never run: its state is init, which a snapshot of a fresh key gives too.
        return E.left(
          new KeyError({
            path: formatPath([key]),
            expected: "a stream that ran a step",
            actual: key,
          }),
        )
      }
      return this.session.snapshot(key)
    })
  }

  restore(key: StreamKey, bytes: Uint8Array): Promise<E.Either<StateError, void>> {
    return this.#op(key, async () => {
      const [r] = await this.tier.prepare([{ key, start: true }])
      if (r !== undefined && r._tag === "Left") return r
      const restored = this.session.restore(key, bytes)
      if (restored._tag === "Left") {
        await this.tier.delete(key)
        return restored
      }
      return E.right(undefined)
    })
  }

  /** Takes the head job of each stream, in arrival order: ops first, then up to maxBatch pushes. */
  #take(): { ops: Job<O>[]; pushes: Extract<Job<O>, { kind: "push" }>[] } {
    const heads: Job<O>[] = []
    for (const q of this.#queues.values()) heads.push(q[0] as Job<O>)
    heads.sort((a, b) => a.at - b.at)
    const ops = heads.filter((j) => j.kind === "op")
    const pushes = heads
      .filter((j): j is Extract<Job<O>, { kind: "push" }> => j.kind === "push")
      .slice(0, this.config.maxBatch)
    for (const j of [...ops, ...pushes]) this.#shift(j.key)
    return { ops, pushes }
  }

  #shift(key: StreamKey): void {
    const q = this.#queues.get(key)
    if (q === undefined) return
    q.shift()
    this.#waiting--
    if (q.length === 0) this.#queues.delete(key)
  }

  async #cycle(): Promise<void> {
    if (this.#running) return
    this.#running = true
    try {
      while (this.#queues.size > 0 || this.#maintenance) {
        if (this.#maintenance) {
          this.#maintenance = false
          const swept = this.session.sweep()
          void swept
          await this.tier.tick()
        }
        const { ops, pushes } = this.#take()
        for (const op of ops) if (op.kind === "op") await op.run()
        if (pushes.length > 0) await this.#runBatch(pushes)
        this.#emit({ type: "queue", depth: this.#waiting })
      }
    } finally {
      this.#running = false
      this.#emit({ type: "streams", held: this.session.size })
      if (this.#queues.size > 0) this.#schedule(0)
      else this.#drained?.()
    }
  }

  async #runBatch(jobs: Extract<Job<O>, { kind: "push" }>[]): Promise<void> {
    const live = jobs.filter((j) => {
      if (j.signal?.aborted !== true) return true
      j.resolve(E.left(new AbortedError({ path: formatPath([j.key]), reason: j.signal.reason })))
      return false
    })
    if (live.length === 0) return
    const prepared = await this.tier.prepare(live.map((j) => ({ key: j.key, start: j.start })))
    const ready: { job: (typeof live)[number]; step: number }[] = []
    for (let i = 0; i < live.length; i++) {
      const r = prepared[i] as E.Either<StateError, number>
      const job = live[i] as (typeof live)[number]
      if (r._tag === "Left") job.resolve(r)
      else ready.push({ job, step: r.right })
    }
    if (ready.length === 0) return
    const now = performance.now()
    const waitMs = Math.max(...ready.map((r) => now - r.job.at))
    const t0 = performance.now()
    const run = await this.#run(ready.map((r) => r.job))
    this.#emit({ type: "batch", size: ready.length, waitMs, runMs: performance.now() - t0 })
    const ran = ready.filter((r) => run.get(r.job.key)?._tag === "Right")
    for (const r of ready) {
      const out = run.get(r.job.key)
      if (out !== undefined && out._tag === "Left") r.job.resolve(out)
    }
    if (ran.length === 0) return
    const acked = await this.tier.advanced(ran.map((r) => r.job.key))
    for (let i = 0; i < ran.length; i++) {
      const { job, step } = ran[i] as (typeof ran)[number]
      const outputs = (run.get(job.key) as { right: Record<O, OrtTensor> }).right
      const a = acked[i] as E.Either<StateError, number>
      if (a._tag === "Left") {
        for (const t of Object.values<OrtTensor>(outputs)) t.dispose()
        job.resolve(a)
        continue
      }
      if (job.end) {
        const ended = await this.tier.end(job.key)
        if (ended._tag === "Left") {
          for (const t of Object.values<OrtTensor>(outputs)) t.dispose()
          job.resolve(ended)
          continue
        }
      }
      job.resolve(E.right({ outputs, step }))
    }
  }

  /**
   * Runs the jobs' streams in one session run. When it fails and holds several streams, each
   * runs alone, so that one stream's bad feed fails only its own push (a failed run changed no
   * stream).
   */
  async #run(
    jobs: readonly Extract<Job<O>, { kind: "push" }>[],
  ): Promise<Map<StreamKey, E.Either<StateError, Record<O, OrtTensor>>>> {
    const shared = this.config.shared
    const opts = shared === undefined ? undefined : { shared }
    const out = new Map<StreamKey, E.Either<StateError, Record<O, OrtTensor>>>()
    const batch = await this.session.run(
      jobs.map((j) => ({ key: j.key, feeds: j.feeds })),
      opts,
    )
    if (batch._tag === "Right") {
      for (const [key, o] of batch.right) out.set(key, E.right(o))
      return out
    }
    if (jobs.length === 1) {
      out.set((jobs[0] as (typeof jobs)[number]).key, batch)
      return out
    }
    for (const j of jobs) {
      const one = await this.session.run([{ key: j.key, feeds: j.feeds }], opts)
      out.set(
        j.key,
        one._tag === "Right" ? E.right(one.right.get(j.key) as Record<O, OrtTensor>) : one,
      )
    }
    return out
  }

  close(): Promise<E.Either<StateError, void>> {
    if (this.#closing !== undefined) return this.#closing
    this.#closed = true
    if (this.#sweep !== undefined) clearInterval(this.#sweep)
    this.#closing = (async () => {
      if (this.#running || this.#queues.size > 0) {
        await new Promise<void>((r) => {
          this.#drained = r
          this.#schedule(0)
        })
      }
      return this.tier.close()
    })()
    return this.#closing
  }
}
