/**
 * A store call that returns Left changes nothing: no eviction (capacity or idle), no recency
 * change, no onEvict, no leaked tensor. Faults are injected into the real host backend.
 */
import { describe, expect, it } from "vitest"
import { createStateStore, disposeTree, orThrow } from "@statesaver/core"
import {
  PATHS,
  type Primitive,
  expectUnchanged,
  faultyHost,
  fullStore,
  leftOf,
  probe,
  rowsOf,
  spec,
  step,
} from "./store-fixtures.js"

/** Every call of `op` the successful run of `act` makes, each made to fail in turn. */
async function eachFault(
  op: Primitive,
  act: (s: ReturnType<typeof fullStore>) => { _tag: "Left" | "Right" },
  expectPath: (failing: number) => string,
  opts: {
    onEvict?: boolean
    ttl?: boolean
    before?: (s: ReturnType<typeof fullStore>) => void
  } = {},
): Promise<number> {
  // A dry run counts the calls of `op`.
  const dry = fullStore(opts)
  opts.before?.(dry)
  const start = dry.backend.calls[op]
  const ok = act(dry)
  expect(ok._tag).toBe("Right")
  const total = dry.backend.calls[op] - start
  for (let failing = 0; failing < total; failing++) {
    const s = fullStore(opts)
    opts.before?.(s)
    const before = await probe(s.store, s.backend)
    s.backend.arm(op, failing)
    const err = leftOf(act(s) as never) as { _tag: string; path: string; cause: unknown }
    expect(s.backend.fired()).toBe(true)
    expect(err._tag).toBe("BackendError")
    expect(err.path).toBe(expectPath(failing))
    expect((err.cause as Error).message).toBe(`injected fault in ${op}`)
    await expectUnchanged(s.store, s.backend, before)
    await s.store.flush()
    expect(s.evicted).toEqual([])
    s.store.dispose()
    expect(s.backend.liveTensors()).toBe(0)
  }
  return total
}

describe("gather into a full store: a backend failure evicts nothing", () => {
  const gatherNew = (s: ReturnType<typeof fullStore>) => {
    const r = s.store.gather(["new", "c"])
    if (r._tag === "Right") disposeTree(s.backend, r.right)
    return r
  }

  it("gather fails while copying the victim for onEvict or building the batch", async () => {
    // 4 leaves for the victim's copy, then 4 for the batch.
    const calls = await eachFault("gather", gatherNew, (i) => PATHS[i % 4] as string)
    expect(calls).toBe(8)
  })

  it("toHost throws while starting to read the victim", async () => {
    expect(await eachFault("toHost", gatherNew, (i) => PATHS[i] as string)).toBe(4)
  })

  it("without onEvict too (no copy is made; the batch copy fails)", async () => {
    const calls = await eachFault("gather", gatherNew, (i) => PATHS[i] as string, {
      onEvict: false,
    })
    expect(calls).toBe(4)
  })

  it("growing the slab fails: no slot added, nothing evicted", async () => {
    const backend = faultyHost()
    const store = orThrow(createStateStore({ spec, backend, initialSlots: 2 }))
    step(store, ["a", "b"], 1)
    const before = await probe(store, backend)
    backend.arm("gather", 1)
    const err = leftOf(store.gather(["c"]))
    expect(err).toMatchObject({ _tag: "BackendError", path: "[0][1]" })
    await expectUnchanged(store, backend, before)
    // The same call then succeeds, and the new key starts at init.
    disposeTree(backend, orThrow(store.gather(["c"])))
    expect(store.slots).toBe(4)
    store.dispose()
  })

  it("the evicted stream's onEvict runs only once the call succeeded", async () => {
    const s = fullStore()
    const victim = orThrow(await s.store.snapshot("a"))
    s.backend.arm("gather", 5)
    leftOf(s.store.gather(["new"]))
    await s.store.flush()
    expect(s.evicted).toEqual([])
    disposeTree(s.backend, orThrow(s.store.gather(["new"])))
    await s.store.flush()
    expect(s.evicted).toEqual(["a"])
    expect(s.store.keys()).toEqual(["b", "c", "new"])
    void victim
    s.store.dispose()
  })
})

