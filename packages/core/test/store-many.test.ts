/**
 * `snapshotMany` and `restoreMany`: each stream's bytes are exactly what `snapshot` writes, a
 * restore of many equals a restore of each, a snapshot read without decoding its header again is
 * still checked (its header must be byte for byte the one already checked, its bool data 0 or
 * 1), and a refused call changes nothing, with the item and stream named.
 */
import { describe, expect, it } from "vitest"
import {
  type HostTensor,
  type StreamKey,
  createStateSaver,
  createStateStore,
  decodeSnapshot,
  hostBackend,
  lstmSpec,
  orThrow,
} from "@statesaver/core"
import {
  H,
  PATHS,
  type Primitive,
  bytesOf,
  expectUnchanged,
  faultyHost,
  leftOf,
  probe,
  rowsOf,
  spec,
  step,
} from "./store-fixtures.js"

/** A store holding a, b, c (off init, distinct rows) and d (at init). */
function heldStore(capacity = 10) {
  const backend = faultyHost()
  const store = orThrow(createStateStore({ spec, backend, capacity, initialSlots: 2 }))
  step(store, ["a", "b"], 1)
  step(store, ["c"], 2)
  orThrow(store.reset(["c"]))
  step(store, ["c"], 3)
  for (const t of (orThrow(store.gather(["d"])) as unknown as HostTensor[][]).flat())
    backend.dispose(t)
  return { backend, store }
}

const items = (keys: StreamKey[], bytes: readonly Uint8Array[]) =>
  keys.map((key, i) => ({ key, snapshot: bytes[i] as Uint8Array }))

describe("snapshotMany", () => {
  it("writes, for each key, exactly the bytes snapshot writes (rows off axis 0, init rows, metadata)", async () => {
    const { backend, store } = heldStore()
    const live = backend.liveTensors()
    const keys = ["c", "a", "d", "b"]
    const many = orThrow(await store.snapshotMany(keys))
    expect(many).toHaveLength(4)
    for (const [i, k] of keys.entries()) expect(many[i]).toEqual(orThrow(await store.snapshot(k)))
    const tagged = orThrow(await store.snapshotMany(["b", "a"], { metadata: { model: "v2" } }))
    expect(tagged[0]).toEqual(orThrow(await store.snapshot("b", { metadata: { model: "v2" } })))
    expect(orThrow(decodeSnapshot(tagged[1] as Uint8Array)).metadata).toEqual({ model: "v2" })
    expect(backend.liveTensors()).toBe(live)
    store.dispose()
  })

  it("of a batch-first spec too", async () => {
    const store = orThrow(
      createStateStore({ spec: lstmSpec([4]), backend: hostBackend(), capacity: 8 }),
    )
    const keys = ["x", "y", "z"]
    const batch = orThrow(store.gather(keys)) as unknown as HostTensor[][]
    for (const t of batch.flat()) (t.data as Float32Array).forEach((_, i, d) => (d[i] = i * 0.5))
    orThrow(store.scatter(keys, batch as never))
    const many = orThrow(await store.snapshotMany(keys))
    for (const [i, k] of keys.entries()) expect(many[i]).toEqual(orThrow(await store.snapshot(k)))
    store.dispose()
  })

  it("refuses unknown, duplicate or malformed keys and bad metadata, and a disposed store", async () => {
    const { store } = heldStore()
    const errs = [
      leftOf(await store.snapshotMany(["a", "nope"])),
      leftOf(await store.snapshotMany(["a", "a"])),
      leftOf(await store.snapshotMany([])),
      leftOf(await store.snapshotMany("a" as never)),
      leftOf(await store.snapshotMany(["a", Number.NaN])),
      leftOf(await store.snapshotMany(["a"], { metadata: { format: "x" } })),
      leftOf(await store.snapshotMany(["a"], { metadata: { n: 1 as never } })),
    ]
    expect(errs.map((e) => e._tag)).toEqual([
      "KeyError",
      "KeyError",
      "KeyError",
      "KeyError",
      "KeyError",
      "SnapshotFormatError",
      "SnapshotFormatError",
    ])
    expect(errs[0]?.message).toContain('"nope"')
    expect(errs[6]?.path).toBe("metadata.n")
    store.dispose()
    expect(leftOf(await store.snapshotMany(["a"]))._tag).toBe("DisposedError")
  })

  it("a backend failure reading the rows is a BackendError naming the leaf; nothing leaks", async () => {
    for (const op of ["gather", "toHost"] as Primitive[]) {
      for (let failing = 0; failing < 4; failing++) {
        const { backend, store } = heldStore()
        const before = await probe(store, backend)
        backend.arm(op, failing)
        const err = leftOf(await store.snapshotMany(["a", "b", "c"]))
        expect(err).toMatchObject({ _tag: "BackendError", path: PATHS[failing] })
        await expectUnchanged(store, backend, before)
        store.dispose()
        expect(backend.liveTensors()).toBe(0)
      }
    }
  })
})

