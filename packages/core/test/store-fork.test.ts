/**
 * `StateStore.fork` (one stream's rows copied into other streams, new or held) and `peek` (rows
 * read without counting as a use). Oracle: the snapshot bytes of the source stream, and of a
 * stream at init; a fork that returns Left changes nothing (faults are injected into the real
 * host backend).
 */
import { describe, expect, it } from "vitest"
import { createStateStore, disposeTree, orThrow } from "@statesaver/core"
import {
  PATHS,
  type Primitive,
  expectUnchanged,
  faultyHost,
  fullStore as fullStoreOf,
  leftOf,
  probe,
  spec,
  step,
} from "./store-fixtures.js"

/** A full store (capacity 3: a, b, c held off init, a the least recently used). */
const fullStore = (opts: { onEvict?: boolean; ttl?: boolean } = {}) =>
  fullStoreOf(opts, (store) => {
    step(store, ["a"], 1)
    step(store, ["b"], 2)
    step(store, ["c"], 3)
  })

describe("StateStore.fork", () => {
  it("copies from's rows into held and new keys (from among them stays), as copies, not aliases; the slab grows", async () => {
    const backend = faultyHost()
    const store = orThrow(createStateStore({ spec, backend, initialSlots: 1 }))
    step(store, ["a"], 1)
    step(store, ["b"], 2)
    const a = orThrow(await store.snapshot("a"))
    const live = backend.liveTensors()
    orThrow(store.fork("a", ["b", "a", "c", "d"]))
    expect(store.slots).toBe(4)
    expect(backend.liveTensors()).toBe(live)
    // A use of from, then of each target in order.
    expect(store.keys()).toEqual(["a", "b", "c", "d"])
    for (const k of ["a", "b", "c", "d"]) expect(orThrow(await store.snapshot(k))).toEqual(a)
    // Each target is a stream of its own.
    step(store, ["c"], 7)
    expect(orThrow(await store.snapshot("c"))).not.toEqual(a)
    for (const k of ["a", "b", "d"]) expect(orThrow(await store.snapshot(k))).toEqual(a)
    store.dispose()
    expect(backend.liveTensors()).toBe(0)
  })

  it("a stream at init forks into streams at init, without copying rows", async () => {
    const backend = faultyHost()
    const store = orThrow(createStateStore({ spec, backend }))
    step(store, ["a", "b"], 1)
    disposeTree(backend, orThrow(store.gather(["fresh"])))
    const init = orThrow(await store.snapshot("fresh"))
    orThrow(store.reset(["a"]))
    const copies = backend.calls.gather + backend.calls.scatter
    orThrow(store.fork("a", ["b", "new"]))
    expect(backend.calls.gather + backend.calls.scatter).toBe(copies)
    for (const k of ["a", "b", "new"]) expect(orThrow(await store.snapshot(k))).toEqual(init)
    store.dispose()
  })

  it("into a full store, new keys evict the least recently used streams through onEvict, never from", async () => {
    const s = fullStore()
    orThrow(s.store.fork("a", ["x"]))
    await s.store.flush()
    expect(s.evicted).toEqual(["b"])
    expect(s.store.keys()).toEqual(["c", "a", "x"])
    orThrow(s.store.fork("x", ["a", "y"]))
    await s.store.flush()
    expect(s.evicted).toEqual(["b", "c"])
    expect(s.store.keys()).toEqual(["x", "a", "y"])
    s.store.dispose()
  })

  it("bad keys are KeyErrors naming from or to[i]; nothing changes", async () => {
    const s = fullStore({ ttl: true })
    const before = await probe(s.store, s.backend)
    s.advance(1_000) // every stream is idle past the TTL: a call that went ahead would evict
    const cases: [unknown, unknown, Record<string, unknown>][] = [
      ["zzz", ["x"], { actual: "zzz", detail: "from" }],
      [Number.NaN, ["x"], { detail: "from" }],
      [null, ["x"], { detail: "from" }],
      ["a", ["x", "y", "x"], { actual: "x", detail: "to[0] and to[2] are the same key" }],
      ["a", ["b", "b"], { actual: "b", detail: "to[0] and to[1] are the same key" }],
      ["a", ["x", Number.POSITIVE_INFINITY], { detail: "to[1]" }],
      ["a", "x", { detail: "to" }],
      ["a", [], { detail: "to" }],
      // Capacity 3: three targets and from, or four targets, do not fit.
      ["a", ["x", "y", "z"], { detail: "3 keys in to" }],
      ["a", ["a", "x", "y", "z"], { detail: "4 keys" }],
    ]
    for (const [from, to, fields] of cases) {
      const err = leftOf(s.store.fork(from as never, to as never))
      expect(err, JSON.stringify([from, to])).toMatchObject({ _tag: "KeyError", ...fields })
    }
    s.advance(-1_000)
    await expectUnchanged(s.store, s.backend, before)
    await s.store.flush()
    expect(s.evicted).toEqual([])
    s.store.dispose()
  })

  it("a backend failure at any copy, read or write leaves every stream as it was and evicts nothing", async () => {
    // Into a full store: b held and overwritten, new in the slot of c (a and b are named: c goes).
    const act = (s: ReturnType<typeof fullStore>) => s.store.fork("a", ["b", "new"])
    const counts: Partial<Record<Primitive, number>> = {}
    for (const op of ["gather", "scatter", "toHost"] as const) {
      const dry = fullStore()
      const start = dry.backend.calls[op]
      orThrow(act(dry))
      const total = dry.backend.calls[op] - start
      counts[op] = total
      for (let failing = 0; failing < total; failing++) {
        const s = fullStore()
        const before = await probe(s.store, s.backend)
        s.backend.arm(op, failing)
        const err = leftOf(act(s))
        expect(s.backend.fired()).toBe(true)
        expect(err).toMatchObject({ _tag: "BackendError", path: PATHS[failing % 4] })
        await expectUnchanged(s.store, s.backend, before)
        await s.store.flush()
        expect(s.evicted).toEqual([])
        s.store.dispose()
        expect(s.backend.liveTensors()).toBe(0)
      }
    }
    // gather: 4 leaves to copy the victim for onEvict, 4 for the source's rows, 4 to back up
    // the slots written over; scatter: 4 leaves written; toHost: the victim's 4 leaves.
    expect(counts).toEqual({ gather: 12, scatter: 4, toHost: 4 })
  })

  it("after dispose: DisposedError", () => {
    const s = fullStore()
    s.store.dispose()
    expect(leftOf(s.store.fork("a", ["x"]))).toMatchObject({ _tag: "DisposedError" })
    expect(leftOf(s.store.peek(["a"]))).toMatchObject({ _tag: "DisposedError" })
  })
})

