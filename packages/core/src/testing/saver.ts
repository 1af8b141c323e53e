import { describe, expect } from "vitest"
import { HostTensor } from "../host-tensor.js"
import { type StateSaver, createStateSaver } from "../state-saver.js"
import { type StateSpec, init } from "../state-spec.js"
import { flatten } from "../state-tree.js"
import {
  BATCH,
  KIT_DTYPES,
  distinctState,
  describeResolved,
  elements,
  expectLeft,
  expectLive,
  expectTensor,
  initValue,
  kitSpec,
  read,
  referenceGather,
  snapshotBytes,
  unflattenLike,
  unwrap,
  valuesFor,
} from "./fixtures.js"
import type { Kit, KitTest } from "./harness.js"

/** How `saveHost` makes the tensors it saves: the backend's own, or what a model gives. */
type Via = "fromHost" | "input"

/** Saves host tensors (keyed by path) into the saver, made by `fromHost` or the kit's `input`. */
export function saveHost<T, In>(
  kit: Kit<T, In>,
  saver: StateSaver<T, In>,
  values: ReadonlyMap<string, HostTensor>,
  via: Via = "fromHost",
): void {
  const tensors = saver.spec.leaves.map((leaf): T | In => {
    const host = values.get(leaf.pathString) as HostTensor
    const ctx = { path: leaf.pathString, batchAxis: leaf.batchAxis, init: leaf.init }
    return via === "fromHost" ? kit.backend.fromHost(host, ctx) : kit.input(host, ctx)
  })
  unwrap(saver.save(unflattenLike(saver, tensors)))
}

/** A saver on the kit spec for `dtype`, seeded with distinct values (through `fromHost`). */
export function seeded<T, In>(
  kit: Kit<T, In>,
  dtype: (typeof KIT_DTYPES)[number],
  batchSize = BATCH,
) {
  const spec = kitSpec(dtype)
  const saver = unwrap(createStateSaver({ spec, backend: kit.backend, batchSize }))
  const values = distinctState(spec, batchSize, 1)
  saveHost(kit, saver, values)
  return { spec, saver, values }
}

/**
 * The per-dtype `StateSaver` tests: allocation at each init kind, save, reset by index, mask and
 * all rows, select, snapshot round trip. An undeclared dtype must be refused instead.
 */
