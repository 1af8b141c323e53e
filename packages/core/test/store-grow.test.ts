/**
 * A store's named dims that grow (a KV cache's `seq`): `resizeDim`, `scatter(..., { grow: true })`
 * and `restore` of snapshots holding more or fewer positions. Oracle: each stream's values
 * written by hand at its own length, read back through snapshot bytes; positions past a
 * stream's own hold the leaf's init. A call that returns Left changes nothing: keys, bytes,
 * live tensors, slots and dims (faults are injected into the real host backend).
 */
import { describe, expect, it } from "vitest"
import {
  type HostBackend,
  HostTensor,
  type StateSpec,
  type StateStore,
  type StreamKey,
  createStateStore,
  decodeSnapshot,
  disposeTree,
  init,
  orThrow,
} from "@statesaver/core"
import { type FaultyHost, type Primitive, faultyHost, leftOf } from "./store-fixtures.js"

/** A KV-like state: the cache (batch axis 0), its mask, int64 positions with the batch axis 1 and a constant init, and a leaf without the dim. */
const spec = {
  key: { shape: ["batch", 2, "seq", 3], dtype: "float32" },
  mask: { shape: ["batch", "seq"], dtype: "uint8" },
  pos: { shape: [2, "batch", "seq"], dtype: "int64", init: init.constant(-7n) },
  h: { shape: ["batch", 4], dtype: "float32", init: init.constant(0.5) },
} satisfies StateSpec
/** The leaves that have `seq`. */
const SEQ_LEAVES = 3

type Rows = Record<"key" | "mask" | "pos" | "h", HostTensor>

/** Values of a stream of value `v` at cache position `p` (head `hd`, element `e`, layer `l`). */
const keyAt = (v: number, hd: number, p: number, e: number) => v + hd * 0.25 + p + e / 8
const posAt = (v: number, l: number, p: number) => BigInt(v * 1000 + p * 10 + l)

/** Rows of `values.length` streams (row r of value `values[r]`), each `length` positions long. */
function rowsOf(values: readonly number[], length: number): Rows {
  const n = values.length
  const key = new Float32Array(n * 2 * length * 3)
  const pos = new BigInt64Array(2 * n * length)
  const h = new Float32Array(n * 4)
  values.forEach((v, r) => {
    for (let hd = 0; hd < 2; hd++)
      for (let p = 0; p < length; p++)
        for (let e = 0; e < 3; e++) key[((r * 2 + hd) * length + p) * 3 + e] = keyAt(v, hd, p, e)
    for (let l = 0; l < 2; l++)
      for (let p = 0; p < length; p++) pos[(l * n + r) * length + p] = posAt(v, l, p)
    for (let e = 0; e < 4; e++) h[r * 4 + e] = v + e / 4
  })
  return {
    key: new HostTensor("float32", [n, 2, length, 3], key),
    mask: new HostTensor("uint8", [n, length], new Uint8Array(n * length).fill(1)),
    pos: new HostTensor("int64", [2, n, length], pos),
    h: new HostTensor("float32", [n, 4], h),
  }
}

/**
 * A stream's state as its snapshot must hold it in a store whose `seq` is `size`: its own
 * `length` positions of value `v`, then init (zeros, mask 0, -7 for positions); `undefined`
 * for a stream at init.
 */
function expected(size: number, stream: { v: number; length: number } | undefined) {
  const { v, length } = stream ?? { v: 0, length: 0 }
  const key: number[] = []
  for (let hd = 0; hd < 2; hd++)
    for (let p = 0; p < size; p++)
      for (let e = 0; e < 3; e++) key.push(p < length ? keyAt(v, hd, p, e) : 0)
  const pos: bigint[] = []
  for (let l = 0; l < 2; l++)
    for (let p = 0; p < size; p++) pos.push(p < length ? posAt(v, l, p) : -7n)
  const h = stream === undefined ? [0.5, 0.5, 0.5, 0.5] : [0, 1, 2, 3].map((e) => v + e / 4)
  return {
    key: { shape: [1, 2, size, 3], data: key },
    mask: { shape: [1, size], data: Array.from({ length: size }, (_, p) => (p < length ? 1 : 0)) },
    pos: { shape: [2, 1, size], data: pos },
    h: { shape: [1, 4], data: h },
  }
}

/** The stream's leaves as read from its snapshot bytes. */
async function read(store: StateStore<unknown>, key: StreamKey) {
  return leavesOf(orThrow(await store.snapshot(key)))
}

