import { expect } from "vitest"
import type { StateError } from "../errors.js"
import {
  type DType,
  type HostData,
  HostTensor,
  float32ToFloat16Bits,
  sizeOf,
} from "../host-tensor.js"
import { decodeSnapshot } from "../snapshot.js"
import type { StateSaver } from "../state-saver.js"
import { type Init, type LeafSpec, type ResolvedLeaf, type StateSpec, init } from "../state-spec.js"
import { type StateTree, flatten, formatPath } from "../state-tree.js"

/** Rows of every saver the kit seeds. */
export const BATCH = 4

/** Every dtype core knows; the kit runs the dtype tests on each (refusal when undeclared). */
export const KIT_DTYPES = ["float32", "float16", "int32", "int64", "uint8", "bool"] as const

/**
 * Deterministic distinct values of `dtype` for `n` elements, offset by `seed`. int64 values lie
 * beyond 2**53 (odd offsets from ±2**60), so a backend that passes them through a double fails.
 *
 * @example
 * const data = valuesFor("int32", 6, 1)
 * @category testing
 * @since 0.1.0
 */
export function valuesFor(dtype: DType, n: number, seed = 0): HostData {
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
      return BigInt64Array.from({ length: n }, (_, i) => {
        const k = BigInt(i + seed)
        return (k % 2n === 0n ? 1n : -1n) * ((1n << 60n) + k * 3_000_000_001n)
      })
    case "uint8":
      return Uint8Array.from({ length: n }, (_, i) => (i + seed) % 251)
    case "bool":
      return Uint8Array.from({ length: n }, (_, i) => (i + seed) % 2)
  }
}

/** The constant init of the kit spec: int64's lies beyond 2**53. */
const constantFor = (dtype: DType): number | bigint => (dtype === "int64" ? -(1n << 62n) - 3n : 1)

/**
 * The spec the kit runs for one dtype: a record with a `__proto__` key (as data), a batch axis
 * at 0, 1 and 2, and each init kind.
 */
export function kitSpec(dtype: DType): StateSpec {
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
      { shape: [2, "batch", 2], dtype, init: init.constant(constantFor(dtype)) },
      { shape: [2, 2, "batch"], dtype, init: init.tensor(rowInit) },
    ],
    odd: proto,
  }
}

/**
 * Gathers rows along `axis` with plain index arithmetic (no shortcuts): the kit's oracle for
 * every row operation. `null` rows take `initRow(outer, inner)`.
 *
 * @example
 * const src = hostTensor("float32", [2, 3], [0, 1, 2, 3, 4, 5])
 * const rows = referenceGather(src, 0, [1, null], () => 0) // data [3, 4, 5, 0, 0, 0]
 * @category testing
 * @since 0.1.0
 */
