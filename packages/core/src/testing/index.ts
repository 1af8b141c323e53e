import { describe, expect, it } from "vitest"
import type { StateBackend } from "../backend.js"
import type { StateError } from "../errors.js"
import {
  type DType,
  type HostData,
  HostTensor,
  float32ToFloat16Bits,
  sizeOf,
} from "../host-tensor.js"
import { decodeSnapshot } from "../snapshot.js"
import { type StateSaver, createStateSaver } from "../state-saver.js"
import { type Init, type LeafSpec, type StateSpec, init } from "../state-spec.js"
import { type StateTree, flatten, formatPath } from "../state-tree.js"
import { defineStoreConformance } from "./store.js"

export { referenceGather, valuesFor, type ConformanceOptions }
export { mulberry32 } from "./random.js"

/**
 * Options of `describeBackendConformance`.
 *
 * @category testing
 * @since 0.1.0
 */
interface ConformanceOptions<T> {
  /** Shown as the suite name: `StateBackend conformance: <name>`. */
  readonly name: string
  /** Makes the backend under test; called once per test (may be async, e.g. to init a runtime). */
  readonly backend: () => StateBackend<T> | Promise<StateBackend<T>>
  /**
   * Live tensors the backend owns right now (tfjs `tf.memory().numTensors`, live ORT tensors,
   * `hostBackend().liveTensors()`). Read before and after loops: it must not grow.
   */
  readonly liveTensors: (backend: StateBackend<T>) => number
  /** Restrict or extend what is tested; defaults to the backend's own declared capabilities. */
  readonly capabilities?: { readonly dtypes?: readonly DType[] }
  /** Names of tests to skip, exactly as printed (they are stable). Each skip is reported. */
  readonly skip?: readonly string[]
  /** Iterations of the leak loops. Default 500. */
  readonly iterations?: number
  /** Called after each test with the backend it used. */
  readonly teardown?: (backend: StateBackend<T>) => void | Promise<void>
}

const B = 4

/** Deterministic distinct values of `dtype` for `n` elements, offset by `seed`. */
function valuesFor(dtype: DType, n: number, seed = 0): HostData {
  switch (dtype) {
    case "float32":
      return Float32Array.from({ length: n }, (_, i) => (i + seed) * 0.25 - 3)
    case "float16":
      return Uint16Array.from({ length: n }, (_, i) =>
        float32ToFloat16Bits(((i + seed) % 200) - 100),
      )
    case "int32":
      return Int32Array.from({ length: n }, (_, i) => (i + seed) * 7 - 50)
    case "int64":
      return BigInt64Array.from({ length: n }, (_, i) => BigInt(i + seed) * 3_000_000_000n - 7n)
    case "uint8":
      return Uint8Array.from({ length: n }, (_, i) => (i + seed) % 251)
    case "bool":
      return Uint8Array.from({ length: n }, (_, i) => (i + seed) % 2)
  }
}

const one = (dtype: DType): number | bigint => (dtype === "int64" ? 1n : 1)

/**
 * The spec the kit runs for one dtype: a record with a `__proto__` key (as data), a batch axis
 * at 0, 1 and 2, and each init kind.
 */
function kitSpec(dtype: DType): StateSpec {
  const rowInit = new HostTensor(dtype, [2, 2], valuesFor(dtype, 4, 11) as HostTensor["data"])
  const proto: Record<string, LeafSpec> = {}
  Object.defineProperty(proto, "__proto__", {
    value: { shape: ["batch"], dtype } satisfies LeafSpec,
    enumerable: true,
    writable: true,
    configurable: true,
  })
  return {
    a: { shape: ["batch", 3], dtype },
    b: [
      { shape: [2, "batch", 2], dtype, init: init.constant(one(dtype)) },
      { shape: [2, 2, "batch"], dtype, init: init.tensor(rowInit) },
    ],
    odd: proto,
  }
}