export function defineDTypeTests<T, In>(test: KitTest<T, In>): void {
  test("declares capabilities", async ({ backend }) => {
    expect(backend.name).toBeTypeOf("string")
    expect(backend.name.length, "backend.name is empty").toBeGreaterThan(0)
    expect(backend.capabilities.dtypes.length).toBeGreaterThan(0)
    expect(backend.capabilities.dtypes).toContain("float32")
  })

  for (const dtype of KIT_DTYPES) {
    describe(dtype, () => {
      // On a dtype the backend does not declare, these are reported as skipped (their names say
      // what they check, which is not refusal); the refusal has its own test below.
      const run = (name: string, body: (kit: Kit<T, In>) => Promise<void>) =>
        test(`${dtype}: ${name}`, async (kit) => {
          if (!kit.dtypes.includes(dtype)) kit.skip(`${dtype} is not declared`)
          await body(kit)
        })

      test(`${dtype}: a saver is created when the dtype is declared, refused with DTypeMismatchError when not`, async (kit) => {
        const r = createStateSaver({ spec: kitSpec(dtype), backend: kit.backend, batchSize: BATCH })
        if (!kit.dtypes.includes(dtype)) {
          if (kit.backend.capabilities.dtypes.includes(dtype)) {
            // Declared but excluded by `capabilities.dtypes`: nothing to check.
            if (r._tag === "Right") r.right.dispose()
            kit.skip(`${dtype} is excluded by the options' capabilities.dtypes`)
          }
          const err = expectLeft(r, "DTypeMismatchError")
          expect(err.message).toContain(dtype)
          return
        }
        expect(r._tag, `createStateSaver on a spec of ${dtype}`).toBe("Right")
        if (r._tag === "Right") r.right.dispose()
      })

      run("allocates every leaf at its init", async ({ backend }) => {
        const spec = kitSpec(dtype)
        const saver = unwrap(createStateSaver({ spec, backend, batchSize: BATCH }))
        const state = await read(saver)
        for (const leaf of saver.spec.leaves) {
          const shape = leaf.shape.map((d, axis) =>
            axis === leaf.batchAxis ? BATCH : (d as number),
          )
          const expected = referenceGather(
            new HostTensor(dtype, shape),
            leaf.batchAxis,
            Array.from({ length: BATCH }, () => null),
            initValue(leaf.spec, dtype),
          )
          expectTensor(
            state.get(leaf.pathString),
            expected,
            `allocate (createStateSaver) of ${describeResolved(leaf)}`,
          )
        }
        saver.dispose()
      })

      run("save keeps the given tensors and state() returns them", async (kit) => {
        const { saver, values } = seeded(kit, dtype)
        const state = await read(saver)
        for (const leaf of saver.spec.leaves)
          expectTensor(
            state.get(leaf.pathString),
            values.get(leaf.pathString) as HostTensor,
            `save (adopt) of a fromHost tensor, then toHost, at ${describeResolved(leaf)}`,
          )
        const leaves = flatten<T>(saver.state()).leaves
        expect(leaves).toHaveLength(values.size)
        saver.spec.leaves.forEach((leaf, i) =>
          expect(
            kit.backend.describe(leaves[i])?.dtype,
            `describe of state() at ${describeResolved(leaf)}`,
          ).toBe(dtype),
        )
        // What a model gives (`makeInput`) is taken over the same way, and nothing is left behind.
        const live = kit.live()
        const next = distinctState(saver.spec.spec, BATCH, 21)
        saveHost(kit, saver, next, "input")
        const after = await read(saver)
        for (const leaf of saver.spec.leaves)
          expectTensor(
            after.get(leaf.pathString),
            next.get(leaf.pathString) as HostTensor,
            `save (adopt) of a makeInput tensor, then toHost, at ${describeResolved(leaf)}`,
          )
        expectLive(kit.live(), live, "a save of makeInput tensors over the saver's own")
        saver.dispose()
      })

      run("reset(rows) sets only those rows to init, by index and by mask", async (kit) => {
        const { saver, values } = seeded(kit, dtype)
        unwrap(saver.reset([2, 0]))
        unwrap(saver.reset([false, false, false, true]))
        const state = await read(saver)
        for (const leaf of saver.spec.leaves) {
          const expected = referenceGather(
            values.get(leaf.pathString) as HostTensor,
            leaf.batchAxis,
            [null, 1, null, null],
            initValue(leaf.spec, dtype),
          )
          expectTensor(
            state.get(leaf.pathString),
            expected,
            `reset([2, 0]) then reset(mask of row 3) (backend fill of rows [0, 2], then [3]) at ${describeResolved(leaf)}`,
          )
        }
        saver.dispose()
      })

      run("reset() sets every row to init", async (kit) => {
        const { saver } = seeded(kit, dtype)
        unwrap(saver.reset())
        const state = await read(saver)
        for (const leaf of saver.spec.leaves) {
          const t = state.get(leaf.pathString) as HostTensor
          const expected = referenceGather(
            t,
            leaf.batchAxis,
            [null, null, null, null],
            initValue(leaf.spec, dtype),
          )
          expectTensor(
            t,
            expected,
            `reset() (backend fill of every row) at ${describeResolved(leaf)}`,
          )
        }
        saver.dispose()
      })

      run("select drops, reorders and duplicates rows; null is a fresh init row", async (kit) => {
        const { saver, values } = seeded(kit, dtype)
        const rows = [3, 1, 1, null, 0]
        unwrap(saver.select(rows))
        expect(saver.batchSize).toBe(5)
        const state = await read(saver)
        for (const leaf of saver.spec.leaves) {
          const expected = referenceGather(
            values.get(leaf.pathString) as HostTensor,
            leaf.batchAxis,
            rows,
            initValue(leaf.spec, dtype),
          )
          expectTensor(
            state.get(leaf.pathString),
            expected,
            `select([3, 1, 1, null, 0]) (backend gather) at ${describeResolved(leaf)}`,
          )
        }
        unwrap(saver.select([4]))
        expect(saver.batchSize).toBe(1)
        const shrunk = await read(saver)
        for (const leaf of saver.spec.leaves) {
          const before = values.get(leaf.pathString) as HostTensor
          const expected = referenceGather(before, leaf.batchAxis, [0], () => 0)
          expectTensor(
            shrunk.get(leaf.pathString),
            expected,
            `select([4]) after select([3, 1, 1, null, 0]) (backend gather) at ${describeResolved(leaf)}`,
          )
        }
        saver.dispose()
      })

      run(
        "select at the same batch size (backend reorder, else gather): cycles, forks, drops",
        async (kit) => {
          const { saver, values } = seeded(kit, dtype)
          const borrowed = saver.leaves()
          const op = kit.backend.reorder === undefined ? "backend gather" : "backend reorder"
          const live = kit.live()
          let expected = new Map(values)
          const done: string[] = []
          for (const rows of [
            [3, 2, 1, 0],
            [1, 2, 3, 0],
            [0, 0, 1, 2],
            [2, 2, 3, 0],
            [1, 1, 1, 1],
          ]) {
            unwrap(saver.select(rows))
            done.push(`select([${rows.join(", ")}])`)
            expect(saver.batchSize).toBe(BATCH)
            const state = await read(saver)
            const next = new Map<string, HostTensor>()
            for (const leaf of saver.spec.leaves) {
              const want = referenceGather(
                expected.get(leaf.pathString) as HostTensor,
                leaf.batchAxis,
                rows,
                () => 0,
              )
              next.set(leaf.pathString, want)
              expectTensor(
                state.get(leaf.pathString),
                want,
                `${done.join(", then ")} (${op}) at ${describeResolved(leaf)}`,
              )
            }
            expected = next
          }
          expect(kit.live(), "live tensors after five selects").toBe(live)
          if (kit.backend.reorder !== undefined) {
            const same = saver.leaves().every((t, i) => t === borrowed[i])
            expect(same, "the saver holds the same tensors, reordered in place").toBe(true)
          }
          saver.dispose()
        },
      )

      run("snapshot then restore round-trips bit-exactly", async (kit) => {
        const { spec, saver, values } = seeded(kit, dtype)
        const bytes = await snapshotBytes(saver)
        const other = unwrap(createStateSaver({ spec, backend: kit.backend, batchSize: BATCH }))
        unwrap(other.restore(bytes))
        const state = await read(other)
        for (const leaf of saver.spec.leaves)
          expectTensor(
            state.get(leaf.pathString),
            values.get(leaf.pathString) as HostTensor,
            `snapshot (toHost) then restore (fromHost) at ${describeResolved(leaf)}`,
          )
        expect(await snapshotBytes(other), "a restored saver's snapshot bytes").toEqual(bytes)
        saver.dispose()
        other.dispose()
      })
    })
  }
}

