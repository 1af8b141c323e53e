/** onEvict edges: every failure reported, no endless eviction chains, no silent restart at init. */
import { describe, expect, it } from "vitest"
import {
  type StateStore,
  type StreamKey,
  createStateStore,
  disposeTree,
  hostBackend,
  orThrow,
} from "@statesaver/core"
import { faultyHost, leftOf, spec, step } from "./store-fixtures.js"

type OnEvict = (key: StreamKey, bytes: Uint8Array, reason: "capacity" | "idle") => unknown

/** Capacity 2 with a and b held and off init; `onEvict` decided by the test. */
function pair(onEvict: OnEvict, backend = hostBackend()) {
  const store = orThrow(
    createStateStore({
      spec,
      backend,
      capacity: 2,
      onEvict: (k, b, r) => onEvict(k, b, r) as void,
    }),
  )
  step(store, ["a", "b"], 1)
  return store
}

const gatherAndFree = (store: StateStore<unknown>, keys: StreamKey[]) => {
  const r = store.gather(keys)
  if (r._tag === "Right") disposeTree(store.backend, r.right)
  return r
}

describe("flush reports every failure", () => {
  it("rejects with an AggregateError of all callback failures, in order, naming the keys", async () => {
    const errors = new Map<StreamKey, Error>()
    const store = pair(async (key) => {
      await Promise.resolve()
      const e = new Error(`persist ${String(key)} failed`)
      errors.set(key, e)
      throw e
    })
    orThrow(gatherAndFree(store, ["c", "d"])) // evicts a, then b
    const failure = await store.flush().then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(failure).toBeInstanceOf(AggregateError)
    const agg = failure as AggregateError
    expect(agg.errors).toEqual([errors.get("a"), errors.get("b")])
    expect(agg.message).toContain('"a": persist a failed')
    expect(agg.message).toContain('"b": persist b failed')
    // Reported once: the next flush has nothing to report.
    await expect(store.flush()).resolves.toBeUndefined()
    store.dispose()
  })

  it("one failure is an AggregateError too; a sync throw counts like a rejection", async () => {
    const boom = new Error("sync boom")
    const store = pair((key) => {
      if (key === "a") throw boom
    })
    orThrow(gatherAndFree(store, ["c", "d"]))
    const failure = (await store.flush().catch((e: unknown) => e)) as AggregateError
    expect(failure).toBeInstanceOf(AggregateError)
    expect(failure.errors).toEqual([boom])
    store.dispose()
  })

  it("a stream that cannot be read to the host is reported as a BackendError naming it", async () => {
    const backend = faultyHost()
    const seen: StreamKey[] = []
    const store = pair((k) => void seen.push(k), backend)
    backend.arm("toHost", 1, "reject")
    orThrow(gatherAndFree(store, ["c"]))
    const failure = (await store.flush().catch((e: unknown) => e)) as AggregateError
    expect(failure).toBeInstanceOf(AggregateError)
    expect(failure.errors).toHaveLength(1)
    expect(failure.errors[0]).toMatchObject({ _tag: "BackendError", operation: "toHost" })
    expect((failure.errors[0] as Error).message).toContain('reading evicted stream "a"')
    expect(seen).toEqual([])
    store.dispose()
    expect(backend.liveTensors()).toBe(0)
  })
})

