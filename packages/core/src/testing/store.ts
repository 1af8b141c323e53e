import { expect } from "vitest"
import type { StateBackend } from "../backend.js"
import { HostTensor } from "../host-tensor.js"
import { decodeSnapshot } from "../snapshot.js"
import { type StateStore, type StreamKey, createStateStore, disposeTree } from "../state-store.js"
import { type StateSpec, init } from "../state-spec.js"
import { type StateTree, flatten, unflatten } from "../state-tree.js"
import { expectLeft, expectLive, unwrap } from "./fixtures.js"
import type { Kit, KitTest } from "./harness.js"
import { mulberry32 } from "./random.js"

/** A float32 spec with the batch axis at 0 and at 1, one leaf with a constant init. */
const storeSpec: StateSpec = {
  h: { shape: ["batch", 3], dtype: "float32" },
  c: { shape: [2, "batch", 2], dtype: "float32", init: init.constant(0.5) },
}

/** Reads a batch tree to host arrays in leaf order, then frees it. */
async function readBatch<T, In>(
  backend: StateBackend<T, In>,
  tree: StateTree<T>,
): Promise<HostTensor[]> {
  const leaves = flatten<T>(tree).leaves
  const hosts = await Promise.all(leaves.map((t) => backend.toHost(t)))
  disposeTree(backend, tree)
  return hosts
}

/** Row `r` of a host tensor along `axis`, as numbers. */
function row(t: HostTensor, axis: number, r: number): number[] {
  const outer = t.shape.slice(0, axis).reduce((a, b) => a * b, 1)
  const n = t.shape[axis] as number
  const inner = t.shape.slice(axis + 1).reduce((a, b) => a * b, 1)
  const out: number[] = []
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) out.push(Number(t.data[(o * n + r) * inner + i]))
  }
  return out
}

const AXES = [1, 0] // flatten order: c (batch axis 1), h (batch axis 0)
const INIT_ROWS = [new Array(4).fill(0.5), new Array(3).fill(0)]

/** The model-free step every stream takes: x -> 0.5 x + 1 + key-dependent input. */
const stepRow = (xs: number[], input: number): number[] =>
  xs.map((x) => Math.fround(0.5 * x + 1 + input))

/**
 * Gathers `keys`, steps every row through the host, and scatters back what a model would give
 * (the kit's `input`).
 */
async function step<T, In>(
  kit: Kit<T, In>,
  store: StateStore<T, In>,
  keys: StreamKey[],
  inputs: number[],
): Promise<void> {
  const backend = store.backend
  const batch = unwrap(store.gather(keys))
  const hosts = await readBatch(backend, batch)
  const next = hosts.map((h, leaf) => {
    const axis = AXES[leaf] as number
    const out = new HostTensor("float32", h.shape)
    const outer = h.shape.slice(0, axis).reduce((a, b) => a * b, 1)
    const inner = h.shape.slice(axis + 1).reduce((a, b) => a * b, 1)
    keys.forEach((_, r) => {
      const stepped = stepRow(row(h, axis, r), inputs[r] as number)
      for (let o = 0; o < outer; o++) {
        for (let i = 0; i < inner; i++) {
          ;(out.data as Float32Array)[(o * keys.length + r) * inner + i] = stepped[
            o * inner + i
          ] as number
        }
      }
    })
    return kit.input(out, { path: "", batchAxis: axis, init: init.zeros })
  })
  unwrap(store.scatter(keys, unflatten(store.spec.def, next)))
}

/** Each stream's rows (leaf order) read through a gather. */
async function rowsOf<T, In>(store: StateStore<T, In>, keys: StreamKey[]): Promise<number[][][]> {
  const hosts = await readBatch(store.backend, unwrap(store.gather(keys)))
  return keys.map((_, r) => hosts.map((h, leaf) => row(h, AXES[leaf] as number, r)))
}

/**
 * The `StateStore` suite: init rows, random interleavings of streams against each stream alone,
 * LRU and idle eviction with restorable snapshots, bad keys, moving a stream, no growth.
 */
