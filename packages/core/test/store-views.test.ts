/**
 * `gather(keys, { views: true })`: streams held side by side come back as views of the store's
 * rows (writes reach the store, nothing is copied out), `scatter` of those views to the same keys
 * writes nothing, and every other case falls back to copies with the same results.
 */
import { describe, expect, it } from "vitest"
import {
  type HostBackend,
  HostTensor,
  type StateSpec,
  type StateStore,
  type StreamKey,
  createStateStore,
  hostBackend,
  orThrow,
  reorderRowsTyped,
  rowLayout,
} from "@statesaver/core"

/**
 * The host backend with `view` (a subarray of the source) and counts of its row copies; with
 * `reorder` too when `moving` (refused for the leaf named `refuse`, before anything changes).
 */
function viewingHost(moving?: { refuse?: string }) {
  const inner = hostBackend()
  const calls = { view: 0, gather: 0, scatter: 0, reorder: 0 }
  const backend: HostBackend = {
    ...inner,
    gather(src, rows, leaf) {
      calls.gather++
      return inner.gather(src, rows, leaf)
    },
    scatter(dst, rows, src, leaf) {
      calls.scatter++
      inner.scatter(dst, rows, src, leaf)
    },
    view(src, start, count, leaf) {
      calls.view++
      const before = src.shape.slice(0, leaf.batchAxis).reduce((a, b) => a * b, 1)
      if (before !== 1) return undefined
      const row = src.shape.slice(leaf.batchAxis + 1).reduce((a, b) => a * b, 1)
      const shape = src.shape.map((d, a) => (a === leaf.batchAxis ? count : d))
      return new HostTensor(
        src.dtype,
        shape,
        (src.data as Float32Array).subarray(start * row, (start + count) * row),
      )
    },
    ...(moving === undefined
      ? {}
      : {
          reorder(
            t: HostTensor,
            rows: readonly number[],
            leaf: { path: string; batchAxis: number },
          ) {
            if (leaf.path === moving.refuse) throw new Error(`no reorder of ${leaf.path}`)
            calls.reorder++
            reorderRowsTyped(t.data as Float32Array, rowLayout(t.shape, leaf.batchAxis), rows)
          },
        }),
  }
  return { backend, calls }
}

const spec: StateSpec = {
  h: { shape: ["batch", 3], dtype: "float32" },
  // Rows of `c` are two runs of memory: never a view.
  c: { shape: [2, "batch", 2], dtype: "float32" },
}

/** The same leaves with the batch axis first: every leaf's rows can be views. */
const flat: StateSpec = {
  h: { shape: ["batch", 3], dtype: "float32" },
  c: { shape: ["batch", 2, 2], dtype: "float32" },
}

interface Batch {
  h: HostTensor<"float32">
  c: HostTensor<"float32">
}

/** Gives each key distinct rows (value k*10 + element) by a plain gather and scatter. */
function fill(store: StateStore<HostTensor>, keys: StreamKey[], base: number): void {
  const b = orThrow(store.gather(keys)) as unknown as Batch
  b.h.data.forEach((_, i, d) => (d[i] = base + i))
  b.c.data.forEach((_, i, d) => (d[i] = -base - i))
  orThrow(store.scatter(keys, b as never))
}

/** Each key's rows as plain arrays, read by copies. */
function rowsOf(store: StateStore<HostTensor>, keys: StreamKey[]): number[][] {
  return keys.map((k) => {
    const b = orThrow(store.gather([k])) as unknown as Batch
    const out = [...b.h.data, ...b.c.data]
    store.backend.dispose(b.h)
    store.backend.dispose(b.c)
    return out
  })
}

