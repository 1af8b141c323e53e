import { randomUUID } from "node:crypto"
import { hostname } from "node:os"
import {
  BackendError,
  KeyError,
  OptionError,
  SnapshotFormatError,
  StateError,
  type StreamKey,
  formatPath,
} from "@statesaver/core"
import { RESP_TYPES } from "redis"
import { LeaseError } from "./errors.js"
import * as E from "./internal/either.js"
import { SCRIPTS, type Script, type ScriptRunner, runScript } from "./internal/scripts.js"
import { keySlot } from "./internal/slot.js"

/**
 * What the tier needs of a store: a core `StateStore`, or the `store` of an ONNX Runtime
 * `StreamingSession` (or of anything built on a store, like the tfjs `applyStreams`).
 *
 * @category tier
 * @since 0.3.0
 */
export interface TierStore {
  has(key: StreamKey): boolean
  /**
   * Whether the store holds the key, without running its idle sweep (a `StateStore` has it).
   * Without it the tier uses `has`.
   */
  holds?(key: StreamKey): boolean
  delete(key: StreamKey): boolean
  snapshot(key: StreamKey): Promise<E.Either<StateError, Uint8Array>>
  restore(key: StreamKey, snapshot: Uint8Array): E.Either<StateError, unknown>
  /**
   * Many streams' snapshots in one call (a `StateStore` has it); without it the tier calls
   * `snapshot` per stream.
   */
  snapshotMany?(keys: readonly StreamKey[]): Promise<E.Either<StateError, Uint8Array[]>>
  /**
   * Many streams' restores in one call, all or none (a `StateStore` has it); without it, or
   * when it refuses a call, the tier restores stream by stream.
   */
  restoreMany?(
    items: readonly { key: StreamKey; snapshot: Uint8Array }[],
  ): E.Either<StateError, unknown>
  /** Waits for the store's `onEvict` calls (the tier's write-backs) to settle. */
  flush(): Promise<void>
}

/**
 * A connected node-redis client (`createClient`) or cluster (`createCluster`), version 6. The
 * tier reads replies as bytes through `withTypeMapping`; the client stays yours (connect and
 * quit it yourself).
 *
 * @category tier
 * @since 0.3.0
 */
export interface RedisConnection {
  withTypeMapping(mapping: { [RESP_TYPES.BLOB_STRING]: BufferConstructor }): ScriptRunner
}

/**
 * When a held stream's state is written to Redis besides eviction, `end` and `flush`: after
 * `everySteps` steps since its last write, or `everyMs` milliseconds since then (checked after
 * each step and by `tick()`), whichever comes first. `{ everySteps: 1 }` (the default) is
 * write-through: a step is acknowledged only once it is in Redis.
 *
 * @category tier
 * @since 0.3.0
 */
export interface CheckpointPolicy {
  readonly everySteps?: number
  readonly everyMs?: number
}

/**
 * Options of `createRedisTier`.
 *
 * @category tier
 * @since 0.3.0
 */
export interface RedisTierOptions {
  readonly client: RedisConnection
  /** Prefix of every Redis key (no `{` or `}`: the stream's part is the hash tag). Default `"statesaver:"`. */
  readonly prefix?: string
  /** This worker's name in leases (unique per process). Default: host, pid and a random suffix. */
  readonly owner?: string
  /** How long a lease lasts unless renewed, in ms (an integer >= 100). Default 10 000. */
  readonly leaseMs?: number
  /** Default `{ everySteps: 1 }` (write-through). */
  readonly checkpoint?: CheckpointPolicy
  /**
   * Keep streams (and their leases) between steps (default `true`). `false` writes every step
   * back and releases the stream at once, so any worker can take its next step (needs
   * write-through).
   */
  readonly hold?: boolean
  /**
   * How long `prepare` waits for another worker's lease on a stream to be released or to
   * expire before it returns a `LeaseError`, in ms. Default 0 (no wait).
   */
  readonly acquireTimeoutMs?: number
  /** Called with each metric event (loads, write-backs, lease conflicts, errors). */
  readonly onMetric?: (event: TierEvent) => void
  /** Milliseconds now; default `Date.now`. */
  readonly clock?: () => number
}

/**
 * The tier's metric events, for counters and histograms (see the serving guide for a
 * prom-client mapping).
 *
 * @category metrics
 * @since 0.3.0
 */
export type TierEvent =
  | { readonly type: "load"; readonly streams: number; readonly found: number; readonly ms: number }
  | {
      readonly type: "writeBack"
      readonly reason: WriteReason
      readonly streams: number
      readonly bytes: number
      readonly ms: number
    }
  | { readonly type: "leaseConflict"; readonly key: StreamKey; readonly holder: string | undefined }
  | { readonly type: "evicted"; readonly key: StreamKey; readonly reason: "capacity" | "idle" }
  | { readonly type: "held"; readonly streams: number }
  | { readonly type: "error"; readonly operation: string; readonly tag: string }

/**
 * Why a stream was written back.
 *
 * @category metrics
 * @since 0.3.0
 */
export type WriteReason = "checkpoint" | "evict" | "end" | "flush" | "close"

/**
 * A stream to make ready before a run: `start` begins a new sequence at init (whatever Redis
 * holds for the key is dropped); without it the stream must be held here or stored in Redis.
 *
 * @category tier
 * @since 0.3.0
 */
export interface TierRequest {
  readonly key: StreamKey
  readonly start?: boolean
}

/**
 * Errors of making one stream ready (`prepare`): an unknown stream without `start`
 * (`KeyError`), a lease held elsewhere or lost (`LeaseError`), a stored snapshot that is corrupt
 * or of another spec (`SnapshotFormatError` naming the stream), Redis or the store failing
 * (`BackendError`, or the store's own error).
 *
 * @category tier
 * @since 0.3.0
 */
export type PrepareError =
  KeyError | LeaseError | SnapshotFormatError | BackendError | OptionError | StateError