describe("a Left from validation comes before any idle sweep", () => {
  it("a duplicate key, an unknown key in scatter, a bad batch: idle streams stay", async () => {
    const s = fullStore({ ttl: true })
    const before = await probe(s.store, s.backend)
    s.advance(1_000) // every stream is idle past the TTL now
    const errs = [
      leftOf(s.store.gather(["a", "a"])),
      leftOf(s.store.gather(["new", "new"])),
      leftOf(s.store.scatter(["a", "zzz"], rowsOf(2, 1) as never)),
      leftOf(s.store.scatter(["a"], rowsOf(2, 1) as never)),
      leftOf(s.store.reset(["a", "a"])),
      leftOf(s.store.restore("x", new Uint8Array(3))),
    ]
    expect(errs.map((e) => e._tag)).toEqual([
      "KeyError",
      "KeyError",
      "KeyError",
      "BatchSizeMismatchError",
      "KeyError",
      "SnapshotFormatError",
    ])
    s.advance(-1_000)
    await expectUnchanged(s.store, s.backend, before)
    await s.store.flush()
    expect(s.evicted).toEqual([])
    s.store.dispose()
  })

  it("a backend failure in scatter: idle streams are not evicted, onEvict not called", async () => {
    const s = fullStore({ ttl: true })
    const before = await probe(s.store, s.backend)
    s.advance(45) // a and b idle past the TTL, c not
    s.backend.arm("scatter", 0)
    const next = rowsOf(1, 7)
    const err = leftOf(s.store.scatter(["c"], next as never))
    expect(err).toMatchObject({ _tag: "BackendError", path: "[0][0]" })
    // The caller's tensors are still the caller's.
    for (const t of next.flat()) expect(s.backend.describe(t)).toBeDefined()
    s.advance(-45)
    await expectUnchanged(s.store, s.backend, before)
    await s.store.flush()
    expect(s.evicted).toEqual([])
    s.advance(45)
    orThrow(s.store.scatter(["c"], next as never))
    await s.store.flush()
    expect(s.evicted).toEqual(["a", "b"])
    s.store.dispose()
  })

  it("copying an idle stream for onEvict fails: the scatter is refused and nothing changes", async () => {
    const s = fullStore({ ttl: true })
    const before = await probe(s.store, s.backend)
    s.advance(45)
    s.backend.arm("gather", 2)
    const next = rowsOf(1, 7)
    const err = leftOf(s.store.scatter(["c"], next as never))
    expect(err).toMatchObject({ _tag: "BackendError", path: "[1][0]" })
    expect(err.message).toContain('copying evicted stream "a" for onEvict')
    s.advance(-45)
    await expectUnchanged(s.store, s.backend, before)
    disposeTree(s.backend, next as never)
    s.store.dispose()
  })
})

describe("restore: atomic, also into a full store", () => {
  const bytes = async () => {
    const s = fullStore()
    const b = orThrow(await s.store.snapshot("b"))
    s.store.dispose()
    return b
  }

  it("a new key into a full store: fromHost, the victim copy, reading it, or the write fails", async () => {
    const b = await bytes()
    const restoreNew = (s: ReturnType<typeof fullStore>) => s.store.restore("new", b)
    expect(await eachFault("fromHost", restoreNew, (i) => PATHS[i] as string)).toBe(4)
    // 4 leaves to copy the victim for onEvict, 4 to back up its slot before writing over it.
    expect(await eachFault("gather", restoreNew, (i) => PATHS[i % 4] as string)).toBe(8)
    expect(await eachFault("toHost", restoreNew, (i) => PATHS[i] as string)).toBe(4)
    // A write failing on leaf 2 has written leaves 0 and 1 of the victim's slot: put back.
    expect(await eachFault("scatter", restoreNew, (i) => PATHS[i] as string)).toBe(4)
  })

  it("a held key: a write failing half-way puts the stream's rows back", async () => {
    const b = await bytes()
    const restoreHeld = (s: ReturnType<typeof fullStore>) => s.store.restore("a", b)
    expect(await eachFault("scatter", restoreHeld, (i) => PATHS[i] as string)).toBe(4)
  })

  it("without onEvict, a victim whose slot is written half-way still comes back whole", async () => {
    const b = await bytes()
    const restoreNew = (s: ReturnType<typeof fullStore>) => s.store.restore("new", b)
    expect(
      await eachFault("scatter", restoreNew, (i) => PATHS[i] as string, { onEvict: false }),
    ).toBe(4)
  })
})

describe("scatter into streams at init is atomic", () => {
  it("a write failing on a later leaf leaves a new stream at init", async () => {
    const backend = faultyHost()
    const store = orThrow(createStateStore({ spec, backend }))
    step(store, ["a"], 1)
    disposeTree(backend, orThrow(store.gather(["fresh"])))
    const before = await probe(store, backend)
    backend.arm("scatter", 2)
    const next = rowsOf(1, 5)
    expect(leftOf(store.scatter(["fresh"], next as never))).toMatchObject({
      _tag: "BackendError",
      path: "[1][0]",
    })
    await expectUnchanged(store, backend, before)
    disposeTree(backend, next as never)
    store.dispose()
    expect(backend.liveTensors()).toBe(0)
  })
})
