import { describe, expect, it } from "vitest"
import { HostTensor, createStateStore, disposeTree, hostBackend, orThrow } from "@statesaver/core"
import { leftOf, probe, expectUnchanged, spec, step, rowsOf } from "./store-fixtures.js"

describe("createStateStore refuses bad options with an OptionError naming the option", () => {
  const backend = hostBackend()
  const cases: [string, unknown][] = [
    ["capacity", "10"],
    ["capacity", 0],
    ["capacity", -3],
    ["capacity", 1.5],
    ["capacity", Number.NaN],
    ["capacity", Number.NEGATIVE_INFINITY],
    ["capacity", null],
    ["capacity", 10n],
    ["initialSlots", 0],
    ["initialSlots", 2.5],
    ["initialSlots", "8"],
    ["initialSlots", Number.NaN],
    ["initialSlots", Number.POSITIVE_INFINITY],
    ["idleTtlMs", -1],
    ["idleTtlMs", Number.NaN],
    ["idleTtlMs", "5"],
    ["idleTtlMs", null],
    ["onEvict", 42],
    ["onEvict", "log"],
    ["onEvict", {}],
    ["clock", "now"],
    ["clock", 12],
    ["backend", undefined],
    ["backend", null],
    ["backend", {}],
    ["backend", { ...hostBackend(), gather: 1 }],
    ["backend", { ...hostBackend(), capabilities: {} }],
    ["backend", { ...hostBackend(), name: 3 }],
  ]
  for (const [option, value] of cases) {
    it(`${option}: ${typeof value === "bigint" ? `${value}n` : String(value)}`, () => {
      const err = leftOf(createStateStore({ spec, backend, [option]: value } as never))
      expect(err._tag).toBe("OptionError")
      expect(err.path).toBe(option)
      expect(Object.is(err.actual, value)).toBe(true)
      expect(err.message).toContain(`option ${option}`)
    })
  }

  it("the options themselves: null, a number", () => {
    for (const value of [null, 3, undefined]) {
      const err = leftOf(createStateStore(value as never))
      expect(err).toMatchObject({ _tag: "OptionError", path: "options" })
      expect(err.actual).toBe(value)
    }
  })

  it("prints the actual value as given: NaN as NaN, a string quoted", () => {
    expect(leftOf(createStateStore({ spec, backend, idleTtlMs: Number.NaN })).message).toContain(
      "got NaN",
    )
    expect(leftOf(createStateStore({ spec, backend, capacity: "10" as never })).message).toContain(
      'got "10"',
    )
  })

  it("accepts the documented edges: Infinity capacity and TTL, TTL 0, initialSlots above capacity", () => {
    const backend = hostBackend()
    const a = orThrow(createStateStore({ spec, backend, capacity: Number.POSITIVE_INFINITY }))
    const b = orThrow(createStateStore({ spec, backend, idleTtlMs: Number.POSITIVE_INFINITY }))
    const c = orThrow(createStateStore({ spec, backend, idleTtlMs: 0, clock: () => 5 }))
    const d = orThrow(createStateStore({ spec, backend, capacity: 3, initialSlots: 100 }))
    expect(d.slots).toBe(3)
    for (const s of [a, b, c, d]) s.dispose()
    expect(backend.liveTensors()).toBe(0)
  })

  it("a bad spec is a SpecError and allocates nothing", () => {
    const backend = hostBackend()
    for (const bad of [
      { h: { shape: [2], dtype: "float32" } },
      { h: { shape: ["batch"], dtype: "f32" } },
    ]) {
      const err = leftOf(createStateStore({ spec: bad as never, backend }))
      expect(err._tag).toBe("SpecError")
      expect(err.path).toBe("h")
    }
    expect(backend.liveTensors()).toBe(0)
  })
})

