// The Redis tier on a real redis-server, the same suite on one server and on a 3-master cluster.
import { type StreamKey, orThrow } from "@statesaver/core"
import { RESP_TYPES } from "redis"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { LeaseError, type TierEvent, createRedisTier, streamPath } from "../src/index.js"
import { keySlot } from "../src/internal/slot.js"
import {
  type Client,
  type Topology,
  alone,
  describeRedis,
  hostStore,
  runStep,
  startTopology,
  stateOf,
  worker,
} from "./helpers/setup.js"

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

let unique = 0
/** A key no other test uses (the servers live for the whole file). */
const fresh = (name: string): string => `${name}-${++unique}`

/**
 * The client, recording each script call the tier makes through it (how many streams, which
 * slots); every call goes on to the real server.
 */
function counting(client: Client, calls: { streams: number; slots: Set<number> }[]): Client {
  const wrapped = Object.create(client) as Client
  wrapped.withTypeMapping = (mapping) => {
    const inner = client.withTypeMapping(mapping)
    return {
      evalSha: (sha, o) => {
        calls.push({ streams: o.keys.length / 2, slots: new Set(o.keys.map(keySlot)) })
        return inner.evalSha(sha, o)
      },
      eval: (source, o) => inner.eval(source, o),
    }
  }
  return wrapped
}

/** Left of an Either, or a failure. */
function leftOf<L>(e: { _tag: "Left"; left: L } | { _tag: "Right" }): L {
  if (e._tag !== "Left") expect.fail("expected a Left")
  return e.left
}