/** Ownership: a swapped save, dispose, named dims that grow, and reset-then-step. */
export function defineOwnershipTests<T, In>(test: KitTest<T, In>): void {
  test("save of the saver's own state is a no-op, a swapped save copies", async (kit) => {
    const { backend } = kit
    const { saver, values } = seeded(kit, "float32")
    const live = kit.live()
    unwrap(saver.save(saver.state()))
    expectLive(kit.live(), live, "a save of the saver's own state()")
    // b[0] is [2, batch, 2] and a is [batch, 3]: swapping two leaves of one shape needs a copy.
    const spec2: StateSpec = [
      { shape: ["batch", 3], dtype: "float32" },
      { shape: ["batch", 3], dtype: "float32" },
    ]
    const pair = unwrap(createStateSaver({ spec: spec2, backend, batchSize: BATCH }))
    const x = values.get("a") as HostTensor
    const y = distinctState(spec2, BATCH, 99).get("[1]") as HostTensor
    unwrap(
      pair.save([
        backend.fromHost(x, { path: "[0]", batchAxis: 0, init: init.zeros }),
        backend.fromHost(y, { path: "[1]", batchAxis: 0, init: init.zeros }),
      ]),
    )
    const [p0, p1] = pair.state() as T[]
    unwrap(pair.save([p1 as T, p0 as T]))
    const swapped = await read(pair)
    expectTensor(swapped.get("[0]"), y, "[0]")
    expectTensor(swapped.get("[1]"), x, "[1]")
    pair.dispose()
    saver.dispose()
  })

  test("dispose frees every tensor; later calls fail with DisposedError", async (kit) => {
    const live = kit.live()
    const { saver } = seeded(kit, "float32")
    expect(kit.live()).toBeGreaterThan(live)
    saver.dispose()
    saver.dispose()
    expectLive(kit.live(), live, "saver.dispose() (twice)")
    expect(saver.disposed).toBe(true)
    expect(() => saver.state()).toThrowError(expect.objectContaining({ _tag: "DisposedError" }))
    expectLeft(saver.reset(), "DisposedError")
    expectLeft(saver.select([0]), "DisposedError")
    expectLeft(await saver.snapshot(), "DisposedError")
  })

  test("named dims grow with save and reset() brings them back", async (kit) => {
    const { backend } = kit
    const spec: StateSpec = {
      key: { shape: ["batch", 2, "seq", 3], dtype: "float32" },
      value: { shape: ["batch", 2, "seq", 3], dtype: "float32" },
    }
    const saver = unwrap(createStateSaver({ spec, backend, batchSize: 2 }))
    expect(saver.dims()).toEqual({ seq: 0 })
    const grown = (seq: number, seed: number): T | In =>
      kit.input(
        new HostTensor(
          "float32",
          [2, 2, seq, 3],
          valuesFor("float32", 12 * seq, seed) as Float32Array,
        ),
        {
          path: "",
          batchAxis: 0,
          init: init.zeros,
        },
      )
    unwrap(saver.save({ key: grown(5, 1), value: grown(5, 2) }))
    expect(saver.dims()).toEqual({ seq: 5 })
    const k = grown(6, 3)
    const v = grown(5, 4)
    const err = expectLeft(saver.save({ key: k, value: v }), "ShapeMismatchError")
    expect(err.path).toBe("value")
    backend.dispose(k)
    backend.dispose(v)
    unwrap(saver.select([1, null]))
    const state = await read(saver)
    expect(state.get("key")?.shape).toEqual([2, 2, 5, 3])
    // Row 1 of the original key (values seeded from 1) moved to row 0; row 1 is a fresh zero row.
    const original = Array.from(valuesFor("float32", 60, 1) as Float32Array)
    expect(elements(state.get("key")).slice(0, 30)).toEqual(original.slice(30))
    expect(elements(state.get("key")).slice(30)).toEqual(new Array(30).fill(0))
    unwrap(saver.reset())
    expect(saver.dims()).toEqual({ seq: 0 })
    saver.dispose()
  })

  test("reset(rows) then a step equals stepping a fresh row; other rows untouched", async (kit) => {
    // A model-free step: every element x becomes 0.5 * x + 1, applied through the host, and
    // handed back the way a model's output is (`makeInput`).
    const { saver } = seeded(kit, "float32")
    const stepped = (t: HostTensor) => (t.data as Float32Array).map((x) => 0.5 * x + 1)
    const step = async () => {
      const state = await read(saver)
      const next = new Map<string, HostTensor>()
      for (const [p, t] of state) next.set(p, new HostTensor("float32", t.shape, stepped(t)))
      saveHost(kit, saver, next, "input")
    }
    const fresh = unwrap(
      createStateSaver({ spec: saver.spec.spec, backend: kit.backend, batchSize: BATCH }),
    )
    const before = await read(saver)
    unwrap(saver.reset([1]))
    await step()
    const after = await read(saver)
    const freshState = await read(fresh)
    for (const leaf of saver.spec.leaves) {
      const a = after.get(leaf.pathString) as HostTensor
      const f = freshState.get(leaf.pathString) as HostTensor
      const b0 = before.get(leaf.pathString) as HostTensor
      const row = (t: HostTensor, data: Float32Array, r: number) =>
        elements(
          referenceGather(new HostTensor("float32", t.shape, data), leaf.batchAxis, [r], () => 0),
        )
      expect(row(a, a.data as Float32Array, 1)).toEqual(row(f, stepped(f), 1))
      for (const r of [0, 2, 3])
        expect(row(a, a.data as Float32Array, r)).toEqual(row(b0, stepped(b0), r))
    }
    fresh.dispose()
    saver.dispose()
  })
}

/** The saver's leak loop: long runs of every operation leave the live-tensor count flat. */
export function defineLoopTests<T, In>(test: KitTest<T, In>): void {
  test("no live tensor growth over long save / reset / select / restore loops", async (kit) => {
    const { saver, spec } = seeded(kit, "float32")
    const bytes = await snapshotBytes(saver)
    const values = distinctState(spec, BATCH, 5)
    const start = kit.live()
    for (let i = 0; i < kit.iterations; i++) {
      saveHost(kit, saver, values, i % 2 === 0 ? "fromHost" : "input")
      unwrap(saver.reset([i % BATCH]))
      unwrap(saver.select([3, 2, null, 0]))
      if (i % 50 === 0) unwrap(saver.restore(bytes))
      if (i % 10 === 0) unwrap(saver.reset())
      expectLeft(saver.select([9]), "RowIndexError")
    }
    expectLive(kit.live(), start, `${kit.iterations} save/reset/select/restore loops`)
    saver.dispose()
  })
}
