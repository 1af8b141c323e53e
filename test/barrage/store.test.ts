import { describe, expect, it } from "vitest"
import {
  type HostTensor,
  type StateBackend,
  type StateStore,
  type StreamKey,
  createStateStore,
  disposeTree,
  hostBackend,
  hostTensor,
  orThrow,
} from "@statesaver/core"
import { type BadInput, errorOf, expectRefused } from "./harness.js"

const spec = { h: { shape: ["batch", 3], dtype: "float32" as const } }
type Store = StateStore<HostTensor>

/** The real host backend, made to throw from one primitive on command (fault injection). */
function faulty() {
  const host = hostBackend()
  const fail = { op: "" }
  const backend = new Proxy(host, {
    get(target, key, receiver) {
      const v = Reflect.get(target, key, receiver) as unknown
      if (typeof v !== "function") return v
      return (...args: unknown[]) => {
        if (key === fail.op) throw new Error(`injected ${String(key)} failure`)
        return (v as (...a: unknown[]) => unknown).apply(target, args)
      }
    },
  })
  return { host, backend: backend as StateBackend<HostTensor>, fail }
}

/** Streams a, b, c held off init, with distinct rows; capacity 3; onEvict recorded. */
function fullStore(extra: Record<string, unknown> = {}) {
  const f = faulty()
  const evicted: StreamKey[] = []
  let now = 1_000
  const store = orThrow(
    createStateStore({
      spec,
      backend: f.backend,
      capacity: 3,
      idleTtlMs: 100,
      clock: () => now,
      onEvict: (k: StreamKey) => void evicted.push(k),
      ...extra,
    }),
  )
  const keys = ["a", "b", "c"]
  const batch = orThrow(store.gather(keys))
  disposeTree(f.backend, batch)
  orThrow(store.scatter(keys, { h: hostTensor("float32", [3, 3], [1, 2, 3, 4, 5, 6, 7, 8, 9]) }))
  return { ...f, store, evicted, advance: (ms: number) => (now += ms) }
}

/** Every stream's snapshot and the key order: what "unchanged" means for a store. */
async function storeState(store: Store): Promise<Uint8Array> {
  const parts: Uint8Array[] = [new TextEncoder().encode(JSON.stringify(store.keys()))]
  for (const k of store.keys()) parts.push(orThrow(await store.snapshot(k)))
  return Uint8Array.from(parts.flatMap((p) => [...p]))
}