describeRedis("redis tier", () => {
  describe.each(["single", "cluster"] as const)("on %s", (name) => {
    let topo: Topology
    beforeAll(async () => {
      topo = await startTopology(name)
    })
    afterAll(async () => {
      await topo?.dispose()
    })

    it("refuses an unknown stream without start with a KeyError naming it, and starts one with start at init", async () => {
      const w = worker(await topo.connect())
      const key = fresh("new")
      const [r] = await w.tier.prepare([{ key }])
      const e = leftOf(r as never) as Error & { _tag: string; path: string }
      expect(e._tag).toBe("KeyError")
      expect(e.path).toBe(streamPath(key))
      expect(w.store.has(key)).toBe(false)
      const [s] = await w.tier.prepare([{ key, start: true }])
      expect(s).toEqual({ _tag: "Right", right: 0 })
      expect(Array.from(stateOf(w.store, key))).toEqual([0, 0, 0, 0])
    })

    it("loads a stream this worker does not hold from Redis, bit-exactly, and continues it", async () => {
      const a = worker(await topo.connect())
      const b = worker(await topo.connect())
      const key = fresh("moved")
      const inputs = [0.5, -0.25, 1, 0.125, -1]
      orThrow((await a.tier.prepare([{ key, start: true }]))[0] as never)
      for (const x of inputs.slice(0, 3)) {
        runStep(a.store, [key], [x])
        expect((await a.tier.advanced([key]))[0]?._tag).toBe("Right")
      }
      orThrow(await a.tier.end(key))
      expect(a.store.has(key)).toBe(false)
      const [r] = await b.tier.prepare([{ key }])
      expect(r).toEqual({ _tag: "Right", right: 3 })
      expect(stateOf(b.store, key)).toEqual(alone(inputs.slice(0, 3)))
      for (const x of inputs.slice(3)) {
        runStep(b.store, [key], [x])
        await b.tier.advanced([key])
      }
      expect(stateOf(b.store, key)).toEqual(alone(inputs))
      expect(b.tier.steps(key)).toBe(5)
    })

    it("prepares many streams in one call, each with its own result", async () => {
      const a = worker(await topo.connect())
      const keys = Array.from({ length: 50 }, (_, i) => fresh(`many${i}`))
      const started = await a.tier.prepare(keys.map((key) => ({ key, start: true })))
      expect(started.every((r) => r._tag === "Right")).toBe(true)
      runStep(
        a.store,
        keys,
        keys.map((_, i) => i / 50),
      )
      const acked = await a.tier.advanced(keys)
      expect(acked.map((r) => r._tag === "Right" && r.right)).toEqual(keys.map(() => 1))
      orThrow(await a.tier.close())
      const b = worker(await topo.connect())
      const unknown = fresh("nobody")
      const loaded = await b.tier.prepare([...keys, unknown].map((key) => ({ key })))
      expect(loaded.slice(0, 50).every((r) => r._tag === "Right")).toBe(true)
      expect((leftOf(loaded[50] as never) as { _tag: string })._tag).toBe("KeyError")
      for (let i = 0; i < keys.length; i++)
        expect(stateOf(b.store, keys[i] as string)).toEqual(alone([i / 50]))
    })

    it("writes every N steps: a worker that dies loses at most N-1 steps, and says which step it resumes at", async () => {
      const a = worker(await topo.connect(), { checkpoint: { everySteps: 3 }, leaseMs: 200 })
      const key = fresh("ckpt")
      const inputs = [0.1, 0.2, 0.3, 0.4, 0.5]
      orThrow((await a.tier.prepare([{ key, start: true }]))[0] as never)
      for (const x of inputs) {
        runStep(a.store, [key], [x])
        await a.tier.advanced([key])
      }
      // `a` dies without writing back: its lease runs out.
      const b = worker(await topo.connect(), { acquireTimeoutMs: 2_000 })
      const [r] = await b.tier.prepare([{ key }])
      expect(r).toEqual({ _tag: "Right", right: 3 })
      expect(stateOf(b.store, key)).toEqual(alone(inputs.slice(0, 3)))
    })

    it("writes after everyMs on tick(), with an injected clock", async () => {
      let now = 1_000
      const a = worker(await topo.connect(), { checkpoint: { everyMs: 50 }, clock: () => now })
      const key = fresh("timed")
      orThrow((await a.tier.prepare([{ key, start: true }]))[0] as never)
      runStep(a.store, [key], [0.7])
      await a.tier.advanced([key])
      runStep(a.store, [key], [0.3])
      await a.tier.advanced([key])
      const events: TierEvent[] = []
      const peek = orThrow(
        createRedisTier({ client: await topo.connect(), onMetric: (e) => events.push(e) }),
      )
      const probe = hostStore(peek.onEvict)
      orThrow(peek.attach(probe))
      // Nothing written yet: the stream is leased by `a` and Redis has no state for it.
      const [busy] = await peek.prepare([{ key }])
      expect(leftOf(busy as never)).toBeInstanceOf(LeaseError)
      now += 60
      await a.tier.tick()
      orThrow(await a.tier.end(key))
      const [r] = await peek.prepare([{ key }])
      expect(r).toEqual({ _tag: "Right", right: 2 })
      expect(stateOf(probe, key)).toEqual(alone([0.7, 0.3]))
      expect(events.some((e) => e.type === "leaseConflict")).toBe(true)
    })

    it("two workers racing for one stream: exactly one gets it, the other a LeaseError with the holder", async () => {
      const key = fresh("race")
      const seed = worker(await topo.connect())
      orThrow((await seed.tier.prepare([{ key, start: true }]))[0] as never)
      runStep(seed.store, [key], [0.5])
      await seed.tier.advanced([key])
      orThrow(await seed.tier.end(key))
      const a = worker(await topo.connect(), { owner: "worker-a" })
      const b = worker(await topo.connect(), { owner: "worker-b" })
      const [ra, rb] = await Promise.all([a.tier.prepare([{ key }]), b.tier.prepare([{ key }])])
      const results = [ra?.[0], rb?.[0]]
      const winners = results.filter((r) => r?._tag === "Right")
      expect(winners).toHaveLength(1)
      const loser = results.find((r) => r?._tag === "Left")
      const e = leftOf(loser as never) as LeaseError
      expect(e).toBeInstanceOf(LeaseError)
      expect(e.path).toBe(streamPath(key))
      expect(["worker-a", "worker-b"]).toContain(e.holder)
      const winner = ra?.[0]?._tag === "Right" ? a : b
      runStep(winner.store, [key], [0.25])
      expect((await winner.tier.advanced([key]))[0]?._tag).toBe("Right")
      expect(stateOf(winner.store, key)).toEqual(alone([0.5, 0.25]))
    })

    it("fences a worker whose lease expired: its write is refused with a LeaseError and it drops the stream", async () => {
      const key = fresh("fenced")
      const a = worker(await topo.connect(), { owner: "paused", leaseMs: 150 })
      orThrow((await a.tier.prepare([{ key, start: true }]))[0] as never)
      runStep(a.store, [key], [0.5])
      await a.tier.advanced([key])
      // `a` pauses past its lease; `b` takes the stream over and advances it.
      await sleep(250)
      const b = worker(await topo.connect(), { owner: "taker" })
      expect((await b.tier.prepare([{ key }]))[0]).toEqual({ _tag: "Right", right: 1 })
      runStep(b.store, [key], [1])
      await b.tier.advanced([key])
      // `a` wakes up and runs a step on its stale copy: refused, dropped.
      runStep(a.store, [key], [-1])
      const [w] = await a.tier.advanced([key])
      const e = leftOf(w as never) as LeaseError
      expect(e).toBeInstanceOf(LeaseError)
      expect(e.token).toBeLessThan(e.current)
      expect(a.store.has(key)).toBe(false)
      expect(a.tier.held()).not.toContain(key)
      // Redis has b's state, not a's.
      orThrow(await b.tier.end(key))
      const c = worker(await topo.connect())
      expect((await c.tier.prepare([{ key }]))[0]).toEqual({ _tag: "Right", right: 2 })
      expect(stateOf(c.store, key)).toEqual(alone([0.5, 1]))
    })

    it("writes a batch in one script call per slot: a fenced stream in it is refused alone, the others are written", async () => {
      const calls: { streams: number; slots: Set<number> }[] = []
      // A hash tag ends at the key's first "}": these four streams share a slot on a cluster.
      const group = fresh("batch")
      const same = [0, 1, 2, 3].map((i) => `${group}}${i}`)
      const keys = [...same, ...[0, 1, 2].map((i) => fresh(`spread${i}`))]
      const fencedKey = same[1] as string
      const firstInputs = keys.map((_, i) => i / 10)
      const a = worker(counting(await topo.connect(), calls), { owner: "paused", leaseMs: 150 })
      for (const r of await a.tier.prepare(keys.map((key) => ({ key, start: true })))) orThrow(r)
      runStep(a.store, keys, firstInputs)
      for (const r of await a.tier.advanced(keys)) orThrow(r)
      // `a` pauses past its leases; `b` takes one stream of the group over and advances it.
      await sleep(250)
      const b = worker(await topo.connect(), { owner: "taker" })
      expect((await b.tier.prepare([{ key: fencedKey }]))[0]).toEqual({ _tag: "Right", right: 1 })
      runStep(b.store, [fencedKey], [1])
      orThrow((await b.tier.advanced([fencedKey]))[0] as never)
      calls.length = 0
      runStep(
        a.store,
        keys,
        keys.map(() => -0.5),
      )
      const results = await a.tier.advanced(keys)
      if (topo.name === "single") expect(calls.map((c) => c.streams)).toEqual([keys.length])
      else {
        expect(calls.map((c) => c.streams).sort()).toEqual([1, 1, 1, 4])
        for (const c of calls) expect(c.slots.size).toBe(1)
      }
      for (const [i, key] of keys.entries()) {
        if (key !== fencedKey) {
          expect(results[i]).toEqual({ _tag: "Right", right: 2 })
          continue
        }
        const e = leftOf(results[i] as never) as LeaseError
        expect(e).toBeInstanceOf(LeaseError)
        expect(e.path).toBe(streamPath(key))
        expect(e.holder).toBe("taker")
        expect(e.token).toBeLessThan(e.current)
      }
      expect(a.store.has(fencedKey)).toBe(false)
      expect(a.tier.held().sort()).toEqual(keys.filter((k) => k !== fencedKey).sort())
      orThrow(await a.tier.close())
      orThrow(await b.tier.close())
      // Redis has b's state for the fenced stream and a's for every other one.
      const c = worker(await topo.connect())
      const loaded = await c.tier.prepare(keys.map((key) => ({ key })))
      expect(loaded.every((r) => r._tag === "Right" && r.right === 2)).toBe(true)
      for (const [i, key] of keys.entries()) {
        const second = key === fencedKey ? 1 : -0.5
        expect(stateOf(c.store, key)).toEqual(alone([firstInputs[i] as number, second]))
      }
    })

    it("writes the streams one gather evicts in one script call, and another worker loads each", async () => {
      const calls: { streams: number; slots: Set<number> }[] = []
      const group = fresh("evicted")
      const old = [0, 1, 2].map((i) => `${group}}old${i}`)
      const next = [0, 1, 2].map((i) => `${group}}new${i}`)
      const a = worker(
        counting(await topo.connect(), calls),
        { checkpoint: { everySteps: 100 } },
        3,
      )
      for (const r of await a.tier.prepare(old.map((key) => ({ key, start: true })))) orThrow(r)
      for (const xs of [
        [0.1, 0.2, 0.3],
        [-0.4, 0.5, -0.6],
      ]) {
        runStep(a.store, old, xs)
        for (const r of await a.tier.advanced(old)) orThrow(r)
      }
      for (const r of await a.tier.prepare(next.map((key) => ({ key, start: true })))) orThrow(r)
      calls.length = 0
      // The store holds three streams: this gather evicts the three old ones at once.
      runStep(a.store, next, [1, 1, 1])
      await a.store.flush()
      expect(calls.map((c) => c.streams)).toEqual([3])
      expect(a.tier.held().sort()).toEqual([...next].sort())
      const b = worker(await topo.connect())
      const loaded = await b.tier.prepare(old.map((key) => ({ key })))
      expect(loaded).toEqual(old.map(() => ({ _tag: "Right", right: 2 })))
      expect(stateOf(b.store, old[0] as string)).toEqual(alone([0.1, -0.4]))
      expect(stateOf(b.store, old[1] as string)).toEqual(alone([0.2, 0.5]))
      expect(stateOf(b.store, old[2] as string)).toEqual(alone([0.3, -0.6]))
    })

    // Only a cluster refuses keys of several slots in one call.
    if (name === "cluster")
      it("with a client that does not say it is a cluster: Redis refuses the first cross-slot call and the tier groups by slot from then on", async () => {
        const calls: { streams: number; slots: Set<number> }[] = []
        const cluster = await topo.connect()
        const plain: Client = {
          withTypeMapping: (m) => cluster.withTypeMapping(m),
          destroy: () => undefined,
        }
        const keys = [0, 1, 2, 3, 4, 5].map((i) => fresh(`plain${i}`))
        const slots = new Set(keys.map((k) => keySlot(`statesaver:{s:${k}}`)))
        expect(slots.size).toBeGreaterThan(1)
        const a = worker(counting(plain, calls))
        const started = await a.tier.prepare(keys.map((key) => ({ key, start: true })))
        expect(started).toEqual(keys.map(() => ({ _tag: "Right", right: 0 })))
        expect(calls[0]?.streams).toBe(keys.length)
        expect(calls.slice(1).every((c) => c.slots.size === 1)).toBe(true)
        expect(calls.slice(1).reduce((n, c) => n + c.streams, 0)).toBe(keys.length)
        calls.length = 0
        runStep(
          a.store,
          keys,
          keys.map(() => 0.5),
        )
        for (const r of await a.tier.advanced(keys)) expect(r).toEqual({ _tag: "Right", right: 1 })
        expect(calls.every((c) => c.slots.size === 1)).toBe(true)
      })

    it("waits for a dead worker's lease to run out with acquireTimeoutMs", async () => {
      const key = fresh("dead")
      const a = worker(await topo.connect(), { leaseMs: 200 })
      orThrow((await a.tier.prepare([{ key, start: true }]))[0] as never)
      runStep(a.store, [key], [0.9])
      await a.tier.advanced([key])
      const b = worker(await topo.connect(), { acquireTimeoutMs: 3_000 })
      const [r] = await b.tier.prepare([{ key }])
      expect(r).toEqual({ _tag: "Right", right: 1 })
    })

    it("writes a stream back when the store evicts it, and releases it for another worker", async () => {
      const a = worker(await topo.connect(), { checkpoint: { everySteps: 100 } }, 2)
      const keys = [fresh("ev0"), fresh("ev1"), fresh("ev2")]
      const events: string[] = []
      for (const [i, key] of keys.entries()) {
        orThrow((await a.tier.prepare([{ key, start: true }]))[0] as never)
        runStep(a.store, [key], [i + 0.5])
        await a.tier.advanced([key])
        events.push(...a.store.keys().map(String))
      }
      orThrow(await a.tier.flush())
      expect(a.store.has(keys[0] as string)).toBe(false)
      const b = worker(await topo.connect())
      expect((await b.tier.prepare([{ key: keys[0] as string }]))[0]).toEqual({
        _tag: "Right",
        right: 1,
      })
      expect(stateOf(b.store, keys[0] as string)).toEqual(alone([0.5]))
    })

    it("a held stream evicted while another is loaded into its batch is made ready again from its write-back", async () => {
      const other = worker(await topo.connect())
      const x = fresh("lru-x")
      orThrow((await other.tier.prepare([{ key: x, start: true }]))[0] as never)
      runStep(other.store, [x], [0.3])
      await other.tier.advanced([x])
      orThrow(await other.tier.end(x))
      // Capacity 2, nothing written by checkpoints: y only reaches Redis by its eviction.
      const a = worker(await topo.connect(), { checkpoint: { everySteps: 100 } }, 2)
      const [y, z] = [fresh("lru-y"), fresh("lru-z")]
      for (const [i, k] of [y, z].entries()) {
        orThrow((await a.tier.prepare([{ key: k, start: true }]))[0] as never)
        runStep(a.store, [k], [0.1 * (i + 1)])
        await a.tier.advanced([k])
      }
      // y is the least recently used: loading x into the store evicts it.
      const ready = await a.tier.prepare([{ key: y }, { key: x }])
      expect(ready).toEqual([
        { _tag: "Right", right: 1 },
        { _tag: "Right", right: 1 },
      ])
      runStep(a.store, [y, x], [0.5, 0.7])
      expect(await a.tier.advanced([y, x])).toEqual([
        { _tag: "Right", right: 2 },
        { _tag: "Right", right: 2 },
      ])
      expect(stateOf(a.store, y)).toEqual(alone([0.1, 0.5]))
      expect(stateOf(a.store, x)).toEqual(alone([0.3, 0.7]))
    })

    it("refuses a corrupt snapshot in Redis with a SnapshotFormatError naming the stream, and keeps it", async () => {
      const key = fresh("corrupt")
      const a = worker(await topo.connect())
      orThrow((await a.tier.prepare([{ key, start: true }]))[0] as never)
      runStep(a.store, [key], [0.5])
      await a.tier.advanced([key])
      orThrow(await a.tier.end(key))
      const raw = topo.raw().withTypeMapping({ [RESP_TYPES.BLOB_STRING]: Buffer })
      const hash = `statesaver:{s:${key}}`
      await raw.hSet(hash, "data", Buffer.from([1, 2, 3, 4, 5, 6, 7, 8, 9]))
      const b = worker(await topo.connect())
      const [r] = await b.tier.prepare([{ key }])
      const e = leftOf(r as never) as Error & { _tag: string; path: string }
      expect(e._tag).toBe("SnapshotFormatError")
      expect(e.path).toBe(streamPath(key))
      expect(e.message).toContain(key)
      expect(b.store.has(key)).toBe(false)
      // Not reset: the bytes are still there, and the lease was let go.
      expect(Array.from((await raw.hGet(hash, "data")) as Buffer)).toEqual([
        1, 2, 3, 4, 5, 6, 7, 8, 9,
      ])
      expect(await raw.exists(`${hash}:lease`)).toBe(0)
    })

    it("loads many streams in one call: a corrupt one fails alone, the others are restored bit-exactly", async () => {
      const keys = Array.from({ length: 6 }, (_, i) => fresh(`many${i}`))
      const a = worker(await topo.connect())
      for (const r of await a.tier.prepare(keys.map((key) => ({ key, start: true })))) orThrow(r)
      runStep(a.store, keys, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
      for (const r of await a.tier.advanced(keys)) orThrow(r)
      runStep(a.store, keys, [-0.5, 0.25, -0.125, 1, 0.75, -1])
      for (const r of await a.tier.advanced(keys)) orThrow(r)
      orThrow(await a.tier.close())
      const raw = topo.raw().withTypeMapping({ [RESP_TYPES.BLOB_STRING]: Buffer })
      const bad = keys[3] as string
      const stored = (await raw.hGet(`statesaver:{s:${bad}}`, "data")) as Buffer
      // Same length, a header byte changed: only a full decode can tell.
      const corrupt = Buffer.from(stored)
      corrupt[20] = 0x7b
      await raw.hSet(`statesaver:{s:${bad}}`, "data", corrupt)
      const b = worker(await topo.connect())
      const got = await b.tier.prepare(keys.map((key) => ({ key })))
      for (const [i, key] of keys.entries()) {
        if (key === bad) {
          const e = leftOf(got[i] as never) as Error & { _tag: string; path: string }
          expect(e._tag).toBe("SnapshotFormatError")
          expect(e.path).toBe(streamPath(key))
          expect(b.store.has(key)).toBe(false)
          continue
        }
        expect(got[i]).toEqual({ _tag: "Right", right: 2 })
        const xs = [
          [0.1, -0.5],
          [0.2, 0.25],
          [0.3, -0.125],
          [0.4, 1],
          [0.5, 0.75],
          [0.6, -1],
        ][i] as number[]
        expect(stateOf(b.store, key)).toEqual(alone(xs))
      }
    })

    it("refuses a snapshot of another spec with a SnapshotFormatError naming the stream", async () => {
      const key = fresh("foreign")
      const a = worker(await topo.connect())
      orThrow((await a.tier.prepare([{ key, start: true }]))[0] as never)
      runStep(a.store, [key], [0.5])
      await a.tier.advanced([key])
      orThrow(await a.tier.end(key))
      const { createStateStore, hostBackend } = await import("@statesaver/core")
      const tier = orThrow(createRedisTier({ client: await topo.connect() }))
      const other = orThrow(
        createStateStore({
          spec: { h: { shape: ["batch", 5], dtype: "float32" } },
          backend: hostBackend(),
          onEvict: tier.onEvict,
        }),
      )
      orThrow(tier.attach(other))
      const [r] = await tier.prepare([{ key }])
      const e = leftOf(r as never) as Error & { _tag: string; path: string; cause: unknown }
      expect(e._tag).toBe("SnapshotFormatError")
      expect(e.path).toBe(streamPath(key))
      expect((e.cause as { _tag: string })._tag).toBe("ShapeMismatchError")
      expect(other.has(key)).toBe(false)
    })

    it("delete forgets a stream here and in Redis", async () => {
      const key = fresh("gone")
      const a = worker(await topo.connect())
      orThrow((await a.tier.prepare([{ key, start: true }]))[0] as never)
      runStep(a.store, [key], [0.5])
      await a.tier.advanced([key])
      expect(await a.tier.delete(key)).toEqual({ _tag: "Right", right: true })
      expect(a.store.has(key)).toBe(false)
      const b = worker(await topo.connect())
      expect((leftOf((await b.tier.prepare([{ key }]))[0] as never) as { _tag: string })._tag).toBe(
        "KeyError",
      )
      expect(await b.tier.delete(key)).toEqual({ _tag: "Right", right: false })
    })

    it("checks its options: each bad one is an OptionError naming it", () => {
      const client = topo.raw() as unknown as Client
      const cases: [string, object][] = [
        ["client", { client: {} }],
        ["prefix", { client, prefix: "a{b" }],
        ["leaseMs", { client, leaseMs: 5 }],
        ["checkpoint.everySteps", { client, checkpoint: { everySteps: 0 } }],
        ["checkpoint.everyMs", { client, checkpoint: { everyMs: -1 } }],
        ["hold", { client, hold: false, checkpoint: { everySteps: 2 } }],
        ["acquireTimeoutMs", { client, acquireTimeoutMs: Number.NaN }],
        ["onMetric", { client, onMetric: 1 }],
      ]
      for (const [path, options] of cases) {
        const r = createRedisTier(options as never)
        const e = leftOf(r as never) as { _tag: string; path: string }
        expect([e._tag, e.path]).toEqual(["OptionError", path])
      }
    })

    it("hold: false releases each stream after its write, so any worker takes the next step", async () => {
      const key = fresh("roaming")
      const ws = [
        worker(await topo.connect(), { hold: false }),
        worker(await topo.connect(), { hold: false }),
      ]
      const inputs = [0.1, -0.4, 0.8, 0.05, -0.6, 0.3]
      for (const [i, x] of inputs.entries()) {
        const w = ws[i % 2] as (typeof ws)[number]
        const [r] = await w.tier.prepare([{ key, start: i === 0 }])
        expect(r).toEqual({ _tag: "Right", right: i })
        runStep(w.store, [key], [x])
        expect(await w.tier.advanced([key])).toEqual([{ _tag: "Right", right: i + 1 }])
        expect(w.store.has(key)).toBe(false)
      }
      // Its last step released it already: ending it (a push with end: true) succeeds.
      expect(await ws[1]?.tier.end(key)).toEqual({ _tag: "Right", right: undefined })
      const last = worker(await topo.connect())
      await last.tier.prepare([{ key } as { key: StreamKey }])
      expect(stateOf(last.store, key)).toEqual(alone(inputs))
    })
  })
})