describe("restoreMany", () => {
  /** Snapshots of a, b, c, d from a held store. */
  async function source() {
    const { store } = heldStore()
    const bytes = orThrow(await store.snapshotMany(["a", "b", "c", "d"]))
    store.dispose()
    return bytes
  }

  it("equals restoring each snapshot alone: held and new keys, returning metadata", async () => {
    const bytes = await source()
    const one = heldStore()
    const many = heldStore()
    // Restored under other keys: "b" held (overwritten in place), the rest new.
    const keys = ["b", "n1", "n2", "n3"]
    for (const [i, k] of keys.entries()) orThrow(one.store.restore(k, bytes[i] as Uint8Array))
    const live = many.backend.liveTensors()
    expect(orThrow(many.store.restoreMany(items(keys, bytes)))).toEqual([{}, {}, {}, {}])
    expect(many.backend.liveTensors()).toBe(live)
    expect(many.store.keys()).toEqual(one.store.keys())
    expect(await bytesOf(many.store)).toEqual(await bytesOf(one.store))
    // The restored streams hold the source's rows, the init stream included.
    expect(orThrow(await many.store.snapshotMany(keys))).toEqual(bytes)
    one.store.dispose()
    many.store.dispose()
  })

  it("mixes snapshots with other headers (metadata), decoded Snapshots and a saver's bytes", async () => {
    const bytes = await source()
    const { store } = heldStore()
    const tagged = orThrow(await store.snapshotMany(["a", "b"], { metadata: { v: "7" } }))
    const saver = orThrow(createStateSaver({ spec, backend: hostBackend(), batchSize: 1 }))
    orThrow(saver.save(rowsOf(1, 5) as never))
    const fromSaver = orThrow(await saver.snapshot())
    const decoded = orThrow(decodeSnapshot(bytes[2] as Uint8Array))
    const got = orThrow(
      store.restoreMany([
        { key: "p", snapshot: bytes[0] as Uint8Array },
        { key: "q", snapshot: tagged[0] as Uint8Array },
        { key: "r", snapshot: tagged[1] as Uint8Array },
        { key: "s", snapshot: decoded },
        { key: "t", snapshot: fromSaver },
        { key: "u", snapshot: bytes[1] as Uint8Array },
      ]),
    )
    expect(got).toEqual([{}, { v: "7" }, { v: "7" }, {}, {}, {}])
    const back = orThrow(await store.snapshotMany(["p", "q", "r", "s", "t", "u"]))
    const plain = orThrow(await store.snapshotMany(["a", "b"]))
    expect(back[0]).toEqual(bytes[0])
    expect(back[1]).toEqual(plain[0])
    expect(back[2]).toEqual(plain[1])
    expect(back[3]).toEqual(bytes[2])
    expect(back[4]).toEqual(fromSaver)
    expect(back[5]).toEqual(bytes[1])
    saver.dispose()
    store.dispose()
  })

  it("into a full store: evicts the least recently used, hands them to onEvict, keeps the call's own keys", async () => {
    const bytes = await source()
    const evicted: StreamKey[] = []
    const backend = hostBackend()
    const store = orThrow(
      createStateStore({
        spec,
        backend,
        capacity: 4,
        initialSlots: 1,
        onEvict: (k) => void evicted.push(k),
      }),
    )
    step(store, ["w", "x", "y", "z"], 1)
    const xBefore = orThrow(await store.snapshot("x"))
    orThrow(store.restoreMany(items(["z", "n1", "n2"], bytes)))
    await store.flush()
    expect(evicted).toEqual(["w", "x"])
    expect(store.keys()).toEqual(["y", "z", "n1", "n2"])
    expect(orThrow(await store.snapshotMany(["z", "n1", "n2"]))).toEqual(bytes.slice(0, 3))
    // An evicted stream comes back from its bytes.
    orThrow(store.restoreMany([{ key: "x", snapshot: xBefore }]))
    expect(orThrow(await store.snapshot("x"))).toEqual(xBefore)
    store.dispose()
    expect(backend.liveTensors()).toBe(0)
  })

  it("a bad snapshot anywhere refuses the whole call, naming its item and stream; nothing changes", async () => {
    const bytes = await source()
    const good = bytes[0] as Uint8Array
    // Same length, one header byte changed: it is decoded (and refused), not copied blindly.
    const renamed = good.slice()
    const at = new TextDecoder().decode(renamed).indexOf("float32")
    renamed[at + 6] = "3".charCodeAt(0)
    const truncated = good.slice(0, good.byteLength - 4)
    const otherStore = orThrow(
      createStateStore({ spec: lstmSpec([H]), backend: hostBackend(), capacity: 2 }),
    )
    otherStore.gather(["o"])
    const other = orThrow(await otherStore.snapshotMany(["o"]))[0] as Uint8Array
    const cases: [unknown, string][] = [
      [renamed, "SnapshotFormatError"],
      [truncated, "SnapshotFormatError"],
      [other, "SnapshotFormatError"],
      [new Uint8Array(0), "SnapshotFormatError"],
      ["bytes", "SnapshotFormatError"],
      [null, "SnapshotFormatError"],
    ]
    for (const [bad, tag] of cases) {
      const { backend, store } = heldStore()
      const before = await probe(store, backend)
      const err = leftOf(
        store.restoreMany([
          { key: "n1", snapshot: good },
          { key: "a", snapshot: bytes[1] as Uint8Array },
          { key: "n2", snapshot: bad as Uint8Array },
          { key: "n3", snapshot: good },
        ]),
      )
      expect(err._tag).toBe(tag)
      expect(err.detail).toMatch(/^snapshots\[2\], stream "n2"/)
      await expectUnchanged(store, backend, before)
      store.dispose()
    }
  })

  it("checks bool data of a snapshot read by its header alone", async () => {
    const boolSpec = { done: { shape: ["batch", 3] as const, dtype: "bool" as const } }
    const store = orThrow(createStateStore({ spec: boolSpec, backend: hostBackend() }))
    const batch = orThrow(store.gather(["a", "b"])) as unknown as { done: HostTensor<"bool"> }
    batch.done.data.set([1, 0, 1, 0, 1, 1])
    orThrow(store.scatter(["a", "b"], batch as never))
    const [a, b] = orThrow(await store.snapshotMany(["a", "b"])) as [Uint8Array, Uint8Array]
    const bad = b.slice()
    bad[bad.byteLength - 1] = 7
    const err = leftOf(
      store.restoreMany([
        { key: "x", snapshot: a },
        { key: "y", snapshot: bad },
      ]),
    )
    expect(err).toMatchObject({ _tag: "SnapshotFormatError", path: "done" })
    expect(err.detail).toContain('snapshots[1], stream "y"')
    expect(store.keys()).toEqual(["a", "b"])
    orThrow(
      store.restoreMany([
        { key: "x", snapshot: a },
        { key: "y", snapshot: b },
      ]),
    )
    expect(orThrow(await store.snapshotMany(["x", "y"]))).toEqual([a, b])
    store.dispose()
  })

  it("refuses duplicate, malformed or too many keys, a non-array and non-record items", async () => {
    const bytes = await source()
    const { backend, store } = heldStore(4)
    const before = await probe(store, backend)
    const s = bytes[0] as Uint8Array
    const errs = [
      leftOf(
        store.restoreMany([
          { key: "n", snapshot: s },
          { key: "n", snapshot: s },
        ]),
      ),
      leftOf(
        store.restoreMany([
          { key: "a", snapshot: s },
          { key: "a", snapshot: s },
        ]),
      ),
      leftOf(store.restoreMany([])),
      leftOf(store.restoreMany([{ key: {} as never, snapshot: s }])),
      leftOf(store.restoreMany(items(["1", "2", "3", "4", "5"], [s, s, s, s, s]))),
      leftOf(store.restoreMany("x" as never)),
      leftOf(store.restoreMany([null as never])),
      leftOf(store.restoreMany([["k" as never, s] as never])),
    ]
    expect(errs.map((e) => e._tag)).toEqual(Array(8).fill("KeyError"))
    expect(errs[0]?.detail).toBe("keys[0] and keys[1] are the same key")
    await expectUnchanged(store, backend, before)
    store.dispose()
    expect(leftOf(store.restoreMany(items(["a"], bytes)))._tag).toBe("DisposedError")
  })

  it("a backend failure at any step is a BackendError; nothing changes, nothing leaks", async () => {
    const bytes = await source()
    // a and b held off init (written in place, backed up first), n1 and n2 new.
    const keys = ["a", "n1", "b", "n2"]
    const dry = heldStore()
    const counts: Partial<Record<Primitive, number>> = {}
    const start = { ...dry.backend.calls }
    orThrow(dry.store.restoreMany(items(keys, bytes)))
    for (const op of ["fromHost", "gather", "scatter"] as Primitive[])
      counts[op] = dry.backend.calls[op] - start[op]
    dry.store.dispose()
    // 4 leaves made from the host; the slab grown (4 leaves) and the held rows kept (4); 4 written.
    expect(counts).toEqual({ fromHost: 4, gather: 8, scatter: 4 })
    for (const op of ["fromHost", "gather", "scatter"] as Primitive[]) {
      for (let failing = 0; failing < (counts[op] as number); failing++) {
        const { backend, store } = heldStore()
        const before = await probe(store, backend)
        backend.arm(op, failing)
        const err = leftOf(store.restoreMany(items(keys, bytes)))
        expect(backend.fired()).toBe(true)
        expect(err).toMatchObject({ _tag: "BackendError", path: PATHS[failing % 4] })
        await expectUnchanged(store, backend, before)
        // The same call then succeeds.
        orThrow(store.restoreMany(items(keys, bytes)))
        expect(orThrow(await store.snapshotMany(["a", "n1", "b", "n2"]))).toEqual(bytes)
        store.dispose()
        expect(backend.liveTensors()).toBe(0)
      }
    }
  })
})