function leavesOf(bytes: Uint8Array) {
  const snap = orThrow(decodeSnapshot(bytes))
  const leaf = (p: string) => {
    const t = snap.tensors.get(p) as HostTensor
    return { shape: [...t.shape], data: Array.from(t.data as ArrayLike<number | bigint>) }
  }
  return { key: leaf("key"), mask: leaf("mask"), pos: leaf("pos"), h: leaf("h") }
}

/** Writes rows of `length` positions to `keys` (new keys join): stream `keys[i]` gets value `values[i]`. */
function write(
  store: StateStore<HostTensor>,
  keys: StreamKey[],
  values: number[],
  length: number,
  grow = true,
): void {
  disposeTree(store.backend, orThrow(store.gather(keys)))
  orThrow(store.scatter(keys, rowsOf(values, length) as never, { grow }))
}

interface GrowHost extends FaultyHost {
  /** The `writeAt` call after `skip` successful ones throws, once. */
  armWriteAt(skip?: number): void
  /** `writeAt` calls so far. */
  writes(): number
}

/** The fault-injecting host backend with `writeAt` counted and faulted too (or without it). */
function growHost(withWriteAt = true): GrowHost {
  const b = faultyHost()
  const inner = b.writeAt as NonNullable<HostBackend["writeAt"]>
  let armed: number | undefined
  let writes = 0
  const out: GrowHost = {
    ...b,
    armWriteAt(skip = 0) {
      armed = skip
    },
    writes: () => writes,
    writeAt(dst, axis, offsets, src, leaf) {
      writes++
      if (armed !== undefined && armed-- === 0) {
        armed = undefined
        throw new Error("injected fault in writeAt")
      }
      inner(dst, axis, offsets, src, leaf)
    },
  }
  if (!withWriteAt) delete (out as { writeAt?: unknown }).writeAt
  return out
}

function makeStore(
  backend: HostBackend,
  options: { capacity?: number; onEvict?: (k: StreamKey, b: Uint8Array) => void } = {},
) {
  return orThrow(
    createStateStore({
      spec,
      backend,
      initialSlots: 2,
      ...(options.capacity === undefined ? {} : { capacity: options.capacity }),
      ...(options.onEvict === undefined ? {} : { onEvict: options.onEvict }),
    }),
  )
}

/** Everything a refused call must leave as it was. */
async function probe(store: StateStore<HostTensor>, backend: HostBackend) {
  const bytes = new Map<StreamKey, Uint8Array>()
  for (const k of store.keys()) bytes.set(k, orThrow(await store.snapshot(k)))
  return {
    keys: store.keys(),
    bytes,
    live: backend.liveTensors(),
    slots: store.slots,
    dims: { ...store.dims() },
  }
}

/** `a` (value 1, 2 positions) and `b` (value 2, 3 positions, so `a` is padded), `c` at init. */
function threeStreams(backend: HostBackend) {
  const store = makeStore(backend)
  write(store, ["a"], [1], 2)
  write(store, ["b"], [2], 3)
  disposeTree(backend, orThrow(store.gather(["c"])))
  return store
}