describe("barrage: StateStore", () => {
  const calls: BadInput<Store>[] = []
  const keyCase = (name: string, category: 1 | 2 | 5, call: (s: Store) => unknown, says?: string) =>
    calls.push({ name, category, call, tag: "KeyError", ...(says ? { says: [says] } : {}) })
  for (const [label, keys, says] of [
    ["null", null, "null"],
    ["undefined", undefined, "undefined"],
    ["a string", "a", '"a"'],
    ["a Uint8Array", new Uint8Array(2), "Uint8Array(2)"],
    ["[]", [], "[]"],
    ["[null]", [null], "null"],
    ["[NaN]", [Number.NaN], "NaN"],
    ["[{}]", [{}], "{}"],
    ['["a", "a"]', ["a", "a"], '"a"'],
    ["more keys than the capacity", ["a", "b", "c", "d"], "4"],
  ] as const) {
    const cat = label.includes("NaN") || label.includes('"') ? 5 : 1
    keyCase(`gather(${label})`, cat, (s) => s.gather(keys as never), says)
    keyCase(`reset(${label})`, cat, (s) => s.reset(keys as never), says)
  }
  keyCase("scatter to a key not held", 2, (s) =>
    s.scatter(["zz"], { h: hostTensor("float32", [1, 3], [0, 0, 0]) }),
  )
  keyCase("reset of a key not held", 2, (s) => s.reset(["zz"]), '"zz"')
  keyCase("snapshot of a key not held", 2, (s) => s.snapshot("zz"), '"zz"')
  keyCase("snapshot(null)", 1, (s) => s.snapshot(null as never), "null")
  keyCase("restore with key NaN", 5, (s) => s.restore(Number.NaN, new Uint8Array(16)), "NaN")
  calls.push({
    name: "scatter(null tree)",
    category: 1,
    call: (s) => s.scatter(["a"], null as never),
    tag: "StructureMismatchError",
    path: "",
  })
  calls.push({
    name: "scatter of a wrong row count",
    category: 2,
    call: (s) => s.scatter(["a"], { h: hostTensor("float32", [2, 3], [0, 0, 0, 0, 0, 0]) }),
    tag: "BatchSizeMismatchError",
    path: "h",
  })
  calls.push({
    name: "restore of a decoded Snapshot whose leaves hold null",
    category: 1,
    call: (s) => s.restore("a", { batchDim: "batch", leaves: [null], tensors: new Map() } as never),
    tag: "SnapshotFormatError",
  })
  calls.push({
    name: "restore of bytes that are not a snapshot",
    category: 1,
    call: (s) => s.restore("a", "bytes" as never),
    tag: "SnapshotFormatError",
  })

  // Category 3: a call that fails after it would evict leaves every stream where it was.
  const fault = (
    name: string,
    op: string,
    call: (s: Store) => unknown,
    tag: BadInput<Store>["tag"],
  ) => ({ name, op, call, tag })
  const faults = [
    fault(
      "a full store's gather of a new key, the backend's gather failing",
      "gather",
      (s) => s.gather(["d"]),
      "BackendError",
    ),
    fault(
      "a scatter to held streams, the backend's scatter failing",
      "scatter",
      (s) => s.scatter(["a", "c"], { h: hostTensor("float32", [2, 3], [0, 0, 0, 0, 0, 0]) }),
      "BackendError",
    ),

    fault(
      "a full store's restore of a new key, fromHost failing",
      "fromHost",
      (s) => s.restore("d", oneRow),
      "BackendError",
    ),
    fault(
      "a full store's restore of a new key, scatter failing",
      "scatter",
      (s) => s.restore("d", oneRow),
      "BackendError",
    ),
  ]
  let oneRow: Uint8Array = new Uint8Array(0)

  it("has a one-row snapshot to restore", async () => {
    const s = fullStore()
    oneRow = orThrow(await s.store.snapshot("a"))
    expect(oneRow.byteLength).toBeGreaterThan(8)
  })

  for (const c of calls) {
    it(`[${c.category}] ${c.name} is refused with ${c.tag}, nothing changed`, async () => {
      const s = fullStore()
      await expectRefused(
        s.store,
        { state: () => storeState(s.store), live: () => s.host.liveTensors() },
        c,
      )
      expect(s.evicted).toEqual([])
    })
  }

  for (const c of faults) {
    it(`[3] ${c.name} is a ${c.tag}; no stream evicted, onEvict not called`, async () => {
      const s = fullStore()
      s.advance(50) // nothing idle yet
      const before = await storeState(s.store)
      const live = s.host.liveTensors()
      s.fail.op = c.op
      const e = await errorOf(() => c.call(s.store))
      s.fail.op = ""
      expect(e._tag).toBe(c.tag)
      expect(e.message).toContain(`injected ${c.op} failure`)
      expect(s.store.keys()).toEqual(["a", "b", "c"])
      expect(await storeState(s.store)).toEqual(before)
      expect(s.host.liveTensors()).toBe(live)
      await s.store.flush()
      expect(s.evicted).toEqual([])
    })
  }

  it("[3] a gather with a duplicate key evicts no idle stream first", async () => {
    const s = fullStore()
    s.advance(500) // a, b, c all idle past the TTL
    const e = await errorOf(() => s.store.gather(["d", "d"]))
    expect(e._tag).toBe("KeyError")
    expect(e.message).toContain('"d"')
    await s.store.flush()
    expect(s.evicted).toEqual([])
  })

  const options: [string, 2 | 5, Record<string, unknown>, string, string][] = [
    ['capacity "10"', 5, { capacity: "10" }, "capacity", '"10"'],
    ["capacity 0", 2, { capacity: 0 }, "capacity", "0"],
    ["capacity 1.5", 2, { capacity: 1.5 }, "capacity", "1.5"],
    ["capacity NaN", 5, { capacity: Number.NaN }, "capacity", "NaN"],
    ["idleTtlMs -1", 2, { idleTtlMs: -1 }, "idleTtlMs", "-1"],
    ["idleTtlMs NaN", 5, { idleTtlMs: Number.NaN }, "idleTtlMs", "NaN"],
    ['idleTtlMs "5"', 5, { idleTtlMs: "5" }, "idleTtlMs", '"5"'],
    ["onEvict 42", 2, { onEvict: 42 }, "onEvict", "42"],
    ['clock "now"', 5, { clock: "now" }, "clock", '"now"'],
    ["initialSlots 0", 2, { initialSlots: 0 }, "initialSlots", "0"],
    [
      "initialSlots -Infinity",
      5,
      { initialSlots: Number.NEGATIVE_INFINITY },
      "initialSlots",
      "-Infinity",
    ],
    ["backend null", 2, { backend: null }, "backend", "null"],
  ]
  for (const [name, category, extra, path, says] of options) {
    it(`[${category}] createStateStore with ${name} is an OptionError naming ${path}`, async () => {
      const host = hostBackend()
      await expectRefused(
        null,
        { state: async () => new Uint8Array(0), live: () => host.liveTensors() },
        {
          name,
          category,
          call: () => createStateStore({ spec, backend: host, ...extra } as never),
          tag: "OptionError",
          path,
          says: [says],
        },
      )
    })
  }

  it("[2] a clock that reads NaN evicts nothing and is reported as an OptionError", async () => {
    let reading = 1_000
    const s = fullStore({ clock: () => reading })
    reading = Number.NaN
    const e = await errorOf(() => s.store.gather(["a"]))
    expect(e._tag).toBe("OptionError")
    expect(e.path).toBe("clock")
    reading = 1_001
    expect(s.store.keys()).toEqual(["a", "b", "c"])
  })

  // Category 6: onEvict edges.
  it("[6] flush reports every failed onEvict in one AggregateError", async () => {
    const f = faulty()
    const store = orThrow(
      createStateStore({
        spec,
        backend: f.backend,
        capacity: 1,
        onEvict: (k: StreamKey) => Promise.reject(new Error(`lost ${String(k)}`)),
      }),
    )
    for (const k of ["a", "b", "c"]) disposeTree(f.backend, orThrow(store.gather([k])))
    const failure = await store.flush().then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(failure).toBeInstanceOf(AggregateError)
    const messages = (failure as AggregateError).errors.map((e: unknown) => String(e))
    expect(messages.some((m) => m.includes("lost a"))).toBe(true)
    expect(messages.some((m) => m.includes("lost b"))).toBe(true)
  })

  it("[6] an onEvict that restores into the full store cannot evict again without bound", async () => {
    const f = faulty()
    let calls = 0
    let inner: unknown
    const store: Store = orThrow(
      createStateStore({
        spec,
        backend: f.backend,
        capacity: 1,
        onEvict: (k: StreamKey, bytes: Uint8Array) => {
          calls++
          if (calls > 50) throw new Error("unbounded")
          inner = store.restore(k, bytes)
        },
      }),
    )
    disposeTree(f.backend, orThrow(store.gather(["a"])))
    disposeTree(f.backend, orThrow(store.gather(["b"])))
    await store.flush()
    expect(calls).toBe(1)
    expect((inner as { _tag: string; left?: { _tag: string } }).left?._tag).toBe("BusyError")
    expect(store.keys()).toEqual(["b"])
  })

  it("[6] a stream gathered while its onEvict is pending is refused, not silently started at init", async () => {
    const f = faulty()
    let release: () => void = () => undefined
    const store = orThrow(
      createStateStore({
        spec,
        backend: f.backend,
        capacity: 1,
        onEvict: () => new Promise<void>((r) => (release = r)),
      }),
    )
    disposeTree(f.backend, orThrow(store.gather(["a"])))
    disposeTree(f.backend, orThrow(store.gather(["b"]))) // evicts a
    await Promise.resolve()
    await new Promise((r) => setTimeout(r, 0))
    const e = await errorOf(() => store.gather(["a"]))
    expect(["KeyError", "BusyError"]).toContain(e._tag)
    expect(e.message).toContain("flush")
    release()
    await store.flush()
    expect(store.keys()).toEqual(["b"])
  })
})
