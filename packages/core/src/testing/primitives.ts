import { expect } from "vitest"
import type { LeafContext } from "../backend.js"
import { type DType, HostTensor, sizeOf } from "../host-tensor.js"
import { type Init, init } from "../state-spec.js"
import {
  BATCH,
  describeLeaf,
  elements,
  expectLive,
  expectTensor,
  initValue,
  referenceGather,
  valuesFor,
} from "./fixtures.js"
import type { Kit, KitTest } from "./harness.js"

/** One leaf the primitive tests run on: its context, full shape and dtype. */
interface Case {
  readonly leaf: LeafContext
  readonly shape: readonly number[]
  readonly dtype: DType
}

const tensorInit = (dtype: DType, shape: number[], seed: number): Init =>
  init.tensor(new HostTensor(dtype, shape, valuesFor(dtype, sizeOf(shape), seed) as never))

/**
 * Leaves that cover each layout a row operation meets: the batch axis first, in the middle and
 * last; one element per row chunk and many; a per-row init tensor with several chunks of
 * several elements; rows of 68 KB; more than 4096 row chunks.
 */
function cases(dtype: DType): Case[] {
  const constant = dtype === "int64" ? init.constant(-(1n << 62n) - 3n) : init.constant(1)
  const c = (path: string, shape: number[], batchAxis: number, i: Init): Case => ({
    leaf: { path, batchAxis, init: i },
    shape,
    dtype,
  })
  return [
    c("axis0", [BATCH, 3], 0, init.zeros),
    c("axis1", [2, BATCH, 3], 1, constant),
    c("axis2", [2, 3, BATCH], 2, tensorInit(dtype, [2, 3], 31)),
    c("initRows", [3, BATCH, 2], 1, tensorInit(dtype, [3, 2], 37)),
    c("wideRows", [BATCH, 17_000], 0, constant),
    c("manyChunks", [2100, BATCH, 1], 1, tensorInit(dtype, [2100, 1], 41)),
  ]
}

const label = (op: string, c: Case) =>
  `${op} on ${describeLeaf({ ...c.leaf, dtype: c.dtype, shape: c.shape })}`

const valuesOf = (c: Case, seed: number, rows = BATCH): HostTensor => {
  const shape = [...c.shape]
  shape[c.leaf.batchAxis] = rows
  return new HostTensor(c.dtype, shape, valuesFor(c.dtype, sizeOf(shape), seed) as never)
}

const initRow = (c: Case) =>
  initValue(
    {
      shape: c.shape.map((d, a) => (a === c.leaf.batchAxis ? "batch" : d)),
      dtype: c.dtype,
      init: c.leaf.init,
    },
    c.dtype,
  )

/** Row `i` of `src` written into row `rows[i]` of a copy of `dst`, by plain index arithmetic. */
function referenceScatter(
  dst: HostTensor,
  axis: number,
  rows: readonly number[],
  src: HostTensor,
): HostTensor {
  const all = Array.from({ length: dst.shape[axis] as number }, (_, r) => r)
  const out = referenceGather(dst, axis, all, () => 0)
  const outer = sizeOf(dst.shape.slice(0, axis))
  const inner = sizeOf(dst.shape.slice(axis + 1))
  const n = dst.shape[axis] as number
  const o = out.data as unknown as (number | bigint)[]
  const s = src.data as unknown as (number | bigint)[]
  for (let a = 0; a < outer; a++)
    for (let i = 0; i < rows.length; i++)
      for (let k = 0; k < inner; k++)
        o[(a * n + (rows[i] as number)) * inner + k] = s[
          (a * rows.length + i) * inner + k
        ] as number
  return out
}

/**
 * `dst` with `src` written along `axis` at row `r`'s offset `offsets[r]`, element by element
 * (the reference for `writeAt`).
 */
function referenceWrite(
  dst: HostTensor,
  axis: number,
  batchAxis: number,
  offsets: readonly number[],
  src: HostTensor,
): HostTensor {
  const out = new HostTensor(dst.dtype, dst.shape, dst.data.slice() as never)
  const o = out.data as unknown as (number | bigint)[]
  const s = src.data as unknown as (number | bigint)[]
  const strides = (shape: readonly number[]) => shape.map((_, i) => sizeOf(shape.slice(i + 1)))
  const dstStrides = strides(dst.shape)
  const srcStrides = strides(src.shape)
  for (let flat = 0; flat < s.length; flat++) {
    const idx = src.shape.map((d, i) => Math.floor(flat / (srcStrides[i] as number)) % d)
    idx[axis] = (idx[axis] as number) + (offsets[idx[batchAxis] as number] as number)
    o[idx.reduce((acc, v, i) => acc + v * (dstStrides[i] as number), 0)] = s[flat] as number
  }
  return out
}