describe("StateStore.resizeDim", () => {
  it("grows every stream's rows: each keeps its positions and the new ones hold init (batch axis 0 or 1, zeros or a constant); other leaves untouched; copied with writeAt, nothing read to the host", async () => {
    const backend = growHost()
    const store = threeStreams(backend)
    expect(store.dims()).toEqual({ seq: 3 })
    expect(await read(store, "a")).toEqual(expected(3, { v: 1, length: 2 }))
    const live = backend.liveTensors()
    const writes = backend.writes()
    const { toHost, gather, fromHost } = backend.calls
    orThrow(store.resizeDim("seq", 7))
    expect(store.dims()).toEqual({ seq: 7 })
    // One copy per leaf with the dim, on the backend: no read to the host, no gather of rows.
    expect(backend.writes() - writes).toBe(SEQ_LEAVES)
    expect(backend.calls).toMatchObject({ toHost, gather, fromHost })
    expect(backend.liveTensors()).toBe(live)
    expect(await read(store, "a")).toEqual(expected(7, { v: 1, length: 2 }))
    expect(await read(store, "b")).toEqual(expected(7, { v: 2, length: 3 }))
    expect(await read(store, "c")).toEqual(expected(7, undefined))
    // The same size again changes nothing.
    orThrow(store.resizeDim("seq", 7))
    expect(backend.writes() - writes).toBe(SEQ_LEAVES)
    // Streams go on at the new size.
    write(store, ["c", "a"], [5, 6], 7, false)
    expect(await read(store, "c")).toEqual(expected(7, { v: 5, length: 7 }))
    expect(await read(store, "b")).toEqual(expected(7, { v: 2, length: 3 }))
    store.dispose()
    expect(backend.liveTensors()).toBe(0)
  })

  it("shrinks only while no stream holds rows (every held stream new or reset); then nothing is copied", async () => {
    const backend = growHost()
    const store = threeStreams(backend)
    const before = await probe(store, backend)
    const refused = leftOf(store.resizeDim("seq", 1))
    expect(refused).toMatchObject({ _tag: "OptionError", path: "size", actual: 1 })
    expect(refused.detail).toContain('stream "a" holds rows')
    expect(await probe(store, backend)).toEqual(before)
    orThrow(store.reset(["a", "b"]))
    const writes = backend.writes()
    orThrow(store.resizeDim("seq", 1))
    expect(store.dims()).toEqual({ seq: 1 })
    expect(backend.writes()).toBe(writes)
    for (const k of ["a", "b", "c"]) expect(await read(store, k)).toEqual(expected(1, undefined))
    // An empty store too, down to 0; then it grows again from a scatter.
    for (const k of ["a", "b", "c"]) store.delete(k)
    orThrow(store.resizeDim("seq", 0))
    expect(store.dims()).toEqual({ seq: 0 })
    write(store, ["d"], [4], 2)
    expect(await read(store, "d")).toEqual(expected(2, { v: 4, length: 2 }))
    store.dispose()
    expect(backend.liveTensors()).toBe(0)
  })

  it("grows each of two named dims of one leaf, one copy per dim", async () => {
    const backend = growHost()
    const two = {
      x: { shape: ["batch", "seq", "mem"], dtype: "float32", init: init.constant(9) },
    } satisfies StateSpec
    const store = orThrow(createStateStore({ spec: two, backend, dims: {} }))
    disposeTree(backend, orThrow(store.gather(["a"])))
    const x = new HostTensor("float32", [1, 2, 3], Float32Array.of(1, 2, 3, 4, 5, 6))
    orThrow(store.scatter(["a"], { x }, { grow: true }))
    expect(store.dims()).toEqual({ seq: 2, mem: 3 })
    // A snapshot holding more along both dims grows both.
    const other = orThrow(createStateStore({ spec: two, backend }))
    disposeTree(backend, orThrow(other.gather(["b"])))
    const y = new HostTensor(
      "float32",
      [1, 3, 4],
      Float32Array.from({ length: 12 }, (_, i) => 20 + i),
    )
    orThrow(other.scatter(["b"], { x: y }, { grow: true }))
    const writes = backend.writes()
    orThrow(store.restore("b", orThrow(await other.snapshot("b"))))
    expect(backend.writes() - writes).toBe(2)
    expect(store.dims()).toEqual({ seq: 3, mem: 4 })
    const a = orThrow(decodeSnapshot(orThrow(await store.snapshot("a")))).tensors.get("x")
    expect(Array.from(a?.data as Float32Array)).toEqual([1, 2, 3, 9, 4, 5, 6, 9, 9, 9, 9, 9])
    expect(orThrow(await store.snapshot("b"))).toEqual(orThrow(await other.snapshot("b")))
    store.dispose()
    other.dispose()
    expect(backend.liveTensors()).toBe(0)
  })
})

describe("StateStore.scatter with { grow: true }", () => {
  it("rows longer than the store's grow every stream first; without grow, or shorter, they are a ShapeMismatchError and nothing changed", async () => {
    const backend = growHost()
    const store = makeStore(backend)
    write(store, ["a", "b"], [1, 2], 2)
    disposeTree(backend, orThrow(store.gather(["a"])))
    const before = await probe(store, backend)
    const longer = rowsOf([3], 4)
    expect(leftOf(store.scatter(["a"], longer as never))).toMatchObject({
      _tag: "ShapeMismatchError",
      path: "key",
      actual: [1, 2, 4, 3],
    })
    const shorter = rowsOf([3], 1)
    expect(leftOf(store.scatter(["a"], shorter as never, { grow: true }))).toMatchObject({
      _tag: "ShapeMismatchError",
      path: "key",
    })
    expect(await probe(store, backend)).toEqual(before)
    // The refused rows are still the caller's.
    for (const t of Object.values(longer)) expect(backend.describe(t)).toBeDefined()
    orThrow(store.scatter(["a"], longer as never, { grow: true }))
    expect(store.dims()).toEqual({ seq: 4 })
    expect(await read(store, "a")).toEqual(expected(4, { v: 3, length: 4 }))
    expect(await read(store, "b")).toEqual(expected(4, { v: 2, length: 2 }))
    expect(backend.liveTensors()).toBe(before.live)
    store.dispose()
    expect(backend.liveTensors()).toBe(0)
  })
})