export function referenceGather(
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

/** Element `(outer, inner)` of a fresh row of `leaf`, for `referenceGather`. */
export function initValue(
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

/** Host tensors of distinct values for every leaf at `batchSize` rows, keyed by path. */
export function distinctState(
  spec: StateSpec,
  batchSize: number,
  seed: number,
): Map<string, HostTensor> {
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

/** `zeros`, `constant(1.5)`, `tensor [2, 3]`: an init as failure messages print it. */
export function describeInit(i: Init): string {
  if (i.kind === "zeros") return "zeros"
  if (i.kind === "constant")
    return `constant(${typeof i.value === "bigint" ? `${i.value}n` : i.value})`
  return `tensor [${i.value.shape.join(", ")}]`
}

/**
 * A leaf as failure messages name it: path, dtype, shape with the batch axis marked, batch axis
 * and init, e.g. `leaf b[0] (float32 [2, batch=4, 2], batch axis 1, init constant(1))`.
 */
export function describeLeaf(leaf: {
  readonly path: string
  readonly dtype: DType
  readonly shape: readonly (number | string)[]
  readonly batchAxis: number
  readonly init: Init
}): string {
  const dims = leaf.shape.map((d, axis) =>
    axis === leaf.batchAxis ? (typeof d === "number" ? `batch=${d}` : "batch") : String(d),
  )
  return `leaf ${leaf.path} (${leaf.dtype} [${dims.join(", ")}], batch axis ${leaf.batchAxis}, init ${describeInit(leaf.init)})`
}

/** `describeLeaf` for a leaf of a saver's resolved spec. */
export function describeResolved(leaf: ResolvedLeaf): string {
  return describeLeaf({ ...leaf, path: leaf.pathString })
}

/**
 * Asserts that the live-tensor count is back at `start`, saying what ran: `live tensors after
 * 200 save/reset/select/restore loops: expected 8, got 2048 (+2040)`.
 */
export function expectLive(now: number, start: number, after: string): void {
  const diff = now - start
  expect(
    now,
    `live tensors after ${after}: expected ${start}, got ${now} (${diff >= 0 ? "+" : ""}${diff})`,
  ).toBe(start)
}

/** Elements of a host tensor as a plain array (bigints stay bigints). */
export function elements(t: HostTensor | undefined): (number | bigint)[] {
  return t === undefined ? [] : Array.from(t.data as ArrayLike<number | bigint>)
}

/**
 * Asserts dtype, shape and every element of a leaf read back. `what` names what ran and the
 * leaf (`describeLeaf`); on a value mismatch the message also gives the first differing element.
 */
export function expectTensor(
  actual: HostTensor | undefined,
  expected: HostTensor,
  what: string,
): void {
  expect(actual, `${what}: no tensor read back`).toBeDefined()
  expect(actual?.dtype, `${what}: dtype`).toBe(expected.dtype)
  expect(actual?.shape, `${what}: shape`).toEqual(expected.shape)
  const got = elements(actual)
  const want = elements(expected)
  const same = (a: number | bigint | undefined, b: number | bigint | undefined) =>
    a === b || (Number.isNaN(a) && Number.isNaN(b))
  const at = want.findIndex((v, i) => !same(got[i], v))
  if (at < 0 && got.length === want.length) return
  const show = (v: number | bigint | undefined) => (typeof v === "bigint" ? `${v}n` : String(v))
  const where =
    at < 0
      ? ` (${got.length} elements, expected ${want.length})`
      : ` (first difference at element ${at} of ${want.length}: expected ${show(want[at])}, got ${show(got[at])})`
  // Small tensors get vitest's diff; large ones only the first difference.
  if (want.length <= 64) expect(got, `${what}: values${where}`).toEqual(want)
  else expect.fail(`${what}: values${where}`)
}

type Either<A> = { _tag: "Left"; left: StateError } | { _tag: "Right"; right: A }

/** Asserts a `Left` holding a `StateError` of `tag`, and returns it. */
export function expectLeft<A>(result: Either<A>, tag: string): StateError {
  expect(result._tag).toBe("Left")
  if (result._tag !== "Left") throw new Error("unreachable")
  expect(result.left._tag).toBe(tag)
  expect(result.left).toBeInstanceOf(Error)
  return result.left
}

/** The `Right` of a result, or the `Left`'s error thrown (fails the test with its message). */
export function unwrap<A>(r: Either<A>): A {
  if (r._tag === "Left") throw r.left
  return r.right
}

/** A saver's snapshot bytes. */
export async function snapshotBytes<T, In>(saver: StateSaver<T, In>): Promise<Uint8Array> {
  return unwrap(await saver.snapshot())
}

/** Reads a saver's state to host tensors keyed by path, through `snapshot`. */
export async function read<T, In>(saver: StateSaver<T, In>): Promise<Map<string, HostTensor>> {
  return readBytes(await snapshotBytes(saver))
}

/** Decodes snapshot bytes to host tensors keyed by path. */
export function readBytes(bytes: Uint8Array): Map<string, HostTensor> {
  return new Map(unwrap(decodeSnapshot(bytes)).tensors)
}

/** Rebuilds a tree in the saver's spec structure from leaves in spec order. */
export function unflattenLike<X, T, In>(
  saver: StateSaver<T, In>,
  leaves: readonly X[],
): StateTree<X> {
  const def = saver.spec.def
  let i = 0
  const rebuild = (d: typeof def): unknown => {
    if (d.kind === "leaf") return leaves[i++]
    if (d.kind === "array") return d.items.map(rebuild)
    const out: Record<string, unknown> = {}
    d.keys.forEach((k, j) =>
      // defineProperty: a `__proto__` key is data, not the prototype.
      Object.defineProperty(out, k, {
        value: rebuild(d.items[j] as typeof def),
        enumerable: true,
        writable: true,
        configurable: true,
      }),
    )
    return out
  }
  return rebuild(def) as StateTree<X>
}