describe("StateStore.peek", () => {
  it("copies held streams' rows without counting as a use: recency and idle times stay", () => {
    const s = fullStore()
    const peeked = orThrow(s.store.peek(["c", "a"]))
    expect(s.store.keys()).toEqual(["a", "b", "c"])
    const gathered = orThrow(s.store.gather(["c", "a"]))
    expect(peeked).toEqual(gathered)
    expect(s.store.keys()).toEqual(["b", "c", "a"])
    disposeTree(s.backend, gathered)
    disposeTree(s.backend, peeked)
    s.store.dispose()
    // TTL 50 ms: a stream read 30 ms after its last use is idle past the TTL 30 ms later if the
    // read was a peek, and not if it was a gather.
    for (const read of ["peek", "gather"] as const) {
      const t = fullStore({ ttl: true, onEvict: false })
      t.advance(30)
      disposeTree(t.backend, orThrow(t.store[read](["a"])))
      t.advance(30)
      expect(t.store.keys(), read).toEqual(read === "peek" ? [] : ["a"])
      t.store.dispose()
    }
  })

  it("every key must be held: new keys are KeyErrors and are not added", async () => {
    const s = fullStore()
    const before = await probe(s.store, s.backend)
    expect(leftOf(s.store.peek(["a", "new"]))).toMatchObject({
      _tag: "KeyError",
      actual: "new",
      detail: "keys[1]",
    })
    expect(leftOf(s.store.peek(["a", "a"]))).toMatchObject({ _tag: "KeyError" })
    await expectUnchanged(s.store, s.backend, before)
    s.store.dispose()
  })
})