/** The dtypes to run a primitive test on: float32, and int64 when it is under test. */
const dtypesOf = <T, In>(kit: Kit<T, In>): DType[] =>
  kit.dtypes.includes("int64") ? ["float32", "int64"] : ["float32"]

/**
 * Each primitive of `StateBackend` called directly, on leaves of every layout (see `cases`):
 * failures name the primitive and the leaf's path, shape, batch axis and init.
 */
export function definePrimitiveTests<T, In>(test: KitTest<T, In>): void {
  test("contract: allocate sets every row to the leaf's init, on every layout", async (kit) => {
    const start = kit.live()
    for (const dtype of dtypesOf(kit)) {
      for (const c of cases(dtype)) {
        const t = kit.backend.allocate(c.shape, dtype, c.leaf)
        const expected = referenceGather(
          new HostTensor(dtype, c.shape),
          c.leaf.batchAxis,
          Array.from({ length: BATCH }, () => null),
          initRow(c),
        )
        expectTensor(await kit.backend.toHost(t), expected, label("allocate", c))
        kit.backend.dispose(t)
      }
    }
    expectLive(kit.live(), start, "allocate and dispose of every layout")
  })

  test("contract: gather copies rows in any order, repeated and in runs, null rows at init, source unchanged", async (kit) => {
    const start = kit.live()
    const orders: (number | null)[][] = [
      [2, 3, 0, 1, 1, null, 3, null, 0],
      [3],
      [null],
      [1, 2, 3],
      [3, 2, 1, 0, 2, 1],
    ]
    for (const dtype of dtypesOf(kit)) {
      for (const c of cases(dtype)) {
        const host = valuesOf(c, 3)
        const src = kit.backend.fromHost(host, c.leaf)
        for (const rows of orders) {
          const what = label(`gather of rows [${rows.map(String).join(", ")}]`, c)
          const t = kit.backend.gather(src, rows, c.leaf)
          expect(t, `${what}: returned its source`).not.toBe(src)
          const expected = referenceGather(host, c.leaf.batchAxis, rows, initRow(c))
          expectTensor(await kit.backend.toHost(t), expected, what)
          kit.backend.dispose(t)
        }
        expectTensor(await kit.backend.toHost(src), host, label("gather (its source after)", c))
        kit.backend.dispose(src)
      }
    }
    expectLive(kit.live(), start, "gathers of every layout")
  })

  test("contract: scatter writes rows in any order in place, leaves other rows and its source unchanged", async (kit) => {
    const start = kit.live()
    const orders: number[][] = [[3, 0, 1], [2], [2, 0, 3, 1], [0, 1, 2, 3], [3, 2, 1, 0]]
    for (const dtype of dtypesOf(kit)) {
      for (const c of cases(dtype)) {
        const host = valuesOf(c, 5)
        const dst = kit.backend.fromHost(host, c.leaf)
        let expected = host
        for (const [k, rows] of orders.entries()) {
          for (const via of ["fromHost", "input"] as const) {
            const what = label(
              `scatter into rows [${rows.map(String).join(", ")}] (source from ${via})`,
              c,
            )
            const given = valuesOf(c, 100 * (k + 1) + (via === "input" ? 7 : 0), rows.length)
            const src =
              via === "fromHost" ? kit.backend.fromHost(given, c.leaf) : kit.input(given, c.leaf)
            kit.backend.scatter(dst, rows, src, c.leaf)
            expected = referenceScatter(expected, c.leaf.batchAxis, rows, given)
            expectTensor(await kit.backend.toHost(dst), expected, what)
            // Core frees the source after the call: it must still be alive and unchanged.
            expect(kit.backend.describe(src), `${what}: its source after the call`).toBeDefined()
            expectTensor(await kit.backend.toHost(src as T), given, `${what}: its source`)
            kit.backend.dispose(src)
          }
        }
        kit.backend.dispose(dst)
      }
    }
    expectLive(kit.live(), start, "scatters into every layout")
  })

  test("contract: fill sets the given rows to init and leaves the others", async (kit) => {
    const start = kit.live()
    const orders: number[][] = [[0, 1, 3], [2], [0, 1, 2, 3]]
    for (const dtype of dtypesOf(kit)) {
      for (const c of cases(dtype)) {
        for (const rows of orders) {
          const what = label(`fill of rows [${rows.map(String).join(", ")}]`, c)
          const host = valuesOf(c, 9)
          const t = kit.backend.fromHost(host, c.leaf)
          kit.backend.fill(t, rows, c.leaf)
          const from = Array.from({ length: BATCH }, (_, r) => (rows.includes(r) ? null : r))
          const expected = referenceGather(host, c.leaf.batchAxis, from, initRow(c))
          expectTensor(await kit.backend.toHost(t), expected, what)
          kit.backend.dispose(t)
        }
      }
    }
    expectLive(kit.live(), start, "fills of every layout")
  })

  test("contract: memory freed and reused holds nothing of its old values", async (kit) => {
    // A backend that recycles freed memory (a pool, ORT's GPU buffers) must not let old values
    // through: allocate starts at init, gather's null rows are init, row ops use the new layout.
    const start = kit.live()
    for (const dtype of dtypesOf(kit)) {
      for (const c of cases(dtype)) {
        for (let round = 0; round < 3; round++) {
          const old = [1, 2, 3].map((s) => kit.backend.fromHost(valuesOf(c, 50 + s), c.leaf))
          for (const t of old) kit.backend.dispose(t)
          const t = kit.backend.allocate(c.shape, dtype, c.leaf)
          const fresh = referenceGather(
            new HostTensor(dtype, c.shape),
            c.leaf.batchAxis,
            [null, null, null, null],
            initRow(c),
          )
          expectTensor(await kit.backend.toHost(t), fresh, label("allocate after a dispose", c))
          kit.backend.dispose(t)
        }
      }
    }
    // The same number of elements in another layout, freed then reused: a tensor gathered from
    // (so a backend may have cached something per buffer and layout), freed, then one of the
    // same size in another layout gathered from. Sizes are used by nothing else in this test, so
    // memory recycled by size comes back to the second tensor.
    const layouts: [number[], LeafContext, number[], LeafContext][] = [
      [
        [BATCH, 16],
        { path: "flat", batchAxis: 0, init: init.zeros },
        [16, BATCH, 1],
        { path: "deep", batchAxis: 1, init: init.constant(1) },
      ],
      [
        [2, BATCH, 5],
        { path: "split", batchAxis: 1, init: init.zeros },
        [BATCH, 10],
        { path: "wide", batchAxis: 0, init: init.constant(1) },
      ],
    ]
    for (const [shapeA, a, shapeB, b] of layouts) {
      for (let round = 0; round < 3; round++) {
        const n = sizeOf(shapeA)
        const x = kit.backend.fromHost(
          new HostTensor("float32", shapeA, valuesFor("float32", n, 1) as Float32Array),
          a,
        )
        kit.backend.dispose(kit.backend.gather(x, [3, 1], a))
        kit.backend.dispose(x)
        const second = new HostTensor("float32", shapeB, valuesFor("float32", n, 2) as Float32Array)
        const y = kit.backend.fromHost(second, b)
        const gy = kit.backend.gather(y, [3, null, 1], b)
        expectTensor(
          await kit.backend.toHost(gy),
          referenceGather(second, b.batchAxis, [3, null, 1], () => 1),
          `${label("gather of rows [3, null, 1]", { leaf: b, shape: shapeB, dtype: "float32" })} after gathering from and freeing a tensor of the same size, ${describeLeaf({ ...a, dtype: "float32", shape: shapeA })}`,
        )
        kit.backend.dispose(gy)
        kit.backend.dispose(y)
      }
    }
    expectLive(kit.live(), start, "dispose and reuse rounds")
  })

  test("contract: toHost takes its copy before it returns", async (kit) => {
    const start = kit.live()
    for (const c of cases("float32")) {
      const host = valuesOf(c, 13)
      const t = kit.backend.fromHost(host, c.leaf)
      const pending = kit.backend.toHost(t)
      kit.backend.fill(t, [0, 1, 2, 3], c.leaf)
      const u = kit.backend.toHost(t)
      kit.backend.dispose(t)
      // Memory just freed may be handed out again at once.
      const reuse = kit.backend.fromHost(valuesOf(c, 77), c.leaf)
      const settle = (p: Promise<HostTensor>, what: string) =>
        p.catch((e: unknown) => {
          throw new Error(
            `${what}: toHost's promise rejected once the tensor was changed or freed (take the copy before returning): ${e instanceof Error ? e.message : String(e)}`,
          )
        })
      const first = label("toHost, then fill of every row and dispose", c)
      expectTensor(await settle(pending, first), host, first)
      const filled = referenceGather(host, c.leaf.batchAxis, [null, null, null, null], initRow(c))
      const second = label("toHost after fill, then dispose", c)
      expectTensor(await settle(u, second), filled, second)
      kit.backend.dispose(reuse)
    }
    expectLive(kit.live(), start, "toHost of every layout")
  })

  test("contract: tensors with a 0-sized axis pass every primitive, at any batch size", async (kit) => {
    // A growing named dim (a KV cache's `seq`) starts at 0: such leaves are allocated, gathered
    // into other batch sizes, scattered, filled, copied and freed like any other, and memory freed
    // at one batch size may come back at another.
    const start = kit.live()
    const leaves: [LeafContext, (batch: number) => number[]][] = [
      [{ path: "cache", batchAxis: 0, init: init.constant(1) }, (b) => [b, 2, 0, 3]],
      [{ path: "empty", batchAxis: 1, init: init.zeros }, (b) => [2, b, 0]],
    ]
    for (const [leaf, shapeAt] of leaves) {
      for (const batch of [BATCH, 2, 6, 1]) {
        const shape = shapeAt(batch)
        const what = (op: string) => label(op, { leaf, shape, dtype: "float32" })
        const empty = (b: number) => new HostTensor("float32", shapeAt(b))
        const t = kit.backend.allocate(shape, "float32", leaf)
        expect(kit.backend.describe(t)?.shape, what("describe after allocate")).toEqual(shape)
        expectTensor(await kit.backend.toHost(t), empty(batch), what("allocate"))
        const rows = [batch - 1, null, 0, 0, batch - 1]
        const g = kit.backend.gather(t, rows, leaf)
        expectTensor(
          await kit.backend.toHost(g),
          empty(5),
          what(`gather of rows [${rows.map(String).join(", ")}]`),
        )
        const src = kit.input(empty(1), leaf)
        kit.backend.scatter(t, [batch - 1], src, leaf)
        kit.backend.dispose(src)
        kit.backend.fill(t, [0], leaf)
        expectTensor(
          await kit.backend.toHost(t),
          empty(batch),
          what("scatter into the last row, then fill of row 0"),
        )
        const copy = kit.backend.fromHost(empty(batch), leaf)
        expectTensor(await kit.backend.toHost(copy), empty(batch), what("fromHost"))
        for (const x of [t, g, copy]) kit.backend.dispose(x)
      }
    }
    expectLive(kit.live(), start, "the primitives on leaves with a 0-sized axis")
  })

  test("contract: int64 values beyond 2**53 pass every primitive exactly", async (kit) => {
    if (!kit.dtypes.includes("int64")) kit.skip("int64 is not declared")
    const c: Case = {
      leaf: { path: "int64", batchAxis: 1, init: init.constant((1n << 62n) + 1n) },
      shape: [2, BATCH, 3],
      dtype: "int64",
    }
    const big = (k: number) =>
      BigInt64Array.from(
        { length: 2 * BATCH * 3 },
        (_, i) => (i % 2 === 0 ? 1n : -1n) * ((1n << 60n) + BigInt(i * 2 + 1 + k)),
      )
    const host = new HostTensor("int64", c.shape, big(0))
    const t = kit.backend.fromHost(host, c.leaf)
    expectTensor(await kit.backend.toHost(t), host, label("fromHost then toHost", c))
    const g = kit.backend.gather(t, [1, null, 3], c.leaf)
    expectTensor(
      await kit.backend.toHost(g),
      referenceGather(host, 1, [1, null, 3], () => (1n << 62n) + 1n),
      label("gather of rows [1, null, 3]", c),
    )
    const src = new HostTensor("int64", [2, 3, 3], big(1000).subarray(0, 18))
    const s = kit.input(src, c.leaf)
    kit.backend.scatter(g, [2, 0, 1], s, c.leaf)
    kit.backend.dispose(s)
    expectTensor(
      await kit.backend.toHost(g),
      referenceScatter(new HostTensor("int64", [2, 3, 3]), 1, [2, 0, 1], src),
      label("scatter into rows [2, 0, 1]", c),
    )
    kit.backend.fill(t, [0, 2], c.leaf)
    expect(
      elements(await kit.backend.toHost(t)).slice(0, 3),
      label("fill of rows [0, 2]", c),
    ).toEqual(new Array(3).fill((1n << 62n) + 1n))
    for (const x of [t, g]) kit.backend.dispose(x)
  })
}