/** Element `(o, r, i)` of rows along `axis`: the plain index arithmetic, no shortcuts. */
function referenceGather(
  src: HostTensor,
  axis: number,
  rows: readonly (number | null)[],
  initRow: (outer: number, inner: number) => number | bigint,
): HostTensor {
  const shape = [...src.shape]
  const n = shape[axis] as number
  shape[axis] = rows.length
  const outer = sizeOf(src.shape.slice(0, axis))
  const inner = sizeOf(src.shape.slice(axis + 1))
  const out = new HostTensor(src.dtype, shape)
  const o = out.data as unknown as (number | bigint)[]
  const s = src.data as unknown as (number | bigint)[]
  for (let a = 0; a < outer; a++) {
    for (let r = 0; r < rows.length; r++) {
      for (let i = 0; i < inner; i++) {
        const from = rows[r]
        o[(a * rows.length + r) * inner + i] =
          from === null || from === undefined
            ? initRow(a, i)
            : (s[(a * n + from) * inner + i] as number)
      }
    }
  }
  return out
}

function initValue(
  leaf: LeafSpec,
  dtype: DType,
): (outer: number, inner: number) => number | bigint {
  const i: Init = leaf.init ?? init.zeros
  if (i.kind === "zeros") return () => (dtype === "int64" ? 0n : 0)
  if (i.kind === "constant") {
    const v = i.value
    return () =>
      dtype === "int64"
        ? BigInt(v)
        : dtype === "float16"
          ? float32ToFloat16Bits(Number(v))
          : Number(v)
  }
  const data = i.value.data as unknown as (number | bigint)[]
  const batchAxis = leaf.shape.indexOf("batch")
  const inner = sizeOf(i.value.shape.slice(batchAxis) as number[])
  return (o, k) => data[o * inner + k] as number | bigint
}

/** Reads a saver's state to host tensors keyed by path, through `snapshot`. */
async function read<T>(saver: StateSaver<T>): Promise<Map<string, HostTensor>> {
  const bytes = await saver.snapshot()
  if (bytes._tag === "Left") throw bytes.left
  const snap = decodeSnapshot(bytes.right)
  if (snap._tag === "Left") throw snap.left
  return new Map(snap.right.tensors)
}

async function snapshotBytes<T>(saver: StateSaver<T>): Promise<Uint8Array> {
  const bytes = await saver.snapshot()
  if (bytes._tag === "Left") throw bytes.left
  return bytes.right
}

/** Host tensors of distinct values for every leaf at `batchSize` rows. */
function distinctState(spec: StateSpec, batchSize: number, seed: number): Map<string, HostTensor> {
  const { leaves, paths } = flatten<LeafSpec>(
    spec,
    (x) => typeof x === "object" && x !== null && "dtype" in x,
  )
  const out = new Map<string, HostTensor>()
  leaves.forEach((leaf, i) => {
    const shape = leaf.shape.map((d) => (d === "batch" ? batchSize : typeof d === "number" ? d : 0))
    const data = valuesFor(leaf.dtype, sizeOf(shape), seed + i * 1000)
    out.set(
      formatPath(paths[i] ?? []),
      new HostTensor(leaf.dtype, shape, data as HostTensor["data"]),
    )
  })
  return out
}

function expectTensor(actual: HostTensor | undefined, expected: HostTensor, path: string): void {
  expect(actual, `leaf ${path}`).toBeDefined()
  expect(actual?.dtype, `dtype of ${path}`).toBe(expected.dtype)
  expect(actual?.shape, `shape of ${path}`).toEqual(expected.shape)
  expect(elements(actual), `values of ${path}`).toEqual(elements(expected))
}

/** Elements of a host tensor as a plain array (bigints stay bigints). */
function elements(t: HostTensor | undefined): (number | bigint)[] {
  return t === undefined ? [] : Array.from(t.data as ArrayLike<number | bigint>)
}

function expectLeft<A>(
  result: { _tag: "Left"; left: StateError } | { _tag: "Right"; right: A },
  tag: string,
): StateError {
  expect(result._tag).toBe("Left")
  if (result._tag !== "Left") throw new Error("unreachable")
  expect(result.left._tag).toBe(tag)
  expect(result.left).toBeInstanceOf(Error)
  return result.left
}

/**
 * Registers the backend conformance suite with vitest: every `StateSaver` and `StateStore`
 * operation on every declared dtype, every error path (state unchanged, nothing leaked),
 * ownership over long loops, and the model-free invariants (reset row, select, snapshot
 * round trip bit-exact). Test names are stable: pass them in `skip` to skip one.
 *
 * @example
 * describeBackendConformance({
 *   name: "host",
 *   backend: () => hostBackend(),
 *   liveTensors: (b) => (b as HostBackend).liveTensors(),
 * })
 * @category testing
 * @since 0.1.0
 */
