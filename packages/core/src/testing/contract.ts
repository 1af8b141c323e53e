import { expect } from "vitest"
import type { LeafContext } from "../backend.js"
import { HostTensor } from "../host-tensor.js"
import { createStateSaver } from "../state-saver.js"
import { init } from "../state-spec.js"
import {
  BATCH,
  distinctState,
  elements,
  expectLive,
  expectTensor,
  kitSpec,
  readBytes,
  referenceGather,
  unwrap,
  valuesFor,
} from "./fixtures.js"
import type { KitTest } from "./harness.js"
import { saveHost } from "./saver.js"

/** A float32 leaf of shape [2, BATCH, 3], batch axis 1, zeros init. */
const LEAF: LeafContext = { path: "contract", batchAxis: 1, init: init.zeros }
const SHAPE = [2, BATCH, 3]
const ALL_ROWS = Array.from({ length: BATCH }, (_, r) => r)

const sample = (seed: number): HostTensor =>
  new HostTensor("float32", SHAPE, valuesFor("float32", 2 * BATCH * 3, seed) as Float32Array)

const zeros = (): HostTensor => new HostTensor("float32", SHAPE)

/** A copy of a host tensor's values, taken now. */
const copyOf = (t: HostTensor): HostTensor =>
  new HostTensor(t.dtype, t.shape, (t.data as Float32Array).slice())

/**
 * The primitive rules of `StateBackend` that core relies on without checking them (see
 * backend.ts): tested on the primitives directly, float32 only (every backend has it).
 */
export function defineContractTests<T, In>(test: KitTest<T, In>): void {
  test("contract: describe answers for live tensors only, undefined once disposed or foreign", async ({
    backend,
    live,
  }) => {
    const start = live()
    const t = backend.allocate(SHAPE, "float32", LEAF)
    const info = backend.describe(t)
    expect(info?.dtype).toBe("float32")
    expect(info?.shape).toEqual(SHAPE)
    for (const foreign of [
      undefined,
      null,
      0,
      "tensor",
      [t],
      { t },
      { shape: SHAPE, dtype: "float32" },
      new Float32Array(2 * BATCH * 3),
    ]) {
      expect(backend.describe(foreign), `describe(${String(foreign)})`).toBeUndefined()
    }
    backend.dispose(t)
    expect(backend.describe(t)).toBeUndefined()
    expectLive(live(), start, "the test's tensors were disposed")
  })

  test("contract: fromHost copies its input and toHost returns a copy", async ({
    backend,
    live,
  }) => {
    const start = live()
    const host = sample(3)
    const original = copyOf(host)
    const t = backend.fromHost(host, LEAF)
    ;(host.data as Float32Array).fill(-1)
    const first = await backend.toHost(t)
    expectTensor(first, original, "fromHost of a later-changed array")
    ;(first.data as Float32Array).fill(-2)
    backend.fill(t, [0, 2], LEAF)
    const second = await backend.toHost(t)
    expect(elements(first)).toEqual(new Array(2 * BATCH * 3).fill(-2))
    expect(second.shape).toEqual(SHAPE)
    backend.dispose(t)
    expectLive(live(), start, "the test's tensors were disposed")
    const filled = referenceGather(original, 1, [null, 1, null, 3], () => 0)
    expectTensor(second, filled, "toHost after fill of rows 0 and 2")
  })

  test("contract: gather of every row in order returns a new tensor that shares no memory", async ({
    backend,
    live,
  }) => {
    const start = live()
    const host = sample(5)
    const src = backend.fromHost(host, LEAF)
    const copy = backend.gather(src, ALL_ROWS, LEAF)
    expect(copy).not.toBe(src)
    backend.fill(src, ALL_ROWS, LEAF)
    expectTensor(await backend.toHost(copy), host, "the gathered copy after its source was reset")
    const other = sample(9)
    const written = backend.fromHost(other, LEAF)
    backend.scatter(copy, ALL_ROWS, written, LEAF)
    expectTensor(await backend.toHost(src), zeros(), "the source after its copy was written")
    expectTensor(await backend.toHost(copy), other, "the copy after a scatter")
    for (const t of [src, copy, written]) backend.dispose(t)
    expectLive(live(), start, "the test's tensors were disposed")
  })

  test("contract: a snapshot taken before a reset and a save holds the values before them", async (kit) => {
    const spec = kitSpec("float32")
    const saver = unwrap(createStateSaver({ spec, backend: kit.backend, batchSize: BATCH }))
    const values = distinctState(spec, BATCH, 1)
    saveHost(kit, saver, values)
    // Core calls every toHost before its first await, then goes on: each copy must be taken
    // (or its transfer queued) before toHost returns.
    const pending = saver.snapshot()
    unwrap(saver.reset([1, 3]))
    saveHost(kit, saver, distinctState(spec, BATCH, 50), "input")
    unwrap(saver.reset())
    const state = readBytes(unwrap(await pending))
    for (const [path, t] of values) expectTensor(state.get(path), t, path)
    saver.dispose()
  })
}