/**
 * Errors of writing a stream back: a lease lost to a newer token (`LeaseError`; the stream was
 * dropped here), Redis failing (`BackendError`), a stream this tier does not hold (`KeyError`).
 *
 * @category tier
 * @since 0.3.0
 */
export type WriteError = KeyError | LeaseError | BackendError | OptionError | StateError

/**
 * Every failure of a `flush` or `close`, one per stream, in `errors`.
 *
 * @category errors
 * @since 0.3.0
 */
export class FlushError extends StateError {
  readonly _tag = "FlushError" as const
  readonly errors: readonly StateError[]
  constructor(fields: { readonly errors: readonly StateError[] }) {
    const n = fields.errors.length
    super(
      `flush: expected every held stream written back, got ${n} failure${n === 1 ? "" : "s"} (${fields.errors.map((e) => e.message).join("; ")})`,
      { expected: "every held stream written back", actual: n },
    )
    this.errors = fields.errors
  }
}

/**
 * A persistence tier for a store on Redis: streams this worker does not hold are loaded before
 * a run (`prepare`), each held under a lease with a fencing token; steps are written back per
 * the checkpoint policy (`advanced`), on eviction (pass `onEvict` to the store), on `end` and on
 * `flush`. Redis round trips for many streams are pipelined.
 *
 * @category tier
 * @since 0.3.0
 */
export interface RedisTier {
  /** This worker's name in leases. */
  readonly owner: string
  /** Pass to the store's (or session's) `onEvict` option: writes the evicted stream back and releases it. */
  readonly onEvict: (
    key: StreamKey,
    snapshot: Uint8Array,
    reason: "capacity" | "idle",
  ) => Promise<void>
  /** Binds the tier to the store it serves (once). */
  attach(store: TierStore): E.Either<OptionError, void>
  /** Keys held under a lease here. */
  held(): StreamKey[]
  /** Steps taken by a held stream (undefined when not held). */
  steps(key: StreamKey): number | undefined
  /**
   * Makes each stream ready in the store: held (lease renewed when half spent), loaded from
   * Redis, or started at init (`start`). Resolves, in request order, to each stream's step count
   * before the run, or its error (other streams are unaffected).
   */
  prepare(requests: readonly TierRequest[]): Promise<E.Either<PrepareError, number>[]>
  /**
   * Tells the tier that one step ran for each key (their rows in the store moved on); writes
   * the streams whose checkpoint is due, pipelined. Resolves, in key order, to each stream's
   * step count, or its error: with write-through, a failed write drops the stream here so that
   * a retry starts again from the acknowledged state in Redis.
   */
  advanced(keys: readonly StreamKey[]): Promise<E.Either<WriteError, number>[]>
  /**
   * The stream ended here: written back, released and dropped from the store. With
   * `hold: false` a stream is released by each step already: ending one not held here succeeds.
   */
  end(key: StreamKey): Promise<E.Either<WriteError, void>>
  /** Forgets a stream here and in Redis (its fencing counter stays). Resolves to whether it existed. */
  delete(key: StreamKey): Promise<E.Either<PrepareError, boolean>>
  /** Renews leases past half their time and writes time-due checkpoints; call it from a timer. */
  tick(): Promise<void>
  /** Writes every held stream with unwritten steps back (keeping it) and waits for evictions' writes. */
  flush(): Promise<E.Either<FlushError, void>>
  /** Writes every held stream back, releases it and drops it from the store. */
  close(): Promise<E.Either<FlushError, void>>
}

interface Held {
  token: number
  steps: number
  /** Steps already in Redis. */
  acked: number
  ackedAt: number
  renewedAt: number
  /** Admitted with `start` and not run yet: the store does not hold it until its first gather. */
  fresh: boolean
}

interface Parked {
  readonly bytes: Uint8Array
  readonly token: number
  readonly steps: number
}

const keyOk = (k: unknown): k is StreamKey =>
  typeof k === "string" || (typeof k === "number" && Number.isFinite(k))

/** How a stream is named in errors (`alice`, `[7]`, `["a b"]`), as the sessions name it. */
export const streamPath = (key: StreamKey): string => formatPath([key])

const text = (b: unknown): string =>
  b instanceof Uint8Array ? Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString() : String(b)

const num = (x: unknown): number => (typeof x === "number" ? x : Number(text(x)))

const asBuffer = (b: Uint8Array): Buffer => Buffer.from(b.buffer, b.byteOffset, b.byteLength)

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

/**
 * Creates a Redis tier. Every option is checked first: a bad one is an `OptionError` naming it.
 *
 * @example
 * import { createClient } from "redis"
 * import { createRedisTier } from "@statesaver/redis"
 * declare const spec: StateSpec, backend: HostBackend
 * const client = await createClient({ url: "redis://127.0.0.1:6379" }).connect()
 * const tier = orThrow(createRedisTier({ client, prefix: "vad:" }))
 * const store = orThrow(createStateStore({ spec, backend, capacity: 1000, onEvict: tier.onEvict }))
 * orThrow(tier.attach(store))
 * const ready = await tier.prepare([{ key: "call-1", start: true }, { key: "call-2" }])
 * @category tier
 * @since 0.3.0
 */