export function defineStoreTests<T, In>(test: KitTest<T, In>): void {
  test("store: a new key starts at init and gather returns rows in key order", async (kit) => {
    const { backend } = kit
    const store = unwrap(createStateStore({ spec: storeSpec, backend }))
    await step(kit, store, ["a"], [1])
    const rows = await rowsOf(store, ["new", "a"])
    expect(rows[0]).toEqual(INIT_ROWS)
    expect(rows[1]).toEqual(INIT_ROWS.map((r) => stepRow(r, 1)))
    expect(store.size).toBe(2)
    store.dispose()
  })

  test("store: random interleavings of keys equal each stream run alone", async (kit) => {
    const { backend } = kit
    const store = unwrap(createStateStore({ spec: storeSpec, backend, initialSlots: 2 }))
    const random = mulberry32(7)
    const keys: StreamKey[] = ["s0", "s1", "s2", 3, 4, "__proto__"]
    const alone = new Map<StreamKey, number[][]>(keys.map((k) => [k, INIT_ROWS.map((r) => [...r])]))
    for (let round = 0; round < 25; round++) {
      const chosen = keys.filter(() => random() < 0.5)
      if (chosen.length === 0) continue
      chosen.sort(() => random() - 0.5)
      const inputs = chosen.map((k) => (typeof k === "number" ? k : k.length) + round * 0.01)
      await step(kit, store, chosen, inputs)
      chosen.forEach((k, i) =>
        alone.set(
          k,
          (alone.get(k) as number[][]).map((r) => stepRow(r, inputs[i] as number)),
        ),
      )
    }
    const touched = keys.filter((k) => store.has(k))
    const rows = await rowsOf(store, touched)
    touched.forEach((k, i) => expect(rows[i], `stream ${String(k)}`).toEqual(alone.get(k)))
    expect(store.slots).toBeGreaterThanOrEqual(touched.length)
    store.dispose()
  })

  test("store: capacity evicts the least recently used stream; onEvict's snapshot restores bit-exactly", async (kit) => {
    const { backend } = kit
    const evicted: { key: StreamKey; bytes: Uint8Array; reason: string }[] = []
    const store = unwrap(
      createStateStore({
        spec: storeSpec,
        backend,
        capacity: 3,
        initialSlots: 1,
        onEvict: (key, bytes, reason) => {
          evicted.push({ key, bytes, reason })
        },
      }),
    )
    await step(kit, store, ["a", "b"], [1, 2])
    await step(kit, store, ["c"], [3])
    await step(kit, store, ["a"], [4])
    // snapshot() reads without touching: b stays the least recently used.
    const before = unwrap(await store.snapshot("b"))
    await step(kit, store, ["d"], [5])
    await store.flush()
    expect(store.keys()).toEqual(["c", "a", "d"])
    expect(store.slots).toBe(3)
    expect(evicted.map((e) => [e.key, e.reason])).toEqual([["b", "capacity"]])
    const bytes = (evicted[0] as { bytes: Uint8Array }).bytes
    expect(bytes).toEqual(before)
    expect(unwrap(decodeSnapshot(bytes)).batchSize).toBe(1)
    unwrap(store.restore("b", bytes))
    expect(unwrap(await store.snapshot("b"))).toEqual(before)
    await store.flush()
    expect(evicted.map((e) => e.key)).toEqual(["b", "c"])
    store.dispose()
  })

  test("store: streams idle past idleTtlMs are evicted on the injected clock", async (kit) => {
    const { backend } = kit
    let now = 1_000
    const evicted: StreamKey[] = []
    const store = unwrap(
      createStateStore({
        spec: storeSpec,
        backend,
        idleTtlMs: 100,
        clock: () => now,
        onEvict: (key, _bytes, reason) => {
          expect(reason).toBe("idle")
          evicted.push(key)
        },
      }),
    )
    await step(kit, store, ["old", "busy"], [1, 1])
    now += 60
    await step(kit, store, ["busy"], [1])
    now += 60
    expect(store.has("old")).toBe(false)
    expect(store.has("busy")).toBe(true)
    now += 101
    // A call that names a stream idle past the TTL keeps it: a call never evicts its own keys.
    const twice = INIT_ROWS.map((r) => stepRow(stepRow(r, 1), 1))
    expect((await rowsOf(store, ["busy"]))[0]).toEqual(twice)
    await store.flush()
    expect(evicted).toEqual(["old"])
    now += 101
    expect(store.sweep()).toBe(1)
    await store.flush()
    expect(evicted).toEqual(["old", "busy"])
    expect(store.size).toBe(0)
    store.dispose()
  })

  test("store: bad keys and batch sizes are typed errors that change nothing and leak nothing", async (kit) => {
    const { backend } = kit
    const store = unwrap(createStateStore({ spec: storeSpec, backend }))
    await step(kit, store, ["a", "b"], [1, 2])
    const before = await rowsOf(store, ["a", "b"])
    const live = kit.live()
    const dup = expectLeft(store.gather(["a", "a"]), "KeyError")
    // `actual` is what the caller gave: the repeated key, or the keys.
    expect([["a", "a"], "a"]).toContainEqual(dup.actual)
    expect(dup.message).toContain('"a"')
    const batch = unwrap(store.gather(["a", "b"]))
    const unknown = expectLeft(store.scatter(["a", "zzz"], batch), "KeyError")
    expect(unknown.actual).toBe("zzz")
    expect(unknown.message).toContain('"zzz"')
    const short = store.scatter(["a"], batch)
    expect(short._tag === "Left" && short.left).toMatchObject({
      _tag: "BatchSizeMismatchError",
      expected: 1,
      actual: 2,
    })
    disposeTree(backend, batch)
    expectLeft(store.gather([]), "KeyError")
    const badKey = expectLeft(store.gather([{} as never]), "KeyError")
    expect(badKey.actual).toEqual({})
    expectLive(kit.live(), live, "refused store gathers and scatters")
    expect(store.size).toBe(2)
    expect(await rowsOf(store, ["a", "b"])).toEqual(before)
    store.dispose()
  })

  test("store: a stream moves to another store through snapshot and restore", async (kit) => {
    const { backend } = kit
    const a = unwrap(createStateStore({ spec: storeSpec, backend }))
    const b = unwrap(createStateStore({ spec: storeSpec, backend }))
    await step(kit, a, ["x", "y"], [1, 2])
    const bytes = unwrap(await a.snapshot("y"))
    unwrap(b.restore("moved", bytes))
    expect((await rowsOf(b, ["moved"]))[0]).toEqual((await rowsOf(a, ["y"]))[0])
    const missing = await a.snapshot("nope")
    expect(missing._tag === "Left" && missing.left._tag).toBe("KeyError")
    const truncated = b.restore("t", bytes.subarray(0, 20))
    expect(truncated._tag === "Left" && truncated.left._tag).toBe("SnapshotFormatError")
    expect(b.has("t")).toBe(false)
    a.dispose()
    b.dispose()
  })

  test("store: reset and delete; no live tensor growth over long gather/scatter loops", async (kit) => {
    const { backend } = kit
    const store = unwrap(
      createStateStore({ spec: storeSpec, backend, capacity: 4, initialSlots: 4 }),
    )
    await step(kit, store, ["a", "b"], [1, 2])
    unwrap(store.reset(["b"]))
    const rows = await rowsOf(store, ["a", "b"])
    expect(rows[1]).toEqual(INIT_ROWS)
    expect(rows[0]).not.toEqual(INIT_ROWS)
    expect(store.delete("a")).toBe(true)
    expect(store.delete("a")).toBe(false)
    const start = kit.live()
    const n = Math.max(10, Math.floor(kit.iterations / 5))
    for (let i = 0; i < n; i++) {
      const keys = [`k${i % 7}`, `k${(i + 3) % 7}`]
      const batch = unwrap(store.gather(keys))
      unwrap(store.scatter(keys, batch))
      if (i % 3 === 0) store.delete(keys[0] as string)
    }
    expectLive(kit.live(), start, `${n} store gather/scatter/delete loops`)
    store.dispose()
    expect(store.gather(["a"])._tag).toBe("Left")
  })
}