describe("StateStore.restore across sizes", () => {
  it("a stream evicted (capacity) before the store grew comes back from its onEvict bytes padded, bit-exactly for its positions; into another store too", async () => {
    const backend = growHost()
    const evicted = new Map<StreamKey, Uint8Array>()
    const store = makeStore(backend, { capacity: 2, onEvict: (k, b) => void evicted.set(k, b) })
    write(store, ["a"], [1], 2)
    write(store, ["b"], [2], 2)
    write(store, ["c"], [3], 3) // evicts a, at 2 positions
    await store.flush()
    const bytes = evicted.get("a") as Uint8Array
    expect(leavesOf(bytes)).toEqual(expected(2, { v: 1, length: 2 }))
    write(store, ["c"], [3], 5) // the store grows past a's length
    store.delete("b")
    orThrow(store.restore("a", bytes))
    expect(store.dims()).toEqual({ seq: 5 })
    expect(await read(store, "a")).toEqual(expected(5, { v: 1, length: 2 }))
    expect(await read(store, "c")).toEqual(expected(5, { v: 3, length: 5 }))
    // Into a new store at 0: it grows to the snapshot, whose bytes come back as they were.
    const other = makeStore(backend)
    orThrow(other.restore("a", bytes))
    expect(other.dims()).toEqual({ seq: 2 })
    expect(orThrow(await other.snapshot("a"))).toEqual(bytes)
    // A longer snapshot into a store holding a shorter stream: that stream is padded.
    orThrow(other.restore("c", orThrow(await store.snapshot("c"))))
    expect(other.dims()).toEqual({ seq: 5 })
    expect(await read(other, "a")).toEqual(expected(5, { v: 1, length: 2 }))
    expect(await read(other, "c")).toEqual(expected(5, { v: 3, length: 5 }))
    store.dispose()
    other.dispose()
    expect(backend.liveTensors()).toBe(0)
  })

  it("restoreMany stacks snapshots of several lengths at the longest (repeated headers included); the store's streams are padded", async () => {
    const backend = growHost()
    const source = (values: number[], length: number) => {
      const s = makeStore(backend)
      const keys = values.map((v) => `s${v}`)
      write(s, keys, values, length)
      return s
    }
    const two = source([1, 2], 2)
    const five = source([3], 5)
    const one = source([4, 5], 1)
    const snaps = [
      ...orThrow(await two.snapshotMany(["s1", "s2"])),
      ...orThrow(await five.snapshotMany(["s3"])),
      ...orThrow(await one.snapshotMany(["s4", "s5"])),
    ]
    const store = makeStore(backend)
    write(store, ["z"], [9], 2)
    orThrow(store.restoreMany(snaps.map((snapshot, i) => ({ key: `s${i + 1}`, snapshot }))))
    expect(store.dims()).toEqual({ seq: 5 })
    const lengths = [2, 2, 5, 1, 1]
    for (const [i, length] of lengths.entries())
      expect(await read(store, `s${i + 1}`)).toEqual(expected(5, { v: i + 1, length }))
    expect(await read(store, "z")).toEqual(expected(5, { v: 9, length: 2 }))
    expect(orThrow(await store.snapshot("s3"))).toEqual(snaps[2])
    for (const s of [two, five, one, store]) s.dispose()
    expect(backend.liveTensors()).toBe(0)
  })
})