describe("gather with views", () => {
  it("streams side by side: h is a view (writes reach the store), c a copy; scatter back writes only c", () => {
    const { backend, calls } = viewingHost()
    const store = orThrow(createStateStore({ spec, backend, initialSlots: 4 }))
    fill(store, ["a", "b", "c"], 100)
    const before = rowsOf(store, ["a", "b", "c"])
    const live = backend.liveTensors()
    const b = orThrow(store.gather(["b", "c"], { views: true })) as unknown as Batch
    // h shares the rows of slots 1 and 2: a write through the view is in the store at once.
    b.h.data[0] = 7
    expect(rowsOf(store, ["b"])[0]?.[0]).toBe(7)
    b.c.data[0] = 9
    expect(rowsOf(store, ["b"])[0]?.[3]).toBe(before[1]?.[3])
    calls.scatter = 0
    orThrow(store.scatter(["b", "c"], b as never))
    expect(calls.scatter).toBe(1)
    const after = rowsOf(store, ["a", "b", "c"])
    expect(after[0]).toEqual(before[0])
    expect(after[1]?.[0]).toBe(7)
    expect(after[1]?.[3]).toBe(9)
    expect(after[2]).toEqual(before[2])
    expect(backend.liveTensors()).toBe(live)
    store.dispose()
    expect(backend.liveTensors()).toBe(0)
  })

  it("a gather with views is not a use: the scatter that gives them back is", () => {
    const { backend } = viewingHost()
    const store = orThrow(createStateStore({ spec, backend, initialSlots: 4 }))
    fill(store, ["a", "b", "c"], 1)
    fill(store, ["c"], 2)
    expect(store.keys()).toEqual(["a", "b", "c"])
    const b = orThrow(store.gather(["a", "b"], { views: true }))
    expect(store.keys()).toEqual(["a", "b", "c"])
    orThrow(store.scatter(["a", "b"], b))
    expect(store.keys()).toEqual(["c", "a", "b"])
    store.dispose()
  })

  it("views given to other keys (here swapped) are copied first, so no row overwrites one still to be read", () => {
    const { backend } = viewingHost()
    const store = orThrow(createStateStore({ spec, backend, initialSlots: 4 }))
    fill(store, ["a", "b"], 100)
    const before = rowsOf(store, ["a", "b"])
    const b = orThrow(store.gather(["a", "b"], { views: true }))
    orThrow(store.scatter(["b", "a"], b))
    expect(rowsOf(store, ["a", "b"])).toEqual([before[1], before[0]])
    store.dispose()
    expect(backend.liveTensors()).toBe(0)
  })

  it("falls back to copies: keys out of slot order (a backend without reorder), a key at init, a new key, a store without view", () => {
    const { backend, calls } = viewingHost()
    const store = orThrow(createStateStore({ spec, backend, initialSlots: 8 }))
    fill(store, ["a", "b", "c"], 100)
    const expectCopies = (keys: StreamKey[]) => {
      calls.view = 0
      const b = orThrow(store.gather(keys, { views: true })) as unknown as Batch
      expect(calls.view, keys.join()).toBe(0)
      const rows = b.h.data.slice()
      b.h.data[0] = 12345
      // A copy: the store did not change.
      expect(rowsOf(store, [keys[0] as StreamKey])[0]?.[0]).not.toBe(12345)
      store.backend.dispose(b.h)
      store.backend.dispose(b.c)
      return rows
    }
    expectCopies(["c", "b"])
    expectCopies(["a", "c"])
    orThrow(store.reset(["b"]))
    expectCopies(["a", "b"])
    expectCopies(["c", "new"])
    const plain = orThrow(createStateStore({ spec, backend: hostBackend() }))
    fill(plain, ["x", "y"], 5)
    const b = orThrow(plain.gather(["x", "y"], { views: true })) as unknown as Batch
    b.h.data[0] = 12345
    expect(rowsOf(plain, ["x"])[0]?.[0]).toBe(5)
    orThrow(plain.scatter(["x", "y"], b as never))
    expect(rowsOf(plain, ["x"])[0]?.[0]).toBe(12345)
    store.dispose()
    plain.dispose()
  })

  it("keys out of slot order, with a backend that has reorder: the rows move once (every stream keeps its state) and come back as views; the same keys again move nothing", () => {
    const { backend, calls } = viewingHost({})
    const store = orThrow(createStateStore({ spec: flat, backend, initialSlots: 4 }))
    const keys = ["a", "b", "c", "d"]
    fill(store, keys, 100)
    const before = rowsOf(store, keys)
    const live = backend.liveTensors()
    // c, a: slots 2 and 0. They move to slots 0 and 1 (b, in the way, to slot 2).
    const b = orThrow(store.gather(["c", "a"], { views: true })) as unknown as Batch
    expect(calls.reorder).toBe(2)
    expect([...b.h.data]).toEqual([
      ...(before[2] ?? []).slice(0, 3),
      ...(before[0] ?? []).slice(0, 3),
    ])
    expect([...b.c.data]).toEqual([...(before[2] ?? []).slice(3), ...(before[0] ?? []).slice(3)])
    // A view: a write through it is in c's rows at once.
    b.h.data[0] = 7
    expect(rowsOf(store, ["c"])[0]?.[0]).toBe(7)
    b.h.data[0] = before[2]?.[0] as number
    orThrow(store.scatter(["c", "a"], b as never))
    expect(rowsOf(store, keys)).toEqual(before)
    calls.reorder = 0
    calls.view = 0
    const again = orThrow(store.gather(["c", "a"], { views: true })) as unknown as Batch
    expect(calls.reorder).toBe(0)
    // The views given back are handed out again: none made.
    expect(calls.view).toBe(0)
    expect(again.h).toBe(b.h)
    orThrow(store.scatter(["c", "a"], again as never))
    // A new key takes the lowest free slot, as before any move.
    store.delete("b")
    fill(store, ["e"], 500)
    const moved = orThrow(store.gather(["a", "e", "d"], { views: true })) as unknown as Batch
    expect([...moved.h.data.subarray(3, 6)]).toEqual([500, 501, 502])
    orThrow(store.scatter(["a", "e", "d"], moved as never))
    expect(rowsOf(store, ["a", "c", "d"])).toEqual([before[0], before[2], before[3]])
    expect(backend.liveTensors()).toBe(live)
    store.dispose()
    expect(backend.liveTensors()).toBe(0)
  })

  it("views given back whole are handed out again for the same rows, and freed when the rows differ, a leaf is replaced, a caller freed one, the slabs grow or the store is disposed", () => {
    const { backend, calls } = viewingHost()
    const freed: unknown[] = []
    const counting: HostBackend = {
      ...backend,
      dispose(t) {
        freed.push(t)
        backend.dispose(t)
      },
    }
    const store = orThrow(createStateStore({ spec: flat, backend: counting, initialSlots: 4 }))
    fill(store, ["a", "b", "c"], 100)
    const gather = (keys: StreamKey[]) =>
      orThrow(store.gather(keys, { views: true })) as unknown as Batch
    const first = gather(["a", "b"])
    freed.length = 0
    orThrow(store.scatter(["a", "b"], first as never))
    // Kept, not freed: the next gather of the same rows hands them out again.
    expect(freed).toEqual([])
    calls.view = 0
    const again = gather(["a", "b"])
    expect(calls.view).toBe(0)
    expect(again.h).toBe(first.h)
    expect(again.c).toBe(first.c)
    // Still views of the rows: a write through one reaches the store.
    again.h.data[0] = 9
    expect(rowsOf(store, ["a"])[0]?.[0]).toBe(9)
    orThrow(store.scatter(["a", "b"], again as never))
    // The same first row, fewer rows: the kept views are freed and views of that row made.
    freed.length = 0
    const one = gather(["a"])
    expect(calls.view).toBe(2)
    expect(one.h.shape).toEqual([1, 3])
    expect(freed).toHaveLength(2)
    expect(freed).toContain(first.h)
    expect(freed).toContain(first.c)
    orThrow(store.scatter(["a"], one as never))
    // Other rows: the same.
    freed.length = 0
    const other = gather(["b", "c"])
    expect(calls.view).toBe(4)
    expect(freed).toHaveLength(2)
    expect(freed).toContain(one.h)
    expect(freed).toContain(one.c)
    // A leaf replaced: the tree is checked and written as any, and nothing is kept.
    const h = new HostTensor("float32", [2, 3], new Float32Array(6).fill(4))
    orThrow(store.scatter(["b", "c"], { h, c: other.c } as never))
    expect(rowsOf(store, ["b"])[0]?.slice(0, 3)).toEqual([4, 4, 4])
    calls.view = 0
    const fresh = gather(["b", "c"])
    expect(calls.view).toBe(2)
    // A view freed before it comes back is refused as before; the rows are unchanged.
    counting.dispose(fresh.h)
    const refused = store.scatter(["b", "c"], fresh as never)
    expect(refused._tag === "Left" && refused.left._tag).toBe("StructureMismatchError")
    expect(refused._tag === "Left" && refused.left.path).toBe("h")
    expect(rowsOf(store, ["b"])[0]?.slice(0, 3)).toEqual([4, 4, 4])
    counting.dispose(fresh.c)
    // A view freed by a caller that kept it after giving it back is not handed out again.
    const given = gather(["b", "c"])
    orThrow(store.scatter(["b", "c"], given as never))
    backend.dispose(given.h)
    calls.view = 0
    const remade = gather(["b", "c"])
    expect(calls.view).toBe(2)
    expect(remade.h).not.toBe(given.h)
    expect([...remade.h.data.subarray(0, 3)]).toEqual([4, 4, 4])
    orThrow(store.scatter(["b", "c"], remade as never))
    // Kept views of slabs that grow are freed with them.
    const kept = gather(["a", "b"])
    orThrow(store.scatter(["a", "b"], kept as never))
    freed.length = 0
    fill(store, ["d", "e", "f"], 300)
    expect(store.slots).toBeGreaterThan(4)
    expect(freed).toContain(kept.h)
    expect(freed).toContain(kept.c)
    const last = gather(["a", "b"])
    expect(last.h).not.toBe(kept.h)
    expect([...last.h.data.subarray(3, 6)]).toEqual(rowsOf(store, ["b"])[0]?.slice(0, 3))
    orThrow(store.scatter(["a", "b"], last as never))
    freed.length = 0
    store.dispose()
    expect(freed).toContain(last.h)
    expect(freed).toContain(last.c)
    expect(backend.liveTensors()).toBe(0)
  })

  it("new keys of one call take slots in key order, also past the initial slots: views at once, nothing moved", () => {
    const { backend, calls } = viewingHost({})
    const store = orThrow(createStateStore({ spec: flat, backend, initialSlots: 4 }))
    fill(store, ["a", "b"], 1)
    const keys = ["c", "d", "e", "f", "g", "h"]
    fill(store, keys, 100)
    expect(store.slots).toBeGreaterThanOrEqual(8)
    const b = orThrow(store.gather(keys, { views: true }))
    expect(calls.reorder).toBe(0)
    expect(calls.view).toBe(2)
    orThrow(store.scatter(keys, b))
    store.dispose()
    expect(backend.liveTensors()).toBe(0)
  })

  it("a refused move is a BackendError naming the leaf; the leaves moved before it are put back, nothing leaks", () => {
    // Leaves in flatten order: c, then h. h refuses: c was moved and is put back.
    const { backend, calls } = viewingHost({ refuse: "h" })
    const store = orThrow(createStateStore({ spec: flat, backend, initialSlots: 4 }))
    const keys = ["a", "b", "c"]
    fill(store, keys, 100)
    const before = rowsOf(store, keys)
    const live = backend.liveTensors()
    const r = store.gather(["c", "a"], { views: true })
    expect(r).toMatchObject({
      _tag: "Left",
      left: { _tag: "BackendError", path: "h", operation: "reorder" },
    })
    expect(calls.reorder).toBe(2)
    expect(rowsOf(store, keys)).toEqual(before)
    expect(backend.liveTensors()).toBe(live)
    // Without views, the same keys are copies as ever.
    const copy = orThrow(store.gather(["c", "a"])) as unknown as Batch
    expect([...copy.h.data.subarray(0, 3)]).toEqual(before[2]?.slice(0, 3))
    backend.dispose(copy.h)
    backend.dispose(copy.c)
    store.dispose()
    expect(backend.liveTensors()).toBe(0)
  })

  it("a leaf whose rows cannot be views (a dim before the batch axis, device memory) moves nothing: copies, as without reorder", () => {
    const { backend, calls } = viewingHost({})
    const store = orThrow(createStateStore({ spec, backend, initialSlots: 4 }))
    fill(store, ["a", "b"], 1)
    const before = rowsOf(store, ["a", "b"])
    const live = backend.liveTensors()
    const b = orThrow(store.gather(["b", "a"], { views: true })) as unknown as Batch
    expect(calls.reorder).toBe(0)
    // h's view was made to see whether it could be, then freed; both leaves are copies.
    b.h.data[0] = 12345
    expect(rowsOf(store, ["b"])[0]?.[0]).toBe(before[1]?.[0])
    backend.dispose(b.h)
    backend.dispose(b.c)
    expect(backend.liveTensors()).toBe(live)
    expect(rowsOf(store, ["a", "b"])).toEqual(before)
    store.dispose()
    expect(backend.liveTensors()).toBe(0)
  })

  it("malformed gather and scatter options are OptionErrors naming them; nothing changes", () => {
    const { backend } = viewingHost()
    const store = orThrow(createStateStore({ spec, backend, initialSlots: 4 }))
    fill(store, ["a", "b"], 1)
    const before = rowsOf(store, ["a", "b"])
    const live = backend.liveTensors()
    const batch = orThrow(store.gather(["a"]))
    const order = store.keys()
    for (const [options, path] of [
      [null, "options"],
      ["views", "options"],
      [5, "options"],
      [[], "options"],
      [{ views: "yes" }, "views"],
      [{ views: 1 }, "views"],
      [{ views: Number.NaN }, "views"],
    ] as const) {
      const r = store.gather(["a", "new"], options as never)
      expect(r, String(options)).toMatchObject({
        _tag: "Left",
        left: { _tag: "OptionError", path },
      })
    }
    for (const [options, path] of [
      [null, "options"],
      ["grow", "options"],
      [{ grow: 1 }, "grow"],
      [{ grow: "yes" }, "grow"],
    ] as const) {
      const r = store.scatter(["a"], batch, options as never)
      expect(r, String(options)).toMatchObject({
        _tag: "Left",
        left: { _tag: "OptionError", path },
      })
    }
    expect(store.keys()).toEqual(order)
    for (const t of Object.values(batch as object) as HostTensor[]) backend.dispose(t)
    expect(rowsOf(store, ["a", "b"])).toEqual(before)
    expect(store.has("new")).toBe(false)
    expect(backend.liveTensors()).toBe(live)
    store.dispose()
  })

  it("a backend whose view throws is a BackendError naming the leaf; nothing leaks", () => {
    const { backend } = viewingHost()
    const store = orThrow(createStateStore({ spec, backend, initialSlots: 4 }))
    fill(store, ["a", "b"], 1)
    const live = backend.liveTensors()
    const broken: HostBackend = {
      ...backend,
      view: () => {
        throw new Error("no view today")
      },
    }
    const other = orThrow(createStateStore({ spec, backend: broken, initialSlots: 4 }))
    fill(other, ["a", "b"], 1)
    const r = other.gather(["a", "b"], { views: true })
    // The first leaf in flatten order (c, then h).
    expect(r).toMatchObject({
      _tag: "Left",
      left: { _tag: "BackendError", path: "c", operation: "view" },
    })
    expect(backend.liveTensors()).toBe(live + 2)
    other.dispose()
    store.dispose()
    expect(backend.liveTensors()).toBe(0)
  })
})