export function createRedisTier(options: RedisTierOptions): E.Either<OptionError, RedisTier> {
  const bad = (path: string, expected: string, actual: unknown, detail?: string) =>
    E.left(new OptionError({ path, expected, actual, ...(detail === undefined ? {} : { detail }) }))
  if (typeof options !== "object" || options === null)
    return bad("options", "an options object", options)
  const { client, prefix = "statesaver:", owner, leaseMs = 10_000, hold = true } = options
  if (
    typeof client !== "object" ||
    client === null ||
    typeof (client as { withTypeMapping?: unknown }).withTypeMapping !== "function"
  ) {
    return bad("client", "a node-redis client or cluster (createClient / createCluster)", client)
  }
  if (typeof prefix !== "string" || /[{}]/.test(prefix))
    return bad("prefix", "a string without { or }", prefix)
  if (owner !== undefined && (typeof owner !== "string" || owner === ""))
    return bad("owner", "a non-empty string", owner)
  if (typeof leaseMs !== "number" || !Number.isInteger(leaseMs) || leaseMs < 100)
    return bad("leaseMs", "an integer number of milliseconds >= 100", leaseMs)
  if (typeof hold !== "boolean") return bad("hold", "a boolean", hold)
  const checkpoint = options.checkpoint ?? { everySteps: 1 }
  if (typeof checkpoint !== "object" || checkpoint === null)
    return bad("checkpoint", "{ everySteps?, everyMs? }", checkpoint)
  const { everySteps, everyMs } = checkpoint
  if (
    everySteps !== undefined &&
    (typeof everySteps !== "number" || !Number.isInteger(everySteps) || everySteps < 1)
  )
    return bad("checkpoint.everySteps", "a positive integer", everySteps)
  if (everyMs !== undefined && (typeof everyMs !== "number" || !(everyMs > 0)))
    return bad("checkpoint.everyMs", "a positive number of milliseconds", everyMs)
  if (everySteps === undefined && everyMs === undefined)
    return bad("checkpoint", "everySteps, everyMs or both", checkpoint)
  if (!hold && everySteps !== 1)
    return bad(
      "hold",
      "true unless checkpoint.everySteps is 1",
      hold,
      "a stream released after each step must be written after each step",
    )
  const timeout = options.acquireTimeoutMs ?? 0
  if (typeof timeout !== "number" || !(timeout >= 0))
    return bad("acquireTimeoutMs", "a number of milliseconds >= 0", timeout)
  if (options.onMetric !== undefined && typeof options.onMetric !== "function")
    return bad("onMetric", "a function", options.onMetric)
  if (options.clock !== undefined && typeof options.clock !== "function")
    return bad("clock", "a function returning milliseconds", options.clock)
  const runner = client.withTypeMapping({ [RESP_TYPES.BLOB_STRING]: Buffer })
  return E.right(
    new Tier(runner, {
      prefix,
      owner: owner ?? `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`,
      leaseMs,
      everySteps: everySteps ?? Infinity,
      everyMs: everyMs ?? Infinity,
      hold,
      timeout,
      onMetric: options.onMetric,
      clock: options.clock ?? Date.now,
      cluster: "masters" in client,
    }),
  )
}

interface Config {
  readonly prefix: string
  readonly owner: string
  readonly leaseMs: number
  readonly everySteps: number
  readonly everyMs: number
  readonly hold: boolean
  readonly timeout: number
  readonly onMetric: ((event: TierEvent) => void) | undefined
  readonly clock: () => number
  /** A cluster client: one script call serves only streams whose keys share a slot. */
  readonly cluster: boolean
}

/** A write's outcome before it is turned into a result. */
type Written = "ok" | LeaseError | BackendError

/** One stream's part of a write script call. */
interface WriteItem {
  readonly key: StreamKey
  readonly token: number
  readonly mode: "write" | "renew" | "release" | "forget"
  readonly bytes?: Uint8Array | undefined
  readonly steps: number
  readonly release: boolean
}

/** One stream's entry in a script's reply, or the failure of the call that carried it. */
type Reply =
  { readonly ok: true; readonly entry: unknown[] } | { readonly ok: false; readonly cause: unknown }

/** An evicted stream's write, waiting for its turn's batch. */
interface EvictItem {
  readonly key: StreamKey
  readonly token: number
  readonly bytes: Uint8Array
  readonly steps: number
  readonly resolve: (w: Written) => void
}

interface Acquired {
  readonly token: number
  readonly data: Uint8Array | undefined
  readonly steps: number
}

/**
 * Most streams per script call: a call runs atomically on its node, so a bounded one keeps
 * other clients' commands from waiting long behind it.
 */
const STREAMS_PER_CALL = 100

const crossSlot = (e: unknown): boolean => e instanceof Error && e.message.startsWith("CROSSSLOT")

class Tier implements RedisTier {
  readonly #client: ScriptRunner
  readonly #c: Config
  #store: TierStore | undefined
  readonly #held = new Map<StreamKey, Held>()
  /** Write-backs of evicted streams in flight. */
  readonly #evicting = new Map<StreamKey, Promise<void>>()
  /** Evicted streams whose write-back failed (Redis unreachable): kept here, retried by flush. */
  readonly #parked = new Map<StreamKey, Parked>()
  #errors: StateError[] = []
  /** Evicted streams waiting for this turn's batched write. */
  #evictBatch: EvictItem[] | undefined
  /** Group script calls by slot: on a cluster, or once a server refused keys of several slots. */
  #bySlot: boolean
  readonly owner: string

  constructor(client: ScriptRunner, config: Config) {
    this.#client = client
    this.#c = config
    this.#bySlot = config.cluster
    this.owner = config.owner
  }