/**
 * `writeAt`, when the backend has it: blocks along a non-batch axis at per-row offsets, for the
 * batch axis before and after the written axis, block sizes 1 and 2, on float32 (and int64).
 */
export function defineWriteAtTests<T, In>(test: KitTest<T, In>): void {
  test("contract: writeAt writes a block at each row's offset along a non-batch axis, nothing else", async (kit) => {
    const writeAt = kit.backend.writeAt?.bind(kit.backend)
    if (writeAt === undefined) kit.skip("the backend has no writeAt (no fixed-capacity caches)")
    const start = kit.live()
    const layouts: { shape: number[]; batchAxis: number; axis: number; k: number }[] = [
      { shape: [BATCH, 2, 6, 3], batchAxis: 0, axis: 2, k: 1 }, // a KV cache, one new position
      { shape: [BATCH, 2, 6, 3], batchAxis: 0, axis: 2, k: 2 },
      { shape: [BATCH, 5], batchAxis: 0, axis: 1, k: 3 },
      { shape: [6, BATCH, 3], batchAxis: 1, axis: 0, k: 2 }, // the batch after the written axis
    ]
    for (const dtype of dtypesOf(kit)) {
      for (const { shape, batchAxis, axis, k } of layouts) {
        const size = shape[axis] as number
        const offsets = Array.from({ length: BATCH }, (_, r) => (r * 2 + 1) % (size - k + 1))
        const leaf: LeafContext = { path: "cache", batchAxis, init: init.zeros }
        const what = `writeAt of ${k} along axis ${axis} at offsets [${offsets.join(", ")}] on ${describeLeaf({ ...leaf, dtype, shape })}`
        const dstHost = new HostTensor(dtype, shape, valuesFor(dtype, sizeOf(shape), 5) as never)
        const srcShape = shape.map((d, i) => (i === axis ? k : d))
        const srcHost = new HostTensor(
          dtype,
          srcShape,
          valuesFor(dtype, sizeOf(srcShape), 9) as never,
        )
        const dst = kit.backend.fromHost(dstHost, leaf)
        const src = kit.backend.fromHost(srcHost, leaf)
        ;(writeAt as NonNullable<typeof writeAt>)(dst, axis, offsets, src, leaf)
        const expected = referenceWrite(dstHost, axis, batchAxis, offsets, srcHost)
        expectTensor(await kit.backend.toHost(dst), expected, what)
        expectTensor(await kit.backend.toHost(src), srcHost, `${what}: its source after the call`)
        kit.backend.dispose(src)
        kit.backend.dispose(dst)
      }
    }
    expectLive(kit.live(), start, "writeAt on every layout")
  })
}

