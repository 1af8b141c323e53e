/**
 * The Redis tier against the raw client: 1,000 streams of a 2-layer LSTM(128) state written back
 * (`tier.close()`: snapshots, batched fenced writes and releases) and loaded by another worker
 * (`tier.prepare()`: batched fenced acquires, restores into its store), against the same snapshot bytes
 * written with HSET and read with HGET by node-redis, pipelined (all commands issued in one
 * tick). A redis-server on a loopback port, started here; both sides interleaved in rounds.
 */
import {
  type HostTensor,
  type StateStore,
  type StateTree,
  type StreamKey,
  createStateStore,
  flatten,
  hostBackend,
  lstmSpec,
  orThrow,
} from "@statesaver/core"
import { type RedisTier, createRedisTier } from "@statesaver/redis"
import { RESP_TYPES, createClient } from "redis"
import { RedisServer, redisMissing } from "../../packages/redis/test/helpers/redis-server.js"
import { median } from "./harness.js"

const STREAMS = 1_000
const ROUNDS = 11
const WARMUP = 2

interface Worker {
  readonly tier: RedisTier
  readonly store: StateStore<HostTensor>
}

/** Runs the benchmark and prints both sides' time per round and their ratio. */
export async function main(): Promise<void> {
  const missing = redisMissing()
  if (missing !== undefined) {
    console.log(`Redis tier: SKIPPED (${missing}; apt-get install -y redis-server)`)
    return
  }
  const server = await RedisServer.start()
  const client = createClient({ url: server.url, disableOfflineQueue: true })
  client.on("error", () => undefined)
  await client.connect()
  try {
    const spec = lstmSpec([128, 128])
    const worker = (): Worker => {
      const tier = orThrow(
        createRedisTier({ client, leaseMs: 60_000, checkpoint: { everySteps: 1_000_000 } }),
      )
      const store = orThrow(
        createStateStore({ spec, backend: hostBackend(), capacity: 2 * STREAMS }),
      )
      orThrow(tier.attach(store))
      return { tier, store }
    }
    const keys: StreamKey[] = Array.from({ length: STREAMS }, (_, i) => `call-${i}`)
    let a = worker()
    let b = worker()
    // Every stream starts on `a` with one step of random state (so nothing is at init).
    for (const r of await a.tier.prepare(keys.map((key) => ({ key, start: true })))) orThrow(r)
    const batch = orThrow(a.store.gather(keys)) as StateTree<HostTensor>
    for (const leaf of flatten(batch).leaves) {
      const data = leaf.data as Float32Array
      for (let i = 0; i < data.length; i++) data[i] = Math.sin(i * 0.37) * 0.9
    }
    orThrow(a.store.scatter(keys, batch))
    for (const r of await a.tier.advanced(keys)) orThrow(r)
    const bytes = orThrow(await a.store.snapshotMany(keys))
    const perStream = bytes[0]?.byteLength ?? 0

    const raw = client.withTypeMapping({ [RESP_TYPES.BLOB_STRING]: Buffer })
    const rawRound = async () => {
      await Promise.all(
        keys.map((k, i) =>
          raw.hSet(`raw:{${String(k)}}`, "data", Buffer.from((bytes[i] as Uint8Array).buffer)),
        ),
      )
      const got = await Promise.all(keys.map((k) => raw.hGet(`raw:{${String(k)}}`, "data")))
      if (got.length !== STREAMS || (got[0] as Buffer).byteLength !== perStream)
        throw new Error("raw read back the wrong bytes")
    }
    const tierRound = async () => {
      orThrow(await a.tier.close())
      for (const r of await b.tier.prepare(keys.map((key) => ({ key })))) orThrow(r)
      if (b.store.size !== STREAMS || a.store.size !== 0) throw new Error("streams not moved")
      ;[a, b] = [b, a]
    }
    // The store's own share: the same snapshots and restores without Redis (one
    // `snapshotMany`, and one `restoreMany` per script call's worth of streams, as the tier does).
    const spare = worker().store
    const codecRound = async () => {
      const snaps = orThrow(await a.store.snapshotMany(keys))
      for (let at = 0; at < keys.length; at += 100) {
        const part = keys.slice(at, at + 100)
        orThrow(
          spare.restoreMany(part.map((key, i) => ({ key, snapshot: snaps[at + i] as Uint8Array }))),
        )
      }
      for (const k of keys) spare.delete(k)
    }
    const time = async (f: () => Promise<void>) => {
      const t0 = process.hrtime.bigint()
      await f()
      return Number(process.hrtime.bigint() - t0) / 1e6
    }
    for (let i = 0; i < WARMUP; i++) {
      await rawRound()
      await tierRound()
      await codecRound()
    }
    const rawMs: number[] = []
    const tierMs: number[] = []
    const codecMs: number[] = []
    for (let r = 0; r < ROUNDS; r++) {
      // Rotate which side goes first so that drift in machine load falls on all three.
      const sides: [number[], () => Promise<void>][] = [
        [rawMs, rawRound],
        [tierMs, tierRound],
        [codecMs, codecRound],
      ]
      for (let i = 0; i < sides.length; i++) {
        const [into, f] = sides[(r + i) % sides.length] as (typeof sides)[number]
        into.push(await time(f))
      }
    }
    const paired = median(rawMs.map((x, r) => x / (tierMs[r] as number)))
    console.log(
      `Redis tier: ${STREAMS} streams of a 2-layer LSTM(128) state (${perStream} B each), written back and loaded by another worker (redis-server on loopback; median of ${ROUNDS} rounds; target ratio >= 0.8)`,
    )
    console.log(
      `  raw client (HSET + HGET, pipelined) ${median(rawMs).toFixed(1).padStart(7)} ms   tier (close + prepare: snapshots, batched fenced Lua writes and loads, restores) ${median(tierMs).toFixed(1).padStart(7)} ms   ratio ${paired.toFixed(2)}`,
    )
    const io = median(tierMs.map((x, r) => x - (codecMs[r] as number)))
    console.log(
      `  of which the store's snapshot + restore of every stream (no Redis) ${median(codecMs).toFixed(1).padStart(7)} ms; the tier's Redis part ${io.toFixed(1)} ms, ratio to the raw client ${(median(rawMs) / io).toFixed(2)}`,
    )
  } finally {
    client.destroy()
    await server.dispose()
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await main()