describe("refused calls change nothing", () => {
  it("a bad name or size is an OptionError naming it", async () => {
    const backend = growHost()
    const store = threeStreams(backend)
    const before = await probe(store, backend)
    for (const name of [42, "nope", "batch", "__proto__", undefined, ""]) {
      expect(leftOf(store.resizeDim(name as never, 4))).toMatchObject({
        _tag: "OptionError",
        path: "name",
        actual: name,
      })
    }
    for (const size of [
      -1,
      2.5,
      Number.NaN,
      Number.POSITIVE_INFINITY,
      "6",
      2 ** 53,
      undefined,
      2,
    ]) {
      const e = leftOf(store.resizeDim("seq", size as never))
      expect(e).toMatchObject({ _tag: "OptionError", path: "size" })
      expect(e.actual).toBe(size)
    }
    expect(await probe(store, backend)).toEqual(before)
    store.dispose()
    expect(leftOf(store.resizeDim("seq", 9))).toMatchObject({ _tag: "DisposedError" })
    expect(backend.liveTensors()).toBe(0)
  })

  it("a dim sized by the dims option or by an init tensor never changes: resizeDim, scatter and restore refuse it", async () => {
    const backend = growHost()
    const fixed = orThrow(createStateStore({ spec, backend, dims: { seq: 3 } }))
    disposeTree(backend, orThrow(fixed.gather(["a"])))
    orThrow(fixed.scatter(["a"], rowsOf([1], 3) as never))
    const growing = makeStore(backend)
    write(growing, ["x"], [5], 2)
    const before = await probe(fixed, backend)
    const e = leftOf(fixed.resizeDim("seq", 4))
    expect(e).toMatchObject({ _tag: "OptionError", path: "name", actual: "seq" })
    expect(e.detail).toContain("dims option")
    const longer = rowsOf([2], 4)
    expect(leftOf(fixed.scatter(["a"], longer as never, { grow: true }))).toMatchObject({
      _tag: "ShapeMismatchError",
      path: "key",
    })
    expect(leftOf(fixed.restore("x", orThrow(await growing.snapshot("x"))))).toMatchObject({
      _tag: "ShapeMismatchError",
      path: "key",
    })
    expect(await probe(fixed, backend)).toEqual(before)
    const tensorInit = {
      w: {
        shape: ["batch", "seq"],
        dtype: "float32",
        init: init.tensor(new HostTensor("float32", [2], Float32Array.of(1, 2))),
      },
    } satisfies StateSpec
    const learned = orThrow(createStateStore({ spec: tensorInit, backend }))
    expect(learned.dims()).toEqual({ seq: 2 })
    expect(leftOf(learned.resizeDim("seq", 3))).toMatchObject({ _tag: "OptionError", path: "name" })
    for (const s of [fixed, growing, learned]) s.dispose()
    expect(backend.liveTensors()).toBe(0)
  })

  it("a snapshot of another spec is refused whatever its length", async () => {
    const backend = growHost()
    const store = threeStreams(backend)
    const otherSpec = {
      key: { shape: ["batch", 2, "seq", 3], dtype: "float32" },
      mask: { shape: ["batch", "seq"], dtype: "uint8" },
    } satisfies StateSpec
    const other = orThrow(createStateStore({ spec: otherSpec, backend }))
    disposeTree(backend, orThrow(other.gather(["x"])))
    const rows = rowsOf([1], 6)
    orThrow(other.scatter(["x"], { key: rows.key, mask: rows.mask }, { grow: true }))
    const before = await probe(store, backend)
    expect(leftOf(store.restore("x", orThrow(await other.snapshot("x"))))).toMatchObject({
      _tag: "SnapshotFormatError",
    })
    expect(await probe(store, backend)).toEqual(before)
    store.dispose()
    other.dispose()
    expect(backend.liveTensors()).toBe(0)
  })

  it("a backend without writeAt: growing rows that streams hold is an OptionError at backend; a store whose streams are all at init still grows", async () => {
    const backend = growHost(false)
    const store = makeStore(backend)
    disposeTree(backend, orThrow(store.gather(["a"])))
    orThrow(store.resizeDim("seq", 2))
    write(store, ["a"], [1], 3)
    expect(store.dims()).toEqual({ seq: 3 })
    const before = await probe(store, backend)
    const e = leftOf(store.resizeDim("seq", 4))
    expect(e).toMatchObject({ _tag: "OptionError", path: "backend", actual: backend })
    expect(e.detail).toContain("has no writeAt")
    const longer = rowsOf([2], 5)
    expect(leftOf(store.scatter(["a"], longer as never, { grow: true }))).toMatchObject({
      _tag: "OptionError",
      path: "backend",
    })
    const source = makeStore(growHost())
    write(source, ["b"], [2], 6)
    expect(leftOf(store.restore("b", orThrow(await source.snapshot("b"))))).toMatchObject({
      _tag: "OptionError",
      path: "backend",
    })
    expect(await probe(store, backend)).toEqual(before)
    store.dispose()
    source.dispose()
    expect(backend.liveTensors()).toBe(0)
  })

  it("a fault in allocate or writeAt at any leaf leaves resizeDim's store as it was, then it succeeds", async () => {
    for (const [fault, skip] of [
      ["allocate", 0],
      ["allocate", 2],
      ["writeAt", 0],
      ["writeAt", 1],
      ["writeAt", 2],
    ] as const) {
      const backend = growHost()
      const store = threeStreams(backend)
      const before = await probe(store, backend)
      if (fault === "writeAt") backend.armWriteAt(skip)
      else backend.arm(fault, skip)
      const e = leftOf(store.resizeDim("seq", 6))
      expect(e).toMatchObject({ _tag: "BackendError", operation: fault })
      expect(["key", "mask", "pos"]).toContain(e.path)
      expect(await probe(store, backend)).toEqual(before)
      orThrow(store.resizeDim("seq", 6))
      expect(await read(store, "b")).toEqual(expected(6, { v: 2, length: 3 }))
      store.dispose()
      expect(backend.liveTensors()).toBe(0)
    }
  })

  it("a growing scatter that fails after the store grew (a write at a later leaf) leaves it as it was", async () => {
    for (const [fault, skip] of [
      ["scatter", 0],
      ["scatter", 3],
      ["writeAt", 1],
      ["allocate", 1],
    ] as [Primitive | "writeAt", number][]) {
      const backend = growHost()
      const store = threeStreams(backend)
      // Streams at init (c, and d new): a write failing at a later leaf leaves them at init.
      disposeTree(backend, orThrow(store.gather(["c", "d"])))
      const before = await probe(store, backend)
      if (fault === "writeAt") backend.armWriteAt(skip)
      else backend.arm(fault, skip)
      const next = rowsOf([7, 8], 5)
      expect(leftOf(store.scatter(["c", "d"], next as never, { grow: true }))).toMatchObject({
        _tag: "BackendError",
        operation: fault,
      })
      expect(await probe(store, backend)).toEqual(before)
      // The rows are still the caller's: they go in on the next try.
      for (const t of Object.values(next)) expect(backend.describe(t)).toBeDefined()
      orThrow(store.scatter(["c", "d"], next as never, { grow: true }))
      expect(await read(store, "c")).toEqual(expected(5, { v: 7, length: 5 }))
      expect(await read(store, "d")).toEqual(expected(5, { v: 8, length: 5 }))
      expect(await read(store, "b")).toEqual(expected(5, { v: 2, length: 3 }))
      store.dispose()
      expect(backend.liveTensors()).toBe(0)
    }
  })

  it("a restore that grows the store and fails later (fromHost, the write, a victim's copy for onEvict) leaves it as it was", async () => {
    for (const [fault, skip] of [
      ["fromHost", 0],
      ["fromHost", 3],
      ["scatter", 2],
      ["gather", 0],
      ["writeAt", 2],
    ] as [Primitive | "writeAt", number][]) {
      const backend = growHost()
      const store = makeStore(backend, { capacity: 3, onEvict: () => undefined })
      write(store, ["a"], [1], 2)
      write(store, ["b"], [2], 3)
      write(store, ["c"], [3], 3)
      const source = makeStore(growHost())
      write(source, ["x"], [4], 5)
      const bytes = orThrow(await source.snapshot("x"))
      const before = await probe(store, backend)
      if (fault === "writeAt") backend.armWriteAt(skip)
      else backend.arm(fault, skip)
      // x is new to a full store: a is evicted (its rows copied for onEvict) and x takes its slot.
      expect(leftOf(store.restore("x", bytes))).toMatchObject({
        _tag: "BackendError",
        operation: fault,
      })
      expect(await probe(store, backend)).toEqual(before)
      orThrow(store.restore("x", bytes))
      expect(store.keys()).toEqual(["b", "c", "x"])
      expect(await read(store, "x")).toEqual(expected(5, { v: 4, length: 5 }))
      expect(await read(store, "b")).toEqual(expected(5, { v: 2, length: 3 }))
      await store.flush()
      store.dispose()
      source.dispose()
      expect(backend.liveTensors()).toBe(0)
    }
  })
})