/**
 * `reorder`, when the backend has it: rows moved within a tensor equal `gather` of the same rows
 * (the reference), for orders with cycles, repeats, dropped rows and rows left in place, on rows
 * of a few elements and of many, the batch axis first, in the middle and last.
 */
export function defineReorderTests<T, In>(test: KitTest<T, In>): void {
  test("contract: reorder moves rows within the tensor as gather would, allocating no tensor", async (kit) => {
    const reorder = kit.backend.reorder?.bind(kit.backend)
    if (reorder === undefined) kit.skip("the backend has no reorder (select gathers)")
    const start = kit.live()
    const layouts: { shape: number[]; batchAxis: number }[] = [
      { shape: [BATCH, 2, 3], batchAxis: 0 }, // rows of 6 elements
      { shape: [BATCH, 3, 10], batchAxis: 0 }, // rows of 30 elements
      { shape: [2, BATCH, 9], batchAxis: 1 }, // rows in two chunks
      { shape: [3, BATCH], batchAxis: 1 }, // chunks of one element
      { shape: [BATCH, 2, 0, 3], batchAxis: 0 }, // an empty KV cache: rows of no element
    ]
    const orders = [
      [0, 1, 2, 3], // nothing moves
      [3, 2, 1, 0], // two cycles of two
      [1, 2, 3, 0], // one cycle of four
      [0, 0, 1, 2], // a beam step: the best forks, the worst is dropped
      [2, 2, 3, 0], // a chain into a cycle
      [1, 1, 1, 1], // one row everywhere
      [3, 0, 0, 2],
    ]
    for (const dtype of dtypesOf(kit)) {
      for (const { shape, batchAxis } of layouts) {
        for (const rows of orders) {
          const leaf: LeafContext = { path: "cache", batchAxis, init: init.zeros }
          const what = `reorder of rows [${rows.join(", ")}] on ${describeLeaf({ ...leaf, dtype, shape })}`
          const host = new HostTensor(dtype, shape, valuesFor(dtype, sizeOf(shape), 4) as never)
          const t = kit.backend.fromHost(host, leaf)
          const before = kit.live()
          ;(reorder as NonNullable<typeof reorder>)(t, rows, leaf)
          expect(kit.live(), `${what}: live tensors`).toBe(before)
          const info = kit.backend.describe(t)
          expect({ shape: info?.shape, dtype: info?.dtype }, what).toEqual({ shape, dtype })
          const expected = referenceGather(host, batchAxis, rows, () => 0)
          expectTensor(await kit.backend.toHost(t), expected, what)
          kit.backend.dispose(t)
        }
      }
    }
    expectLive(kit.live(), start, "reorder on every layout")
  })
}