  #emit(event: TierEvent): void {
    const listener = this.#c.onMetric
    if (listener === undefined) return
    try {
      listener(event)
    } catch {
      // A metrics listener never breaks serving.
    }
  }

  #fail<Err extends StateError>(operation: string, error: Err): Err {
    this.#emit({ type: "error", operation, tag: error._tag })
    return error
  }

  #keys(key: StreamKey): string[] {
    const tag = `${this.#c.prefix}{${typeof key === "string" ? "s" : "n"}:${String(key)}}`
    return [tag, `${tag}:lease`]
  }

  /**
   * Runs `script` for many streams, with `head` then each stream's `each(n)` as its arguments:
   * one call per group of streams whose keys share a slot (all of them on a single server), at
   * most STREAMS_PER_CALL streams per call, every call issued at once. `settled` sees each
   * stream's reply as soon as its call answers (work on it overlaps the calls still in flight).
   * Never throws.
   */
  async #runMany(
    script: Script,
    streams: readonly StreamKey[],
    head: readonly string[],
    each: (n: number) => readonly (string | Buffer)[],
    settled?: (n: number, reply: Reply) => void,
  ): Promise<Reply[]> {
    const out: Reply[] = new Array(streams.length)
    const keys = streams.map((k) => this.#keys(k))
    const run = async (indices: readonly number[]): Promise<void> => {
      const groups: number[][] = []
      if (this.#bySlot) {
        const bySlot = new Map<number, number[]>()
        for (const n of indices) {
          const slot = keySlot((keys[n] as string[])[0] as string)
          const g = bySlot.get(slot)
          if (g === undefined) bySlot.set(slot, [n])
          else g.push(n)
        }
        groups.push(...bySlot.values())
      } else groups.push(indices as number[])
      const calls: number[][] = []
      for (const g of groups)
        for (let at = 0; at < g.length; at += STREAMS_PER_CALL)
          calls.push(g.slice(at, at + STREAMS_PER_CALL))
      const refused: number[] = []
      await Promise.all(
        calls.map(async (call) => {
          const callKeys: string[] = []
          const args: (string | Buffer)[] = [...head]
          for (const n of call) {
            callKeys.push(...(keys[n] as string[]))
            args.push(...each(n))
          }
          let reply: unknown
          let failure: { cause: unknown } | undefined
          try {
            reply = await runScript(this.#client, script, callKeys, args)
          } catch (cause) {
            // A server in cluster mode behind a plain client refuses keys of several slots
            // before running anything: from then on, calls are grouped by slot.
            if (!this.#bySlot && call.length > 1 && crossSlot(cause)) {
              refused.push(...call)
              return
            }
            failure = { cause }
          }
          for (const [j, n] of call.entries()) {
            const entry: unknown = Array.isArray(reply) ? reply[j] : undefined
            out[n] =
              failure === undefined && Array.isArray(entry)
                ? { ok: true, entry }
                : {
                    ok: false,
                    cause: failure?.cause ?? new Error(`unexpected reply to ${script.sha}`),
                  }
          }
          if (settled !== undefined) for (const n of call) settled(n, out[n] as Reply)
        }),
      )
      if (refused.length > 0) {
        this.#bySlot = true
        await run(refused)
      }
    }
    await run(streams.map((_, n) => n))
    return out
  }

  #backendError(operation: string, key: StreamKey | undefined, cause: unknown): BackendError {
    return this.#fail(
      operation,
      new BackendError({
        backend: "redis",
        operation,
        ...(key === undefined ? {} : { path: streamPath(key) }),
        cause,
      }),
    )
  }

  readonly onEvict = async (
    key: StreamKey,
    snapshot: Uint8Array,
    reason: "capacity" | "idle",
  ): Promise<void> => {
    this.#emit({ type: "evicted", key, reason })
    const held = this.#held.get(key)
    if (held === undefined) return
    this.#held.delete(key)
    this.#emit({ type: "held", streams: this.#held.size })
    const done = this.#evictWrite({
      key,
      token: held.token,
      bytes: snapshot,
      steps: held.steps,
    }).then((w) => {
      if (w === "ok") return
      if (w instanceof BackendError) {
        // Kept until Redis answers again: `prepare` serves it from here, `flush` retries it.
        this.#parked.set(key, { bytes: snapshot, token: held.token, steps: held.steps })
      }
      this.#errors.push(w as StateError)
    })
    this.#evicting.set(key, done)
    await done.finally(() => {
      if (this.#evicting.get(key) === done) this.#evicting.delete(key)
    })
  }

  /**
   * Queues an evicted stream's write: the streams one store operation evicts reach `onEvict` in
   * the same turn and are written together.
   */
  #evictWrite(item: {
    key: StreamKey
    token: number
    bytes: Uint8Array
    steps: number
  }): Promise<Written> {
    return new Promise((resolve) => {
      let batch = this.#evictBatch
      if (batch === undefined) {
        const queued: EvictItem[] = []
        this.#evictBatch = batch = queued
        queueMicrotask(() => {
          this.#evictBatch = undefined
          void this.#writeMany(queued, { release: true, reason: "evict" }).then((ws) => {
            for (const [n, w] of ws.entries()) queued[n]?.resolve(w)
          })
        })
      }
      batch.push({ ...item, resolve })
    })
  }

  attach(store: TierStore): E.Either<OptionError, void> {
    if (this.#store !== undefined && this.#store !== store) {
      return E.left(
        new OptionError({
          path: "store",
          expected: "the store this tier was attached to (a tier serves one store)",
          actual: store,
        }),
      )
    }
    for (const m of ["has", "delete", "snapshot", "restore", "flush"] as const) {
      if (typeof (store as unknown as Record<string, unknown> | null)?.[m] !== "function") {
        return E.left(
          new OptionError({ path: "store", expected: `a StateStore (with ${m})`, actual: store }),
        )
      }
    }
    this.#store = store
    return E.right(undefined)
  }

  held(): StreamKey[] {
    return [...this.#held.keys()]
  }

  steps(key: StreamKey): number | undefined {
    return this.#held.get(key)?.steps
  }

  /**
   * Whether the store holds the key. Not `has`: a store's `has` runs its idle sweep, which would
   * evict streams between the checks of `prepare` and the run.
   */
  #present(store: TierStore, key: StreamKey): boolean {
    return typeof store.holds === "function" ? store.holds(key) : store.has(key)
  }

  /** Drops a stream from the store and from the tier, without writing it. */
  #drop(key: StreamKey): void {
    if (this.#held.delete(key)) this.#emit({ type: "held", streams: this.#held.size })
    const store = this.#store
    if (store !== undefined && this.#present(store, key)) store.delete(key)
  }

  async prepare(requests: readonly TierRequest[]): Promise<E.Either<PrepareError, number>[]> {
    const store = this.#store
    if (store === undefined) return requests.map(() => E.left(notAttached()))
    const out = await this.#prepareOnce(requests, store)
    // Loading a stream into the store can evict idle ones (their onEvict writes them back): a
    // stream made ready above and evicted since is made ready again, from what was written.
    for (let pass = 0; pass < 3; pass++) {
      const again: number[] = []
      for (let i = 0; i < requests.length; i++) {
        const key = (requests[i] as TierRequest).key
        if (out[i]?._tag !== "Right") continue
        const held = this.#held.get(key)
        if (held === undefined || !(held.fresh || this.#present(store, key))) again.push(i)
      }
      if (again.length === 0) break
      const redo = await this.#prepareOnce(
        again.map((i) => ({ key: (requests[i] as TierRequest).key })),
        store,
      )
      for (const [n, i] of again.entries()) out[i] = redo[n] as E.Either<PrepareError, number>
    }
    return out
  }

  async #prepareOnce(
    requests: readonly TierRequest[],
    store: TierStore,
  ): Promise<E.Either<PrepareError, number>[]> {
    const out: E.Either<PrepareError, number>[] = new Array(requests.length)
    const misses: { i: number; key: StreamKey; start: boolean }[] = []
    const renewals: { i: number; key: StreamKey; held: Held }[] = []
    // A held stream the store no longer has is being evicted: the store calls onEvict once its
    // rows reached the host, and refuses the key until then. Let that write-back finish first.
    const evicting = requests.some((r) => {
      const key: unknown = (r as { key?: unknown } | null)?.key
      if (!keyOk(key)) return false
      const held = this.#held.get(key)
      return (
        this.#evicting.has(key) || (held !== undefined && !held.fresh && !this.#present(store, key))
      )
    })
    if (evicting) {
      await store.flush().catch((e: unknown) => {
        const all = e instanceof AggregateError ? (e.errors as unknown[]) : [e]
        for (const x of all)
          this.#errors.push(x instanceof StateError ? x : this.#backendError("evict", undefined, x))
      })
    }
    const now = this.#c.clock()
    for (let i = 0; i < requests.length; i++) {
      const r = requests[i] as TierRequest
      const key: unknown = (r as { key?: unknown } | null)?.key
      if (!keyOk(key)) {
        out[i] = E.left(
          new KeyError({
            expected: "a string or finite number key",
            actual: key,
            detail: `requests[${i}]`,
          }),
        )
        continue
      }
      const start = r.start === true
      const pending = this.#evicting.get(key)
      if (pending !== undefined) await pending
      const held = this.#held.get(key)
      if (held !== undefined && !start && (held.fresh || this.#present(store, key))) {
        if (now - held.renewedAt > this.#c.leaseMs / 2) renewals.push({ i, key, held })
        else out[i] = E.right(held.steps)
        continue
      }
      // Held but gone from the store (evicted without the tier's onEvict, or deleted): the
      // state since the last write is lost here; Redis has the acknowledged one.
      if (held !== undefined) this.#drop(key)
      misses.push({ i, key, start })
    }
    await Promise.all([this.#renew(renewals, out), this.#acquire(misses, out, store)])
    return out
  }

  async #renew(
    items: { i: number; key: StreamKey; held: Held }[],
    out: E.Either<PrepareError, number>[],
  ): Promise<void> {
    if (items.length === 0) return
    const now = this.#c.clock()
    const results = await this.#writeAll(
      items.map(({ key, held }) => ({
        key,
        token: held.token,
        mode: "renew" as const,
        steps: 0,
        release: false,
      })),
    )
    for (let n = 0; n < items.length; n++) {
      const { i, key, held } = items[n] as (typeof items)[number]
      const w = results[n] as Written
      if (w === "ok") {
        held.renewedAt = now
        out[i] = E.right(held.steps)
      } else {
        if (w instanceof LeaseError) this.#drop(key)
        out[i] = E.left(w)
      }
    }
  }

  async #acquire(
    items: { i: number; key: StreamKey; start: boolean }[],
    out: E.Either<PrepareError, number>[],
    store: TierStore,
  ): Promise<void> {
    if (items.length === 0) return
    const t0 = performance.now()
    let loaded = 0
    const unparking: Promise<void>[] = []
    const fromRedis: typeof items = []
    for (const it of items) {
      const parked = this.#parked.get(it.key)
      if (parked !== undefined && !it.start) {
        unparking.push(
          this.#unpark(it.key, parked, store).then((r) => {
            out[it.i] = r
          }),
        )
        continue
      }
      if (parked !== undefined) this.#parked.delete(it.key)
      fromRedis.push(it)
    }
    const releases: WriteItem[] = []
    const hold = (n: number, { token, data, steps }: Acquired): void => {
      const { i, key } = fromRedis[n] as (typeof fromRedis)[number]
      const now = this.#c.clock()
      this.#held.set(key, {
        token,
        steps,
        acked: steps,
        ackedAt: now,
        renewedAt: now,
        fresh: data === undefined,
      })
      out[i] = E.right(steps)
    }
    const restoreOne = (n: number, got: Acquired): void => {
      const { i, key } = fromRedis[n] as (typeof fromRedis)[number]
      const restored = store.restore(key, got.data as Uint8Array)
      if (restored._tag === "Right") return hold(n, got)
      // Not silently reset: the stream keeps its bytes in Redis, the lease is let go.
      releases.push({ key, token: got.token, mode: "release", steps: 0, release: true })
      const inner = restored.left
      out[i] = E.left(
        inner._tag === "BusyError" || inner._tag === "BackendError"
          ? inner
          : this.#fail(
              "load",
              new SnapshotFormatError({
                path: streamPath(key),
                expected: "a snapshot of the store's spec",
                actual: `${inner._tag}: ${inner.message}`,
                detail: `the state stored in Redis for stream ${streamPath(key)} was not restored`,
                cause: inner,
              }),
            ),
      )
    }
    // The streams found in Redis are restored a call's worth at a time, as soon as the call
    // answers, while later calls are in flight: `#runMany` settles one call's streams in one
    // synchronous loop, and the microtask queued by the first of them restores them all (one
    // `restoreMany`; stream by stream when the store has none or refuses the batch, so that
    // each stream gets its own error).
    let found: { n: number; got: Acquired }[] = []
    const restoreFound = (): void => {
      const todo = found
      found = []
      if (todo.length === 0) return
      const many =
        todo.length > 1 && store.restoreMany !== undefined
          ? store.restoreMany(
              todo.map(({ n, got }) => ({
                key: (fromRedis[n] as (typeof fromRedis)[number]).key,
                snapshot: got.data as Uint8Array,
              })),
            )
          : undefined
      for (const { n, got } of todo) {
        if (many?._tag === "Right") hold(n, got)
        else restoreOne(n, got)
      }
    }
    const settle = (n: number, g: E.Either<PrepareError, Acquired>): void => {
      const { i, key } = fromRedis[n] as (typeof fromRedis)[number]
      if (g._tag === "Left") {
        out[i] = g
        return
      }
      if (g.right.data !== undefined) {
        loaded++
        if (found.length === 0) queueMicrotask(restoreFound)
        found.push({ n, got: g.right })
        return
      }
      // START on a stream held by the store: back to init.
      if (this.#present(store, key)) store.delete(key)
      hold(n, g.right)
    }
    await Promise.all([this.#acquireMany(fromRedis, settle), Promise.all(unparking)])
    restoreFound()
    if (releases.length > 0) await this.#writeAll(releases)
    this.#emit({ type: "load", streams: items.length, found: loaded, ms: performance.now() - t0 })
    this.#emit({ type: "held", streams: this.#held.size })
  }

  /** A parked stream (its eviction write failed) comes back from here, lease checked first. */
  async #unpark(
    key: StreamKey,
    parked: Parked,
    store: TierStore,
  ): Promise<E.Either<PrepareError, number>> {
    const w = await this.#script(key, parked.token, "renew", undefined, 0, false)
    if (w !== "ok") {
      if (w instanceof LeaseError) this.#parked.delete(key)
      return E.left(w)
    }
    const restored = store.restore(key, parked.bytes)
    if (restored._tag === "Left") return restored
    this.#parked.delete(key)
    const now = this.#c.clock()
    // Its steps since the last write are not in Redis yet: the next checkpoint writes them.
    this.#held.set(key, {
      token: parked.token,
      steps: parked.steps,
      acked: -1,
      ackedAt: now,
      renewedAt: now,
      fresh: false,
    })
    return E.right(parked.steps)
  }

  async #acquireOne(key: StreamKey, start: boolean): Promise<E.Either<PrepareError, Acquired>> {
    return (await this.#acquireMany([{ key, start }]))[0] as E.Either<PrepareError, Acquired>
  }

  /**
   * Takes the leases of many streams, batched; a stream leased by another worker is retried
   * until the acquire timeout. Resolves to each stream's token and stored state, or its error;
   * `ready` sees each stream's outcome as soon as it is final.
   */
  async #acquireMany(
    items: readonly { key: StreamKey; start: boolean }[],
    ready?: (n: number, got: E.Either<PrepareError, Acquired>) => void,
  ): Promise<E.Either<PrepareError, Acquired>[]> {
    const out: E.Either<PrepareError, Acquired>[] = new Array(items.length)
    const deadline = performance.now() + this.#c.timeout
    let pending = items.map((_, n) => n)
    while (pending.length > 0) {
      const asked = pending
      const again: number[] = []
      let wait = 25
      const final = (n: number, got: E.Either<PrepareError, Acquired>) => {
        out[n] = got
        ready?.(n, got)
      }
      await this.#runMany(
        SCRIPTS.acquire,
        asked.map((n) => (items[n] as (typeof items)[number]).key),
        [this.#c.owner, String(this.#c.leaseMs)],
        (j) => [(items[asked[j] as number] as (typeof items)[number]).start ? "1" : "0"],
        (j, rep) => {
          const n = asked[j] as number
          const key = (items[n] as (typeof items)[number]).key
          if (!rep.ok) return final(n, E.left(this.#backendError("acquire", key, rep.cause)))
          const r = rep.entry
          const status = text(r[0])
          if (status === "OK") {
            const data = r[2] instanceof Uint8Array ? new Uint8Array(r[2]) : undefined
            return final(n, E.right({ token: num(r[1]), data, steps: num(r[3]) }))
          }
          if (status === "UNKNOWN") {
            return final(
              n,
              E.left(
                this.#fail(
                  "acquire",
                  new KeyError({
                    path: streamPath(key),
                    expected:
                      "a stream held here or stored in Redis, or start: true for a new stream",
                    actual: key,
                  }),
                ),
              ),
            )
          }
          const holder = text(r[1])
          const left = deadline - performance.now()
          if (left <= 0) {
            this.#emit({ type: "leaseConflict", key, holder })
            return final(
              n,
              E.left(
                this.#fail(
                  "acquire",
                  new LeaseError({ path: streamPath(key), token: 0, current: num(r[2]), holder }),
                ),
              ),
            )
          }
          again.push(n)
          wait = Math.min(wait, Math.max(1, Math.min(left, num(r[3]))))
        },
      )
      if (again.length > 0) await sleep(wait)
      pending = again
    }
    return out
  }

  /** Runs the write script for one stream; never throws. */
  async #script(
    key: StreamKey,
    token: number,
    mode: WriteItem["mode"],
    bytes: Uint8Array | undefined,
    steps: number,
    release: boolean,
  ): Promise<Written> {
    return (await this.#writeAll([{ key, token, mode, bytes, steps, release }]))[0] as Written
  }

  /** Runs the write script for many streams, batched; each is refused or written alone. Never throws. */
  async #writeAll(items: readonly WriteItem[]): Promise<Written[]> {
    if (items.length === 0) return []
    const replies = await this.#runMany(
      SCRIPTS.write,
      items.map((it) => it.key),
      [this.#c.owner, String(this.#c.leaseMs)],
      (n) => {
        const it = items[n] as WriteItem
        return [
          String(it.token),
          it.mode,
          it.bytes === undefined ? "" : asBuffer(it.bytes),
          String(it.steps),
          it.release ? "1" : "0",
        ]
      },
    )
    return replies.map((rep, n) => {
      const { key, token, mode } = items[n] as WriteItem
      if (!rep.ok) return this.#backendError(mode, key, rep.cause)
      const r = rep.entry
      if (text(r[0]) === "OK") return "ok"
      const holder = r[2] instanceof Uint8Array ? text(r[2]) : undefined
      this.#emit({ type: "leaseConflict", key, holder })
      return this.#fail(
        mode,
        new LeaseError({
          path: streamPath(key),
          token,
          current: num(r[1]),
          holder,
          detail: "a newer fencing token was granted: this worker's copy was dropped",
        }),
      )
    })
  }

  /** Writes several streams, pipelined (each script call goes out without waiting for the others). */
  async #writeMany(
    items: readonly { key: StreamKey; token: number; bytes: Uint8Array; steps: number }[],
    { release, reason }: { release: boolean; reason: WriteReason },
  ): Promise<Written[]> {
    if (items.length === 0) return []
    const t0 = performance.now()
    const results = await this.#writeAll(
      items.map((it) => ({ ...it, mode: "write" as const, release })),
    )
    let bytes = 0
    let streams = 0
    for (let n = 0; n < items.length; n++) {
      if (results[n] !== "ok") continue
      streams++
      bytes += (items[n] as (typeof items)[number]).bytes.byteLength
    }
    if (streams > 0)
      this.#emit({ type: "writeBack", reason, streams, bytes, ms: performance.now() - t0 })
    return results
  }

  /**
   * Snapshots the given held streams (every read starts before the first await, so a run that
   * follows cannot reach them) and writes them back.
   */
  async #writeBack(
    keys: readonly StreamKey[],
    { release, reason }: { release: boolean; reason: WriteReason },
  ): Promise<Map<StreamKey, E.Either<WriteError, void>>> {
    const store = this.#store
    const out = new Map<StreamKey, E.Either<WriteError, void>>()
    if (store === undefined) {
      for (const key of keys) out.set(key, E.left(notAttached()))
      return out
    }
    const items: { key: StreamKey; held: Held; steps: number }[] = []
    const unrun: WriteItem[] = []
    for (const key of keys) {
      const held = this.#held.get(key)
      if (held === undefined) continue
      if (held.fresh && !this.#present(store, key)) {
        // Started but never run: nothing to write; Redis already has no state for it.
        if (release) {
          this.#held.delete(key)
          unrun.push({ key, token: held.token, mode: "release", steps: 0, release: true })
        } else out.set(key, E.right(undefined))
        continue
      }
      items.push({ key, held, steps: held.steps })
    }
    const released = this.#writeAll(unrun)
    const snaps = await snapshotAll(
      store,
      items.map((it) => it.key),
    )
    const writes: { key: StreamKey; token: number; bytes: Uint8Array; steps: number }[] = []
    const which: (typeof items)[number][] = []
    for (let n = 0; n < items.length; n++) {
      const it = items[n] as (typeof items)[number]
      const s = snaps[n] as E.Either<StateError, Uint8Array>
      if (s._tag === "Left") {
        out.set(it.key, E.left(this.#fail("snapshot", s.left)))
        continue
      }
      writes.push({ key: it.key, token: it.held.token, bytes: s.right, steps: it.steps })
      which.push(it)
    }
    const [results, releases] = await Promise.all([
      this.#writeMany(writes, { release, reason }),
      released,
    ])
    for (const [n, w] of releases.entries())
      out.set((unrun[n] as WriteItem).key, w === "ok" ? E.right(undefined) : E.left(w))
    const now = this.#c.clock()
    for (let n = 0; n < which.length; n++) {
      const it = which[n] as (typeof which)[number]
      const w = results[n] as Written
      if (w === "ok") {
        it.held.acked = Math.max(it.held.acked, it.steps)
        it.held.ackedAt = now
        it.held.renewedAt = now
        if (release) this.#drop(it.key)
        out.set(it.key, E.right(undefined))
      } else {
        if (w instanceof LeaseError) this.#drop(it.key)
        out.set(it.key, E.left(w))
      }
    }
    return out
  }

  async advanced(keys: readonly StreamKey[]): Promise<E.Either<WriteError, number>[]> {
    if (this.#store === undefined) return keys.map(() => E.left(notAttached()))
    const now = this.#c.clock()
    const after = new Map<StreamKey, number>()
    const due: StreamKey[] = []
    const out: E.Either<WriteError, number>[] = new Array(keys.length)
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i] as StreamKey
      const held = this.#held.get(key)
      if (held === undefined) {
        out[i] = E.left(
          new KeyError({
            path: keyOk(key) ? streamPath(key) : "",
            expected: "a stream prepared by this tier",
            actual: key,
          }),
        )
        continue
      }
      held.steps++
      held.fresh = false
      after.set(key, held.steps)
      if (
        !this.#c.hold ||
        held.steps - held.acked >= this.#c.everySteps ||
        now - held.ackedAt >= this.#c.everyMs
      )
        due.push(key)
    }
    const writeThrough = this.#c.everySteps === 1
    const written = await this.#writeBack(due, { release: !this.#c.hold, reason: "checkpoint" })
    for (let i = 0; i < keys.length; i++) {
      if (out[i] !== undefined) continue
      const key = keys[i] as StreamKey
      const w = written.get(key)
      if (w !== undefined && w._tag === "Left") {
        if (writeThrough || w.left instanceof LeaseError) {
          // Not acknowledged: drop the copy, so that a retry starts from Redis's state.
          this.#drop(key)
          out[i] = w
          continue
        }
        this.#errors.push(w.left)
      }
      out[i] = E.right(after.get(key) as number)
    }
    return out
  }

  async end(key: StreamKey): Promise<E.Either<WriteError, void>> {
    const held = this.#held.get(key)
    if (held === undefined) {
      if (!this.#c.hold && keyOk(key)) return E.right(undefined)
      return E.left(
        new KeyError({
          path: keyOk(key) ? streamPath(key) : "",
          expected: "a stream held by this tier",
          actual: key,
        }),
      )
    }
    const w = await this.#writeBack([key], { release: true, reason: "end" })
    return w.get(key) ?? E.right(undefined)
  }

  async delete(key: StreamKey): Promise<E.Either<PrepareError, boolean>> {
    if (!keyOk(key))
      return E.left(new KeyError({ expected: "a string or finite number key", actual: key }))
    const pending = this.#evicting.get(key)
    if (pending !== undefined) await pending
    this.#parked.delete(key)
    let token = this.#held.get(key)?.token
    if (token === undefined) {
      const got = await this.#acquireOne(key, false)
      if (got._tag === "Left")
        return got._tag === "Left" && got.left._tag === "KeyError" ? E.right(false) : got
      token = got.right.token
    }
    this.#drop(key)
    const w = await this.#script(key, token, "forget", undefined, 0, true)
    return w === "ok" ? E.right(true) : E.left(w)
  }

  async tick(): Promise<void> {
    const store = this.#store
    if (store === undefined) return
    const now = this.#c.clock()
    const due: StreamKey[] = []
    const renew: StreamKey[] = []
    for (const [key, held] of this.#held) {
      if (held.steps > held.acked && now - held.ackedAt >= this.#c.everyMs) due.push(key)
      else if (now - held.renewedAt > this.#c.leaseMs / 2) renew.push(key)
    }
    const written = await this.#writeBack(due, { release: false, reason: "checkpoint" })
    for (const w of written.values()) if (w._tag === "Left") this.#errors.push(w.left)
    const renewing = renew.flatMap((key) => {
      const held = this.#held.get(key)
      return held === undefined ? [] : [{ key, held }]
    })
    const renewed = await this.#writeAll(
      renewing.map(({ key, held }) => ({
        key,
        token: held.token,
        mode: "renew" as const,
        steps: 0,
        release: false,
      })),
    )
    for (const [n, w] of renewed.entries()) {
      const { key, held } = renewing[n] as (typeof renewing)[number]
      if (w === "ok") held.renewedAt = now
      else if (w instanceof LeaseError && this.#held.get(key) === held) this.#drop(key)
    }
    await this.#retryParked()
  }

  async #retryParked(): Promise<void> {
    const parked = [...this.#parked]
    if (parked.length === 0) return
    const results = await this.#writeMany(
      parked.map(([key, p]) => ({ key, token: p.token, bytes: p.bytes, steps: p.steps })),
      { release: true, reason: "evict" },
    )
    for (let n = 0; n < parked.length; n++) {
      const [key] = parked[n] as [StreamKey, Parked]
      const w = results[n] as Written
      if (w === "ok" || w instanceof LeaseError) this.#parked.delete(key)
      if (w !== "ok") this.#errors.push(w)
    }
  }

  async #flush(release: boolean): Promise<E.Either<FlushError, void>> {
    // The store hands an evicted stream to onEvict once its rows reached the host: wait for it.
    const storeFailures: StateError[] = []
    await this.#store?.flush().catch((e: unknown) => {
      const all = e instanceof AggregateError ? (e.errors as unknown[]) : [e]
      for (const x of all) {
        storeFailures.push(x instanceof StateError ? x : this.#backendError("evict", undefined, x))
      }
    })
    while (this.#evicting.size > 0) await Promise.allSettled([...this.#evicting.values()])
    await this.#retryParked()
    const dirty = [...this.#held].filter(([, h]) => release || h.steps > h.acked).map(([k]) => k)
    const written = await this.#writeBack(dirty, { release, reason: release ? "close" : "flush" })
    const errors = [...storeFailures, ...this.#errors]
    this.#errors = []
    for (const w of written.values()) if (w._tag === "Left") errors.push(w.left)
    for (const [key] of this.#parked) {
      errors.push(
        new BackendError({
          backend: "redis",
          operation: "write",
          path: streamPath(key),
          cause: undefined,
          detail: "an evicted stream is still kept in this process: Redis did not take it",
        }),
      )
    }
    return errors.length === 0 ? E.right(undefined) : E.left(new FlushError({ errors }))
  }

  flush(): Promise<E.Either<FlushError, void>> {
    return this.#flush(false)
  }

  close(): Promise<E.Either<FlushError, void>> {
    return this.#flush(true)
  }
}

/**
 * Each key's snapshot, read now (before the first await): one `snapshotMany` call when the store
 * has it (its error, if it fails, is every key's), else one `snapshot` per key.
 */
async function snapshotAll(
  store: TierStore,
  keys: readonly StreamKey[],
): Promise<E.Either<StateError, Uint8Array>[]> {
  if (keys.length === 0) return []
  if (store.snapshotMany === undefined) return Promise.all(keys.map((k) => store.snapshot(k)))
  const got = await store.snapshotMany(keys)
  return got._tag === "Right" ? got.right.map((b) => E.right(b)) : keys.map(() => got)
}

function notAttached(): OptionError {
  return new OptionError({
    path: "store",
    expected: "a store attached with tier.attach(store)",
    actual: undefined,
  })
}