describe("onEvict that evicts again cannot chain forever", () => {
  it("a sync restore into the full store from onEvict is a BusyError; nothing is lost", async () => {
    const kept = new Map<StreamKey, Uint8Array>()
    const results: string[] = []
    let calls = 0
    const store: StateStore<unknown> = pair((key, bytes) => {
      // Bounded so that a regression fails the test instead of hanging it.
      if (++calls > 20) return
      const r = (store as StateStore<unknown>).restore(key, bytes)
      results.push(r._tag === "Left" ? r.left._tag : "Right")
      if (r._tag === "Left") kept.set(key, bytes)
    })
    const aBefore = orThrow(await store.snapshot("a"))
    orThrow(gatherAndFree(store, ["c"]))
    await store.flush()
    expect(results).toEqual(["BusyError"])
    expect(kept.get("a")).toEqual(aBefore)
    expect(store.keys()).toEqual(["b", "c"])
    // Outside the callback, the stream comes back (evicting the least recently used, b).
    orThrow(store.restore("a", kept.get("a") as Uint8Array))
    expect(orThrow(await store.snapshot("a"))).toEqual(aBefore)
    store.dispose()
  })

  it("a restore of its own stream after an await is a BusyError until the callback settles", async () => {
    let calls = 0
    const results: string[] = []
    const store: StateStore<unknown> = pair(async (key, bytes) => {
      calls++
      await new Promise((r) => setTimeout(r, 1))
      // Bounded so that a regression fails the test instead of hanging it.
      if (calls > 20) return
      const r = (store as StateStore<unknown>).restore(key, bytes)
      results.push(r._tag === "Left" ? r.left._tag : "Right")
    })
    orThrow(gatherAndFree(store, ["c"]))
    await store.flush()
    expect(calls).toBe(1)
    expect(results).toEqual(["BusyError"])
    store.dispose()
  })

  it("the BusyError says why and what to do", async () => {
    let message = ""
    let calls = 0
    const store: StateStore<unknown> = pair((key, bytes) => {
      if (++calls > 20) return
      const r = (store as StateStore<unknown>).restore(key, bytes)
      if (r._tag === "Left") message = r.left.message
    })
    orThrow(gatherAndFree(store, ["c"]))
    await store.flush()
    expect(message).toContain("restore")
    expect(message).toContain("await store.flush()")
    store.dispose()
  })

  it("holds answers membership without evicting; has sweeps first", async () => {
    let now = 0
    const evicted: StreamKey[] = []
    const store = orThrow(
      createStateStore({
        spec,
        backend: hostBackend(),
        capacity: 3,
        idleTtlMs: 10,
        clock: () => now,
        onEvict: (key) => {
          evicted.push(key)
        },
      }),
    )
    step(store, ["a"], 1)
    now = 20 // a is idle past the TTL
    expect(store.holds("a")).toBe(true)
    expect(store.holds("zzz")).toBe(false)
    expect(store.holds(Number.NaN as never)).toBe(false)
    await store.flush()
    expect(evicted).toEqual([])
    expect(store.has("a")).toBe(false)
    await store.flush()
    expect(evicted).toEqual(["a"])
    store.dispose()
  })

  it("from inside onEvict, calls that need no eviction work and sweeps evict nothing", async () => {
    let now = 0
    const log: string[] = []
    const store: StateStore<unknown> = orThrow(
      createStateStore({
        spec,
        backend: hostBackend(),
        capacity: 3,
        idleTtlMs: 10,
        clock: () => now,
        onEvict: (key, bytes) => {
          const s = store as StateStore<unknown>
          log.push(`evict ${String(key)}`)
          // Bounded so that a regression fails the test instead of hanging it.
          if (log.length > 100) return
          log.push(`sweep ${s.sweep()}`)
          log.push(`gather held ${gatherAndFree(s, ["c"])._tag}`)
          const r = gatherAndFree(s, ["x", "y", "z"])
          log.push(`gather new ${r._tag === "Left" ? r.left._tag : "Right"}`)
          log.push(`restore held ${s.restore("c", bytes)._tag}`)
        },
      }),
    )
    step(store, ["a", "b"], 1)
    now = 5
    step(store, ["c"], 2)
    now = 12 // a and b idle
    expect(store.sweep()).toBe(2)
    now = 30 // c idle too when the callbacks run: their sweeps must not evict it
    await store.flush()
    expect(log).toEqual([
      "evict a",
      "sweep 0",
      "gather held Right",
      "gather new BusyError",
      "restore held Right",
      "evict b",
      "sweep 0",
      "gather held Right",
      "gather new BusyError",
      "restore held Right",
    ])
    store.dispose()
  })
})

describe("a stream whose onEvict is still running", () => {
  it("is refused by gather, scatter, reset and snapshot with a KeyError that says so", async () => {
    let release: () => void = () => undefined
    const gate = new Promise<void>((r) => (release = r))
    const received = new Map<StreamKey, Uint8Array>()
    const store = pair(async (key, bytes) => {
      received.set(key, bytes)
      await gate
    })
    const aBefore = orThrow(await store.snapshot("a"))
    orThrow(gatherAndFree(store, ["c"])) // evicts a
    await new Promise((r) => setTimeout(r, 5)) // its callback has started and waits
    expect(received.has("a")).toBe(true)
    const refusals = [
      store.gather(["a"]),
      store.gather(["c", "a"]),
      store.scatter(["a"], [] as never),
      store.reset(["a"]),
      await store.snapshot("a"),
    ]
    for (const r of refusals) {
      const err = leftOf(r)
      expect(err).toMatchObject({ _tag: "KeyError", actual: "a" })
      expect(err.message).toContain("onEvict callback is still running")
      expect(err.message).toContain("await store.flush()")
    }
    expect(store.keys()).toEqual(["b", "c"])
    release()
    await store.flush()
    // Settled: the key is free again; restoring it brings its state back exactly.
    orThrow(store.restore("a", received.get("a") as Uint8Array))
    expect(orThrow(await store.snapshot("a"))).toEqual(aBefore)
    store.dispose()
  })

  it("without onEvict an evicted key simply starts again at init", async () => {
    const backend = hostBackend()
    const store = orThrow(createStateStore({ spec, backend, capacity: 1 }))
    orThrow(gatherAndFree(store, ["z"]))
    const fresh = orThrow(await store.snapshot("z"))
    step(store, ["a"], 3)
    orThrow(gatherAndFree(store, ["b"]))
    orThrow(gatherAndFree(store, ["a"]))
    expect(orThrow(await store.snapshot("a"))).toEqual(fresh)
    store.dispose()
  })
})

describe("sweep", () => {
  it("a stream that cannot be copied for onEvict stays held; flush reports it", async () => {
    const backend = faultyHost()
    let now = 0
    const evicted: StreamKey[] = []
    const store = orThrow(
      createStateStore({
        spec,
        backend,
        idleTtlMs: 10,
        clock: () => now,
        onEvict: (k) => void evicted.push(k),
      }),
    )
    step(store, ["a", "b"], 1)
    now = 20
    backend.arm("gather", 0)
    expect(store.sweep()).toBe(1)
    expect(store.size).toBe(1)
    const failure = (await store.flush().catch((e: unknown) => e)) as AggregateError
    expect(failure.errors[0]).toMatchObject({ _tag: "BackendError", operation: "gather" })
    expect(failure.message).toContain('"a"')
    expect(evicted).toEqual(["b"])
    expect(store.sweep()).toBe(1)
    await store.flush()
    expect(evicted).toEqual(["b", "a"])
    store.dispose()
    expect(backend.liveTensors()).toBe(0)
  })
})