/**
 * `view`, when the backend has it: a view shows its rows, writes through it reach the source,
 * freeing it frees nothing of the source; rows that are not one run of memory are refused
 * (`undefined`) or shown right.
 */
export function defineViewTests<T, In>(test: KitTest<T, In>): void {
  test("contract: view shares rows of its source; writes go through; freeing it keeps the source", async (kit) => {
    const view = kit.backend.view?.bind(kit.backend)
    if (view === undefined) kit.skip("the backend has no view (stores copy rows out and back)")
    const start = kit.live()
    const layouts: { shape: number[]; batchAxis: number }[] = [
      { shape: [BATCH, 2, 3], batchAxis: 0 },
      { shape: [1, BATCH, 3], batchAxis: 1 }, // one run of memory: the dim before is 1
      { shape: [2, BATCH, 3], batchAxis: 1 }, // rows in two runs: undefined, or shown right
    ]
    // From row 1, and from row 0 (a device tensor may share only from its buffer's start).
    for (const dtype of dtypesOf(kit)) {
      for (const { shape, batchAxis } of layouts)
        for (const first of [1, 0]) {
          const leaf: LeafContext = { path: "state", batchAxis, init: init.zeros }
          const what = `view of rows ${first}..${first + 1} of ${describeLeaf({ ...leaf, dtype, shape })}`
          const host = new HostTensor(dtype, shape, valuesFor(dtype, sizeOf(shape), 3) as never)
          const src = kit.backend.fromHost(host, leaf)
          const v = (view as NonNullable<typeof view>)(src, first, 2, leaf)
          if (v === undefined) {
            kit.backend.dispose(src)
            continue
          }
          const rows = referenceGather(host, batchAxis, [first, first + 1], () => 0)
          expect(kit.backend.describe(v), what).toEqual({ shape: rows.shape, dtype })
          expectTensor(await kit.backend.toHost(v), rows, what)
          // A write into row 0 of the view is row `first` of the source.
          const rowShape = shape.map((d, a) => (a === batchAxis ? 1 : d))
          const row = new HostTensor(
            dtype,
            rowShape,
            valuesFor(dtype, sizeOf(rowShape), 11) as never,
          )
          const rowTensor = kit.backend.fromHost(row, leaf)
          kit.backend.scatter(v, [0], rowTensor, leaf)
          kit.backend.dispose(rowTensor)
          kit.backend.dispose(v)
          const expected = referenceScatter(host, batchAxis, [first], row)
          expectTensor(
            await kit.backend.toHost(src),
            expected,
            `${what}: its source after a write and a free`,
          )
          kit.backend.dispose(src)
        }
    }
    expectLive(kit.live(), start, "view on every layout")
  })
}