describe("a clock that gives no finite number", () => {
  for (const reading of [Number.NaN, Number.POSITIVE_INFINITY, "now", undefined]) {
    it(`returning ${String(reading)}: calls return an OptionError and evict nothing`, async () => {
      let now: unknown = 1_000
      const evicted: unknown[] = []
      const backend = hostBackend()
      const store = orThrow(
        createStateStore({
          spec,
          backend,
          idleTtlMs: 10,
          clock: () => now as number,
          onEvict: (k) => void evicted.push(k),
        }),
      )
      step(store, ["a", "b"], 1)
      const before = await probe(store, backend)
      now = reading
      for (const r of [
        store.gather(["a"]),
        store.gather(["new"]),
        store.scatter(["a"], rowsOf(1, 9) as never),
        store.restore("c", before.bytes.get("a") as Uint8Array),
      ]) {
        const err = leftOf(r)
        expect(err._tag).toBe("OptionError")
        expect(err.path).toBe("clock")
        expect(Object.is(err.actual, reading)).toBe(true)
      }
      // Queries do not evict on a bad reading (NaN once evicted every stream).
      expect(store.sweep()).toBe(0)
      expect(store.has("a")).toBe(true)
      now = 1_000
      await expectUnchanged(store, backend, before)
      await store.flush()
      expect(evicted).toEqual([])
      store.dispose()
      expect(backend.liveTensors()).toBe(0)
    })
  }

  it("that throws: an OptionError whose cause is the throw", () => {
    const boom = new Error("clock broke")
    const store = orThrow(
      createStateStore({
        spec,
        backend: hostBackend(),
        idleTtlMs: 10,
        clock: () => {
          throw boom
        },
      }),
    )
    const err = leftOf(store.gather(["a"]))
    expect(err).toMatchObject({ _tag: "OptionError", path: "clock" })
    expect(err.cause).toBe(boom)
    expect(store.size).toBe(0)
  })

  it("is not read at all without idleTtlMs", () => {
    let reads = 0
    const store = orThrow(
      createStateStore({ spec, backend: hostBackend(), clock: () => (reads++, Number.NaN) }),
    )
    step(store, ["a"], 1)
    expect(reads).toBe(0)
    store.dispose()
  })
})

describe("keys that are not an array of strings or finite numbers are a KeyError", () => {
  const backend = hostBackend()
  const store = orThrow(createStateStore({ spec, backend, capacity: 4 }))
  step(store, ["a", "b"], 1)

  const badLists: [string, unknown][] = [
    ["null", null],
    ["undefined", undefined],
    ["a string", "a"],
    ["a number", 3],
    ["an object", { 0: "a", length: 1 }],
    ["an Int32Array", Int32Array.of(1, 2)],
    ["an empty array", []],
    ["more keys than the capacity", ["a", "b", "c", "d", "e"]],
  ]
  const badKeys: [string, unknown][] = [
    ["NaN", Number.NaN],
    ["Infinity", Number.POSITIVE_INFINITY],
    ["null", null],
    ["undefined", undefined],
    ["an object", {}],
    ["a bigint", 1n],
    ["a symbol", Symbol("k")],
    ["a boolean", true],
  ]
  const calls = {
    gather: (keys: unknown) => store.gather(keys as never),
    scatter: (keys: unknown) => store.scatter(keys as never, rowsOf(1, 3) as never),
    reset: (keys: unknown) => store.reset(keys as never),
  }
  for (const [name, call] of Object.entries(calls)) {
    for (const [what, keys] of badLists) {
      it(`${name}(${what})`, async () => {
        const before = await probe(store, backend)
        const err = leftOf(call(keys))
        expect(err._tag).toBe("KeyError")
        expect(err.actual).toBe(keys)
        await expectUnchanged(store, backend, before)
      })
    }
    for (const [what, key] of badKeys) {
      it(`${name}([${what}]) and ${name}(["a", ${what}])`, async () => {
        const before = await probe(store, backend)
        for (const keys of [[key], ["a", key]]) {
          const err = leftOf(call(keys))
          expect(err._tag).toBe("KeyError")
          expect(Object.is(err.actual, key)).toBe(true)
          expect(err.detail).toBe(`keys[${keys.length - 1}]`)
        }
        await expectUnchanged(store, backend, before)
      })
    }
  }

  it("bad key lists right after a call the store remembers (the same keys skip the lookups) are a KeyError", async () => {
    const before = await probe(store, backend)
    for (const [name, call] of Object.entries(calls)) {
      for (const [what, keys] of badLists) {
        // A gather of held keys changes nothing, and its keys are remembered for the next call.
        disposeTree(backend, orThrow(store.gather(["a", "b"])))
        const err = leftOf(call(keys))
        expect(err._tag, `${name}(${what})`).toBe("KeyError")
      }
    }
    await expectUnchanged(store, backend, before)
  })

  it("a duplicate key is a KeyError naming the key and both positions", async () => {
    const before = await probe(store, backend)
    for (const keys of [
      ["a", "a"],
      ["x", "b", "x"],
    ]) {
      const err = leftOf(store.gather(keys))
      expect(err).toMatchObject({ _tag: "KeyError", actual: keys[keys.length - 1] })
      expect(err.message).toContain("are the same key")
    }
    await expectUnchanged(store, backend, before)
  })

  it("snapshot and restore of a bad key are a KeyError; has and delete answer false", async () => {
    const before = await probe(store, backend)
    const bytes = before.bytes.get("a") as Uint8Array
    for (const [, key] of badKeys) {
      expect(leftOf(await store.snapshot(key as never))._tag).toBe("KeyError")
      expect(leftOf(store.restore(key as never, bytes))._tag).toBe("KeyError")
      expect(store.has(key as never)).toBe(false)
      expect(store.delete(key as never)).toBe(false)
    }
    expect(leftOf(await store.snapshot("nope"))).toMatchObject({ _tag: "KeyError", actual: "nope" })
    await expectUnchanged(store, backend, before)
  })

  it("restore of something that is not a snapshot is a SnapshotFormatError", async () => {
    const before = await probe(store, backend)
    for (const bad of [null, undefined, 3, "bytes", {}, [1, 2], Int32Array.of(1)]) {
      const err = leftOf(store.restore("a", bad as never))
      expect(err._tag).toBe("SnapshotFormatError")
    }
    await expectUnchanged(store, backend, before)
  })
})