export function describeBackendConformance<T>(options: ConformanceOptions<T>): void {
  const skip = new Set(options.skip ?? [])
  const iterations = options.iterations ?? 500
  describe(`StateBackend conformance: ${options.name}`, () => {
    const test = (name: string, body: (backend: StateBackend<T>) => Promise<void>): void => {
      if (skip.has(name)) {
        it.skip(`${name} (skipped by ${options.name})`, () => undefined)
        return
      }
      it(name, async () => {
        const backend = await options.backend()
        try {
          await body(backend)
        } finally {
          await options.teardown?.(backend)
        }
      })
    }

    /** Builds a saver on the kit spec for `dtype`, seeded with distinct values. */
    const seeded = async (backend: StateBackend<T>, dtype: DType, batchSize = B) => {
      const spec = kitSpec(dtype)
      const saver = orThrowKit(createStateSaver({ spec, backend, batchSize }))
      const values = distinctState(spec, batchSize, 1)
      saveHost(saver, values)
      return { spec, saver, values }
    }

    /** Saves host tensors (by path) into the saver through the backend's `fromHost`. */
    const saveHost = (saver: StateSaver<T>, values: Map<string, HostTensor>): void => {
      const tensors = saver.spec.leaves.map((leaf) =>
        saver.backend.fromHost(values.get(leaf.pathString) as HostTensor, {
          path: leaf.pathString,
          batchAxis: leaf.batchAxis,
          init: leaf.init,
        }),
      )
      orThrowKit(saver.save(unflattenLike(saver, tensors)))
    }

    const dtypes = options.capabilities?.dtypes
    const declared = async (): Promise<readonly DType[]> =>
      dtypes ?? (await options.backend()).capabilities.dtypes

    it("declares capabilities", async () => {
      const backend = await options.backend()
      expect(backend.name).toBeTypeOf("string")
      expect(backend.capabilities.dtypes.length).toBeGreaterThan(0)
      expect(backend.capabilities.dtypes).toContain("float32")
      await options.teardown?.(backend)
    })

    for (const dtype of ["float32", "float16", "int32", "int64", "uint8", "bool"] as const) {
      describe(dtype, () => {
        const run = (name: string, body: (backend: StateBackend<T>) => Promise<void>) =>
          test(`${dtype}: ${name}`, async (backend) => {
            if (!(await declared()).includes(dtype)) {
              const r = createStateSaver({ spec: kitSpec(dtype), backend, batchSize: B })
              expectLeft(r, "DTypeMismatchError")
              return
            }
            await body(backend)
          })

        run("allocates every leaf at its init", async (backend) => {
          const spec = kitSpec(dtype)
          const saver = orThrowKit(createStateSaver({ spec, backend, batchSize: B }))
          const state = await read(saver)
          for (const leaf of saver.spec.leaves) {
            const shape = leaf.shape.map((d, axis) => (axis === leaf.batchAxis ? B : (d as number)))
            const zero = new HostTensor(dtype, shape)
            const expected = referenceGather(
              zero,
              leaf.batchAxis,
              Array.from({ length: B }, () => null),
              initValue(leaf.spec, dtype),
            )
            expectTensor(state.get(leaf.pathString), expected, leaf.pathString)
          }
          saver.dispose()
        })

        run("save keeps the given tensors and state() returns them", async (backend) => {
          const { saver, values } = await seeded(backend, dtype)
          const state = await read(saver)
          for (const [path, t] of values) expectTensor(state.get(path), t, path)
          const leaves = flatten<T>(saver.state()).leaves
          expect(leaves).toHaveLength(values.size)
          for (const leaf of leaves) expect(backend.describe(leaf)?.dtype).toBe(dtype)
          saver.dispose()
        })

        run("reset(rows) sets only those rows to init, by index and by mask", async (backend) => {
          const { saver, values } = await seeded(backend, dtype)
          orThrowKit(saver.reset([2, 0]))
          orThrowKit(saver.reset([false, false, false, true]))
          const state = await read(saver)
          for (const leaf of saver.spec.leaves) {
            const before = values.get(leaf.pathString) as HostTensor
            const expected = referenceGather(
              before,
              leaf.batchAxis,
              [null, 1, null, null],
              initValue(leaf.spec, dtype),
            )
            expectTensor(state.get(leaf.pathString), expected, leaf.pathString)
          }
          saver.dispose()
        })

        run("reset() sets every row to init", async (backend) => {
          const { saver } = await seeded(backend, dtype)
          orThrowKit(saver.reset())
          const state = await read(saver)
          for (const leaf of saver.spec.leaves) {
            const t = state.get(leaf.pathString) as HostTensor
            const expected = referenceGather(
              t,
              leaf.batchAxis,
              [null, null, null, null],
              initValue(leaf.spec, dtype),
            )
            expectTensor(t, expected, leaf.pathString)
          }
          saver.dispose()
        })

        run(
          "select drops, reorders and duplicates rows; null is a fresh init row",
          async (backend) => {
            const { saver, values } = await seeded(backend, dtype)
            const rows = [3, 1, 1, null, 0]
            orThrowKit(saver.select(rows))
            expect(saver.batchSize).toBe(5)
            const state = await read(saver)
            for (const leaf of saver.spec.leaves) {
              const before = values.get(leaf.pathString) as HostTensor
              const expected = referenceGather(
                before,
                leaf.batchAxis,
                rows,
                initValue(leaf.spec, dtype),
              )
              expectTensor(state.get(leaf.pathString), expected, leaf.pathString)
            }
            orThrowKit(saver.select([4]))
            expect(saver.batchSize).toBe(1)
            const shrunk = await read(saver)
            for (const leaf of saver.spec.leaves) {
              const before = values.get(leaf.pathString) as HostTensor
              const expected = referenceGather(before, leaf.batchAxis, [0], () => 0)
              expectTensor(shrunk.get(leaf.pathString), expected, leaf.pathString)
            }
            saver.dispose()
          },
        )

        run("snapshot then restore round-trips bit-exactly", async (backend) => {
          const { spec, saver, values } = await seeded(backend, dtype)
          const bytes = await snapshotBytes(saver)
          const other = orThrowKit(createStateSaver({ spec, backend, batchSize: B }))
          orThrowKit(other.restore(bytes))
          const state = await read(other)
          for (const [path, t] of values) expectTensor(state.get(path), t, path)
          expect(await snapshotBytes(other)).toEqual(bytes)
          saver.dispose()
          other.dispose()
        })
      })
    }

    describe("errors leave the state unchanged and leak nothing", () => {
      /** Runs `act` on a seeded float32 saver and checks tag, path, state bytes and live count. */
      const unchanged = (
        name: string,
        tag: string,
        path: string,
        act: (
          saver: StateSaver<T>,
          backend: StateBackend<T>,
        ) => Promise<{ _tag: string }> | { _tag: string },
      ) =>
        test(name, async (backend) => {
          const { saver } = await seeded(backend, "float32")
          const before = await snapshotBytes(saver)
          const live = options.liveTensors(backend)
          const result = (await act(saver, backend)) as { _tag: "Left"; left: StateError }
          const err = expectLeft(result, tag)
          expect(err.path).toBe(path)
          expect(err.message).toContain(path === "" ? "" : path)
          expect(await snapshotBytes(saver)).toEqual(before)
          expect(saver.batchSize).toBe(B)
          expect(options.liveTensors(backend)).toBe(live)
          saver.dispose()
        })

      /** Fresh float32 tensors for every leaf, with one leaf replaced by `patch`. */
      const tensorsWith = (
        saver: StateSaver<T>,
        patch: (path: string) => HostTensor | undefined,
      ): { tree: StateTree<T>; made: T[] } => {
        const values = distinctState(saver.spec.spec, B, 7)
        const made = saver.spec.leaves.map((leaf) =>
          saver.backend.fromHost(
            patch(leaf.pathString) ?? (values.get(leaf.pathString) as HostTensor),
            {
              path: leaf.pathString,
              batchAxis: leaf.batchAxis,
              init: leaf.init,
            },
          ),
        )
        return { tree: unflattenLike(saver, made), made }
      }
      /** Saves fresh tensors with one leaf patched, or the tree reshaped; frees them after. */
      const rejectedSave = (
        saver: StateSaver<T>,
        patch: (path: string) => HostTensor | undefined,
        reshape: (tree: Record<string, unknown>) => unknown = (tree) => tree,
      ) => {
        const { tree, made } = tensorsWith(saver, patch)
        const r = saver.save(reshape(tree as Record<string, unknown>) as StateTree<T>)
        for (const t of made) saver.backend.dispose(t)
        return r
      }

      unchanged(
        "save rejects a missing leaf (StructureMismatchError)",
        "StructureMismatchError",
        "b",
        (saver) =>
          rejectedSave(
            saver,
            () => undefined,
            (tree) => ({ ...tree, b: [(tree["b"] as T[])[0]] }),
          ),
      )
      unchanged(
        "save rejects a value that is not a live tensor",
        "StructureMismatchError",
        "a",
        (saver) =>
          rejectedSave(
            saver,
            () => undefined,
            (tree) => ({ ...tree, a: "not a tensor" }),
          ),
      )
      unchanged(
        "save rejects a wrong dtype (DTypeMismatchError)",
        "DTypeMismatchError",
        "b[1]",
        (saver) =>
          rejectedSave(saver, (p) =>
            p === "b[1]" ? new HostTensor("int32", [2, 2, B]) : undefined,
          ),
      )
      unchanged(
        "save rejects a wrong batch size (BatchSizeMismatchError)",
        "BatchSizeMismatchError",
        "b[0]",
        (saver) =>
          rejectedSave(saver, (p) =>
            p === "b[0]" ? new HostTensor("float32", [2, B + 1, 2]) : undefined,
          ),
      )
      unchanged(
        "save rejects a wrong fixed dim (ShapeMismatchError)",
        "ShapeMismatchError",
        "a",
        (saver) =>
          rejectedSave(saver, (p) => (p === "a" ? new HostTensor("float32", [B, 4]) : undefined)),
      )
      unchanged(
        "save rejects a wrong rank (ShapeMismatchError)",
        "ShapeMismatchError",
        "odd.__proto__",
        (saver) =>
          rejectedSave(saver, (p) =>
            p === "odd.__proto__" ? new HostTensor("float32", [B, 1]) : undefined,
          ),
      )
      unchanged(
        "save rejects one tensor given at two leaves (AliasedLeafError)",
        "AliasedLeafError",
        "b[0]",
        (saver) =>
          rejectedSave(
            saver,
            () => undefined,
            (tree) => ({ ...tree, b: [tree["a"], (tree["b"] as T[])[1]] }),
          ),
      )
      unchanged("reset rejects an out-of-range row (RowIndexError)", "RowIndexError", "", (saver) =>
        saver.reset([0, B]),
      )
      unchanged(
        "reset rejects a mask of the wrong length (RowIndexError)",
        "RowIndexError",
        "",
        (saver) => saver.reset([true, false]),
      )
      unchanged(
        "select rejects a negative or fractional row (RowIndexError)",
        "RowIndexError",
        "",
        (saver) => saver.select([0, 1.5]),
      )
      unchanged("select rejects an empty selection (RowIndexError)", "RowIndexError", "", (saver) =>
        saver.select([]),
      )
      unchanged(
        "restore rejects a snapshot of another batch size",
        "BatchSizeMismatchError",
        "a",
        async (saver) => {
          const other = orThrowKit(
            createStateSaver({ spec: saver.spec.spec, backend: saver.backend, batchSize: B + 1 }),
          )
          const bytes = await snapshotBytes(other)
          other.dispose()
          return saver.restore(bytes)
        },
      )
      unchanged(
        "restore rejects truncated bytes (SnapshotFormatError)",
        "SnapshotFormatError",
        "odd.__proto__",
        async (saver) => {
          const bytes = await snapshotBytes(saver)
          return saver.restore(bytes.subarray(0, bytes.length - 3))
        },
      )
    })

    test("a backend failure mid-select frees the rows already gathered", async (backend) => {
      const spec = kitSpec("float32")
      const failing = failingBackend(backend, "gather", "b[1]")
      const saver = orThrowKit(createStateSaver({ spec, backend: failing, batchSize: B }))
      const live = options.liveTensors(backend)
      const before = await snapshotBytes(saver)
      const err = expectLeft(saver.select([1, 0]), "BackendError")
      expect(err.path).toBe("b[1]")
      expect(err.cause).toBeInstanceOf(Error)
      expect(options.liveTensors(backend)).toBe(live)
      expect(await snapshotBytes(saver)).toEqual(before)
      saver.dispose()
    })

    test("save of the saver's own state is a no-op, a swapped save copies", async (backend) => {
      const { saver, values } = await seeded(backend, "float32")
      const live = options.liveTensors(backend)
      orThrowKit(saver.save(saver.state()))
      expect(options.liveTensors(backend)).toBe(live)
      const s = saver.state() as { a: T; b: T[]; odd: unknown }
      // b[0] is [2, batch, 2] and a is [batch, 3]: swapping two leaves of one shape needs a copy.
      const spec2: StateSpec = [
        { shape: ["batch", 3], dtype: "float32" },
        { shape: ["batch", 3], dtype: "float32" },
      ]
      const pair = orThrowKit(createStateSaver({ spec: spec2, backend, batchSize: B }))
      const [x, y] = [
        values.get("a") as HostTensor,
        distinctState(spec2, B, 99).get("[1]") as HostTensor,
      ]
      orThrowKit(
        pair.save([
          backend.fromHost(x, { path: "[0]", batchAxis: 0, init: init.zeros }),
          backend.fromHost(y, { path: "[1]", batchAxis: 0, init: init.zeros }),
        ]),
      )
      const [p0, p1] = pair.state() as T[]
      orThrowKit(pair.save([p1 as T, p0 as T]))
      const swapped = await read(pair)
      expectTensor(swapped.get("[0]"), y, "[0]")
      expectTensor(swapped.get("[1]"), x, "[1]")
      expect(s.a).toBeDefined()
      pair.dispose()
      saver.dispose()
    })

    test("dispose frees every tensor; later calls fail with DisposedError", async (backend) => {
      const live = options.liveTensors(backend)
      const { saver } = await seeded(backend, "float32")
      expect(options.liveTensors(backend)).toBeGreaterThan(live)
      saver.dispose()
      saver.dispose()
      expect(options.liveTensors(backend)).toBe(live)
      expect(saver.disposed).toBe(true)
      expect(() => saver.state()).toThrowError(expect.objectContaining({ _tag: "DisposedError" }))
      expectLeft(saver.reset(), "DisposedError")
      expectLeft(saver.select([0]), "DisposedError")
      expectLeft(await saver.snapshot(), "DisposedError")
    })

    test("named dims grow with save and reset() brings them back", async (backend) => {
      const spec: StateSpec = {
        key: { shape: ["batch", 2, "seq", 3], dtype: "float32" },
        value: { shape: ["batch", 2, "seq", 3], dtype: "float32" },
      }
      const saver = orThrowKit(createStateSaver({ spec, backend, batchSize: 2 }))
      expect(saver.dims()).toEqual({ seq: 0 })
      const grown = (seq: number, seed: number): T =>
        backend.fromHost(
          new HostTensor(
            "float32",
            [2, 2, seq, 3],
            valuesFor("float32", 12 * seq, seed) as Float32Array,
          ),
          { path: "", batchAxis: 0, init: init.zeros },
        )
      orThrowKit(saver.save({ key: grown(5, 1), value: grown(5, 2) }))
      expect(saver.dims()).toEqual({ seq: 5 })
      const k = grown(6, 3)
      const v = grown(5, 4)
      const err = expectLeft(saver.save({ key: k, value: v }), "ShapeMismatchError")
      expect(err.path).toBe("value")
      backend.dispose(k)
      backend.dispose(v)
      orThrowKit(saver.select([1, null]))
      const state = await read(saver)
      expect(state.get("key")?.shape).toEqual([2, 2, 5, 3])
      // Row 1 of the original key (values seeded from 1) moved to row 0; row 1 is a fresh zero row.
      const original = Array.from(valuesFor("float32", 60, 1) as Float32Array)
      expect(elements(state.get("key")).slice(0, 30)).toEqual(original.slice(30))
      expect(elements(state.get("key")).slice(30)).toEqual(new Array(30).fill(0))
      orThrowKit(saver.reset())
      expect(saver.dims()).toEqual({ seq: 0 })
      saver.dispose()
    })

    test("reset(rows) then a step equals stepping a fresh row; other rows untouched", async (backend) => {
      // A model-free step: every element x becomes 0.5 * x + 1, applied through the host.
      const { saver } = await seeded(backend, "float32")
      const step = async () => {
        const state = await read(saver)
        const next = new Map<string, HostTensor>()
        for (const [p, t] of state) {
          next.set(
            p,
            new HostTensor(
              "float32",
              t.shape,
              (t.data as Float32Array).map((x) => 0.5 * x + 1),
            ),
          )
        }
        saveHost(saver, next)
      }
      const fresh = orThrowKit(createStateSaver({ spec: saver.spec.spec, backend, batchSize: B }))
      const before = await read(saver)
      orThrowKit(saver.reset([1]))
      await step()
      const after = await read(saver)
      const freshState = await read(fresh)
      for (const leaf of saver.spec.leaves) {
        const a = after.get(leaf.pathString) as HostTensor
        const f = freshState.get(leaf.pathString) as HostTensor
        const b0 = before.get(leaf.pathString) as HostTensor
        const stepped = (t: HostTensor) => (t.data as Float32Array).map((x) => 0.5 * x + 1)
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

    defineStoreConformance(options.liveTensors, iterations, test)

    test("no live tensor growth over long save / reset / select / restore loops", async (backend) => {
      const { saver, spec } = await seeded(backend, "float32")
      const bytes = await snapshotBytes(saver)
      const values = distinctState(spec, B, 5)
      const start = options.liveTensors(backend)
      for (let i = 0; i < iterations; i++) {
        saveHost(saver, values)
        orThrowKit(saver.reset([i % B]))
        orThrowKit(saver.select([3, 2, null, 0]))
        if (i % 50 === 0) orThrowKit(saver.restore(bytes))
        if (i % 10 === 0) orThrowKit(saver.reset())
        expectLeft(saver.select([9]), "RowIndexError")
      }
      expect(options.liveTensors(backend)).toBe(start)
      saver.dispose()
    })
  })
}

/** Rebuilds a tensor tree in the saver's spec structure from leaves in spec order. */
function unflattenLike<T>(saver: StateSaver<T>, leaves: T[]): StateTree<T> {
  const tree = flatten<T>(saver.state())
  let i = 0
  const rebuild = (node: unknown, def: typeof tree.def): unknown => {
    void node
    if (def.kind === "leaf") return leaves[i++]
    if (def.kind === "array") return def.items.map((d) => rebuild(undefined, d))
    const out: Record<string, unknown> = {}
    def.keys.forEach((k, j) =>
      Object.defineProperty(out, k, {
        value: rebuild(undefined, def.items[j] as typeof tree.def),
        enumerable: true,
        writable: true,
        configurable: true,
      }),
    )
    return out
  }
  return rebuild(undefined, tree.def) as StateTree<T>
}

/** A backend that throws from `operation` on the leaf at `path` and forwards everything else. */
function failingBackend<T>(
  backend: StateBackend<T>,
  operation: "gather" | "fill" | "adopt",
  path: string,
): StateBackend<T> {
  const fail = (p: string) => {
    if (p === path) throw new Error(`injected ${operation} failure`)
  }
  return {
    ...backend,
    name: backend.name,
    capabilities: backend.capabilities,
    describe: (x) => backend.describe(x),
    allocate: (s, d, l) => backend.allocate(s, d, l),
    gather: (src, rows, l) => (
      operation === "gather" && fail(l.path),
      backend.gather(src, rows, l)
    ),
    scatter: (dst, rows, src, l) => backend.scatter(dst, rows, src, l),
    fill: (t, rows, l) => (operation === "fill" && fail(l.path), backend.fill(t, rows, l)),
    adopt: (h, n, l) => (operation === "adopt" && fail(l.path), backend.adopt(h, n, l)),
    toHost: (t) => backend.toHost(t),
    fromHost: (h, l) => backend.fromHost(h, l),
    dispose: (t) => backend.dispose(t),
  }
}

function orThrowKit<A>(r: { _tag: "Left"; left: StateError } | { _tag: "Right"; right: A }): A {
  if (r._tag === "Left") throw r.left
  return r.right
}
