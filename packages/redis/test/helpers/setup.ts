// Shared pieces of the Redis suites: the servers (one, or a 3-master cluster), clients, a tiny
// recurrent step on the host backend and its oracle (each stream run alone on plain arrays).
import {
  type HostTensor,
  type StateStore,
  type StreamKey,
  createStateStore,
  hostBackend,
  hostTensor,
  orThrow,
} from "@statesaver/core"
import type { RESP_TYPES } from "redis"
import { createClient, createCluster } from "redis"
import { describe, expect, it } from "vitest"
import {
  type RedisConnection,
  type RedisTier,
  type RedisTierOptions,
  createRedisTier,
} from "../../src/index.js"
import { RedisCluster, RedisServer, redisMissing } from "./redis-server.js"

export const HIDDEN = 4
export const SPEC = { h: { shape: ["batch", HIDDEN], dtype: "float32" as const } }

/** One step of every row: h' = tanh(0.9 h + x + 0.1 i), in float32 like the store. */
export function stepRows(h: Float32Array, xs: readonly number[]): Float32Array {
  const out = new Float32Array(h.length)
  for (let r = 0; r < xs.length; r++) {
    for (let i = 0; i < HIDDEN; i++) {
      const at = r * HIDDEN + i
      out[at] = Math.tanh(0.9 * (h[at] as number) + (xs[r] as number) + 0.1 * i)
    }
  }
  return out
}

/** Runs one step of `keys` (with inputs `xs`) through `store`: gather, step, scatter. */
export function runStep(
  store: StateStore<HostTensor>,
  keys: readonly StreamKey[],
  xs: readonly number[],
): Float32Array {
  const batch = orThrow(store.gather(keys)) as { h: HostTensor<"float32"> }
  const next = stepRows(batch.h.data, xs)
  store.backend.dispose(batch.h)
  orThrow(store.scatter(keys, { h: hostTensor("float32", [keys.length, HIDDEN], next) }))
  return next
}

/** The oracle: one stream alone, on plain arrays, from init through `inputs`. */
export function alone(inputs: readonly number[]): Float32Array {
  let h = new Float32Array(HIDDEN)
  for (const x of inputs) h = stepRows(h, [x]) as Float32Array<ArrayBuffer>
  return h
}

export function hostStore(
  onEvict?: (key: StreamKey, s: Uint8Array, r: "capacity" | "idle") => Promise<void>,
  capacity?: number,
): StateStore<HostTensor> {
  return orThrow(
    createStateStore({
      spec: SPEC,
      backend: hostBackend(),
      ...(capacity === undefined ? {} : { capacity }),
      ...(onEvict === undefined ? {} : { onEvict }),
    }),
  )
}

/** The state a store holds for `key` (a gather that is disposed again). */
export function stateOf(store: StateStore<HostTensor>, key: StreamKey): Float32Array {
  const batch = orThrow(store.gather([key])) as { h: HostTensor<"float32"> }
  const out = batch.h.data.slice()
  store.backend.dispose(batch.h)
  return out
}

/** A node-redis client or cluster, as the tier takes it, which the tests can also close. */
export type Client = RedisConnection & { destroy(): void }

/** Raw commands for tests that corrupt or inspect keys. */
export interface RawClient {
  withTypeMapping(mapping: { [RESP_TYPES.BLOB_STRING]: BufferConstructor }): {
    hSet(key: string, field: string, value: Buffer): Promise<unknown>
    hGet(key: string, field: string): Promise<unknown>
    exists(key: string): Promise<number>
  }
}

/** A topology the suites run against. */
export interface Topology {
  readonly name: "single" | "cluster"
  /** Where a separate process connects: a server's URL, or the cluster's nodes. */
  readonly target: { readonly url: string } | { readonly rootNodes: readonly { url: string }[] }
  connect(): Promise<Client>
  /** Raw access for tests that corrupt or inspect keys. */
  raw(): RawClient
  dispose(): Promise<void>
}

const clientOptions = { disableOfflineQueue: true } as const

export async function startTopology(name: "single" | "cluster"): Promise<Topology> {
  const clients: { destroy(): void }[] = []
  if (name === "single") {
    const server = await RedisServer.start()
    const make = async () => {
      const c = createClient({ url: server.url, ...clientOptions })
      c.on("error", () => undefined)
      await c.connect()
      clients.push(c)
      return c
    }
    const raw = await make()
    return {
      name,
      target: { url: server.url },
      connect: make,
      raw: () => raw as unknown as RawClient,
      dispose: async () => {
        for (const c of clients) c.destroy()
        await server.dispose()
      },
    }
  }
  const cluster = await RedisCluster.start()
  const make = async () => {
    const c = createCluster({
      rootNodes: cluster.rootNodes,
      defaults: clientOptions,
    })
    c.on("error", () => undefined)
    await c.connect()
    clients.push(c)
    return c
  }
  const raw = await make()
  return {
    name,
    target: { rootNodes: cluster.rootNodes },
    connect: make,
    raw: () => raw as unknown as RawClient,
    dispose: async () => {
      for (const c of clients) c.destroy()
      await cluster.dispose()
    },
  }
}

/** A worker: a store with the tier wired to it. */
export interface Worker {
  readonly store: StateStore<HostTensor>
  readonly tier: RedisTier
}

export function worker(
  client: Client,
  options: Partial<RedisTierOptions> = {},
  capacity?: number,
): Worker {
  const tier = orThrow(createRedisTier({ client, leaseMs: 5_000, ...options }))
  const store = hostStore(tier.onEvict, capacity)
  orThrow(tier.attach(store))
  return { store, tier }
}

/**
 * `describe` when redis-server is installed; otherwise one test that says loudly what was
 * skipped, and fails when CI=true (as the browser projects do without Chromium).
 */
export function describeRedis(name: string, body: () => void): void {
  const missing = redisMissing()
  if (missing === undefined) {
    describe(name, body)
    return
  }
  const line = "!".repeat(78)
  console.warn(
    `\n${line}\n!! ${name}: every Redis test was SKIPPED: ${missing}.\n!! Install Debian's redis-server (apt-get install -y redis-server) to run them.\n${line}\n`,
  )
  describe(name, () => {
    if (process.env["CI"] === "true") {
      it("runs against a real redis-server (required when CI=true)", () => {
        expect.fail(`${name} cannot run: ${missing}`)
      })
    } else it.skip(`skipped: ${missing}`, () => undefined)
  })
}