describe("scatter given something that is not the spec's tree", () => {
  it("is a StructureMismatchError; the caller's tensors stay live, untouched and theirs", async () => {
    const backend = hostBackend()
    const store = orThrow(createStateStore({ spec, backend }))
    step(store, ["a", "b"], 1)
    const before = await probe(store, backend)
    const mine = orThrow(store.gather(["a", "b"])) as HostTensor[][]
    const copies = mine.flat().map((t) => (t.data as Float32Array).slice())
    const live = backend.liveTensors()
    const shapes: unknown[] = [
      null,
      undefined,
      42,
      "state",
      mine.flat(),
      [mine[0]],
      { 0: mine[0], 1: mine[1] },
      [mine[0], [mine[1]?.[0], null]],
      [mine[0], [mine[1]?.[0], new Float32Array(2)]],
    ]
    for (const next of shapes) {
      const err = leftOf(store.scatter(["a", "b"], next as never))
      expect(err._tag).toBe("StructureMismatchError")
    }
    expect(backend.liveTensors()).toBe(live)
    mine.flat().forEach((t, i) => {
      expect(backend.describe(t)).toBeDefined()
      expect(t.data).toEqual(copies[i])
    })
    const aliased = leftOf(store.scatter(["a", "b"], [mine[0], mine[0]] as never))
    expect(aliased._tag).toBe("AliasedLeafError")
    disposeTree(backend, mine)
    await expectUnchanged(store, backend, { ...before, live: backend.liveTensors() })
    store.dispose()
    expect(backend.liveTensors()).toBe(0)
  })

  it("a batch of the wrong size or dtype names the leaf", () => {
    const backend = hostBackend()
    const store = orThrow(createStateStore({ spec, backend }))
    step(store, ["a", "b"], 1)
    const three = rowsOf(3, 1)
    expect(leftOf(store.scatter(["a", "b"], three as never))).toMatchObject({
      _tag: "BatchSizeMismatchError",
      path: "[0][0]",
      expected: 2,
      actual: 3,
    })
    const ints = rowsOf(2, 1)
    ;(ints[1] as HostTensor[])[1] = new HostTensor("int32", [1, 2, 2])
    expect(leftOf(store.scatter(["a", "b"], ints as never))).toMatchObject({
      _tag: "DTypeMismatchError",
      path: "[1][1]",
    })
    store.dispose()
  })
})
