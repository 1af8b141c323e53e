import { SnapshotFormatError } from "./errors.js"
import { type DType, type HostData, HostTensor, dtypeByteSize, isDType } from "./host-tensor.js"
import { checkTensor } from "./internal/dtype-values.js"
import * as E from "./internal/either.js"
import type { Dim } from "./state-spec.js"

/**
 * The snapshot format version this build writes and reads.
 *
 * @category snapshots
 * @since 0.1.0
 */
export const SNAPSHOT_VERSION = 1

/**
 * Value of `__metadata__.format` in every snapshot.
 *
 * @category snapshots
 * @since 0.1.0
 */
export const SNAPSHOT_FORMAT = "statesaver.snapshot"

/**
 * Most leaves a snapshot may hold. Decoding work is linear in the input, and this bound (with
 * the header bound below) keeps what an untrusted snapshot can cost small.
 */
const MAX_LEAVES = 32_768
/**
 * Headers above this size are refused before anything is decoded: 1 KiB per leaf at the leaf
 * bound plus 64 KiB, 32 MiB + 64 KiB (safetensors allows 100 MiB; a statesaver header, paths
 * and specs included, is a few hundred bytes per leaf).
 */
const MAX_HEADER_BYTES = MAX_LEAVES * 1024 + 64 * 1024
const MAX_RANK = 32

const SAFETENSORS_DTYPE: Record<DType, string> = {
  float32: "F32",
  float16: "F16",
  int32: "I32",
  int64: "I64",
  uint8: "U8",
  bool: "BOOL",
}
const FROM_SAFETENSORS = new Map<string, DType>(
  Object.entries(SAFETENSORS_DTYPE).map(([k, v]) => [v, k as DType]),
)

/**
 * What a snapshot records of one leaf's spec.
 *
 * @category snapshots
 * @since 0.1.0
 */
export interface SnapshotLeaf {
  readonly path: string
  readonly batchAxis: number
  readonly dtype: DType
  /** The spec's shape, with named dims. */
  readonly spec: readonly Dim[]
  readonly init: "zeros" | "constant" | "tensor"
}

/**
 * A decoded snapshot: per-leaf spec records in leaf order, and each leaf's data.
 *
 * @category snapshots
 * @since 0.1.0
 */
export interface Snapshot {
  readonly version: number
  readonly batchDim: string
  readonly batchSize: number
  readonly leaves: readonly SnapshotLeaf[]
  /** Keyed by leaf path. */
  readonly tensors: ReadonlyMap<string, HostTensor>
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1

/**
 * Encodes leaves as a safetensors file: an 8-byte little-endian header length, a JSON header
 * (`dtype`, `shape`, `data_offsets` per tensor, and `__metadata__` with the format, version,
 * batch dim and size, and the spec of each leaf), then the raw little-endian data.
 * Metadata values are strings, as safetensors requires. Throws a `SnapshotFormatError` for what
 * `decodeSnapshot` would refuse (a leaf without a tensor, a tensor of another dtype, more than
 * 32,768 leaves, a big-endian host), and what `new HostTensor` throws for a tensor whose data
 * disagrees with its dtype and shape.
 *
 * @example
 * const { version, ...snapshot } = orThrow(decodeSnapshot(bytes))
 * const copy = encodeSnapshot(snapshot) // decodes to the same leaves and tensors
 * @category snapshots
 * @since 0.1.0
 */
export function encodeSnapshot(snapshot: Omit<Snapshot, "version">): Uint8Array {
  if (!LITTLE_ENDIAN) {
    throw new SnapshotFormatError({ expected: "a little-endian host", actual: "a big-endian host" })
  }
  if (snapshot.leaves.length > MAX_LEAVES) {
    throw new SnapshotFormatError({
      expected: `at most ${MAX_LEAVES} leaves`,
      actual: snapshot.leaves.length,
    })
  }
  const header: Record<string, unknown> = {}
  const meta = {
    format: SNAPSHOT_FORMAT,
    version: String(SNAPSHOT_VERSION),
    batch_dim: snapshot.batchDim,
    batch_size: String(snapshot.batchSize),
    leaves: JSON.stringify(
      snapshot.leaves.map((l) => ({
        path: l.path,
        batch_axis: l.batchAxis,
        dtype: l.dtype,
        spec: l.spec,
        init: l.init,
      })),
    ),
  }
  Object.defineProperty(header, "__metadata__", { value: meta, enumerable: true })
  let offset = 0
  const parts: Uint8Array[] = []
  for (const leaf of snapshot.leaves) {
    const t = snapshot.tensors.get(leaf.path)
    if (!(t instanceof HostTensor)) {
      throw new SnapshotFormatError({
        path: leaf.path,
        expected: "a HostTensor for this leaf",
        actual: t,
      })
    }
    const bad = checkTensor(t.dtype, t.shape, t.data, "encodeSnapshot")
    if (bad !== undefined) throw bad
    if (t.dtype !== leaf.dtype) {
      throw new SnapshotFormatError({
        path: leaf.path,
        expected: `a tensor of the leaf's dtype ${leaf.dtype}`,
        actual: t.dtype,
      })
    }
    const bytes = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength)
    Object.defineProperty(header, leaf.path, {
      value: {
        dtype: SAFETENSORS_DTYPE[t.dtype],
        shape: t.shape,
        data_offsets: [offset, offset + bytes.byteLength],
      },
      enumerable: true,
    })
    parts.push(bytes)
    offset += bytes.byteLength
  }
  let json = new TextEncoder().encode(JSON.stringify(header))
  const padded = Math.ceil(json.byteLength / 8) * 8
  if (padded !== json.byteLength) {
    const p = new Uint8Array(padded).fill(0x20)
    p.set(json)
    json = p
  }
  const out = new Uint8Array(8 + json.byteLength + offset)
  new DataView(out.buffer).setBigUint64(0, BigInt(json.byteLength), true)
  out.set(json, 8)
  let at = 8 + json.byteLength
  for (const part of parts) {
    out.set(part, at)
    at += part.byteLength
  }
  return out
}

const fail = (expected: string, actual: unknown, path = ""): E.Either<SnapshotFormatError, never> =>
  E.left(new SnapshotFormatError({ path, expected, actual }))

const isRecord = (x: unknown): x is Record<string, unknown> =>
  typeof x === "object" && x !== null && !Array.isArray(x)

const isCount = (x: unknown): x is number =>
  typeof x === "number" && Number.isSafeInteger(x) && x >= 0

const own = (x: object, key: string): boolean => Object.prototype.hasOwnProperty.call(x, key)

interface Entry {
  readonly leaf: SnapshotLeaf
  readonly dtype: DType
  readonly shape: number[]
  readonly begin: number
  readonly end: number
}

/**
 * Decodes and validates snapshot bytes. Every inconsistency (truncation, an oversized or
 * malformed header, overlapping or out-of-range data, unknown dtypes or versions, bool bytes
 * other than 0 and 1) is a `SnapshotFormatError`; no allocation is larger than the input.
 * Untrusted input is bounded: at most 32,768 leaves and a header of at most 32 MiB + 64 KiB,
 * both refused before they are walked; the work is linear in the input's size (a header at the
 * limit decodes in about a second). The tensors' data is one copy of the input's data section.
 *
 * @example
 * const snap = orThrow(decodeSnapshot(bytes))
 * @category snapshots
 * @since 0.1.0
 */
export function decodeSnapshot(bytes: Uint8Array): E.Either<SnapshotFormatError, Snapshot> {
  if (!(bytes instanceof Uint8Array)) return fail("a Uint8Array", bytes)
  if (bytes.byteLength < 8) return fail("at least 8 bytes", `${bytes.byteLength} bytes`)
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const headerLength = view.getBigUint64(0, true)
  const maxHeader = Math.min(MAX_HEADER_BYTES, bytes.byteLength - 8)
  if (headerLength > BigInt(maxHeader)) {
    return fail(
      `a header length of at most ${maxHeader} bytes${maxHeader === MAX_HEADER_BYTES ? " (the header limit)" : " (the bytes that follow)"}`,
      `${headerLength} bytes`,
    )
  }
  const n = Number(headerLength)
  let header: unknown
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, 8 + n)))
  } catch (e) {
    return fail("a UTF-8 JSON header", e instanceof Error ? e.message : String(e))
  }
  if (!isRecord(header))
    return fail("a JSON object header", Array.isArray(header) ? "an array" : header)
  const meta = own(header, "__metadata__") ? header["__metadata__"] : undefined
  if (!isRecord(meta)) return fail("a __metadata__ object", meta)
  if (meta["format"] !== SNAPSHOT_FORMAT) return fail(`format "${SNAPSHOT_FORMAT}"`, meta["format"])
  if (meta["version"] !== String(SNAPSHOT_VERSION)) {
    return fail(`version "${SNAPSHOT_VERSION}"`, meta["version"])
  }
  const batchDim = meta["batch_dim"]
  if (typeof batchDim !== "string" || batchDim === "") return fail("a batch_dim name", batchDim)
  const batchSize = Number(meta["batch_size"])
  if (typeof meta["batch_size"] !== "string" || !isCount(batchSize)) {
    return fail("a batch_size", meta["batch_size"])
  }
  const keys = Object.keys(header)
  if (keys.length - 1 > MAX_LEAVES) {
    return fail(`at most ${MAX_LEAVES} tensors (the leaf limit)`, `${keys.length - 1} tensors`)
  }
  if (typeof meta["leaves"] !== "string") return fail("a leaves JSON string", meta["leaves"])
  let rawLeaves: unknown
  try {
    rawLeaves = JSON.parse(meta["leaves"])
  } catch (e) {
    return fail("a leaves JSON string", e instanceof Error ? e.message : String(e))
  }
  if (!Array.isArray(rawLeaves)) return fail("a leaves array", rawLeaves)
  if (rawLeaves.length > MAX_LEAVES) {
    return fail(`at most ${MAX_LEAVES} leaves (the leaf limit)`, `${rawLeaves.length} leaves`)
  }
  const leaves: SnapshotLeaf[] = []
  const byPath = new Map<string, SnapshotLeaf>()
  for (const raw of rawLeaves as unknown[]) {
    if (!isRecord(raw)) return fail("a leaf record", raw)
    const { path, batch_axis, dtype, spec, init } = raw
    if (typeof path !== "string") return fail("a leaf path", path)
    if (byPath.has(path)) return fail("distinct leaf paths", path, path)
    if (!isDType(dtype)) return fail("a dtype", dtype, path)
    if (!Array.isArray(spec) || spec.length > MAX_RANK) return fail("a spec shape", spec, path)
    for (const d of spec as unknown[]) {
      if (!isCount(d) && !(typeof d === "string" && d !== "")) return fail("a spec dim", d, path)
    }
    if (!isCount(batch_axis) || batch_axis >= spec.length || spec[batch_axis] !== batchDim) {
      return fail(`a batch_axis naming "${batchDim}"`, batch_axis, path)
    }
    if (init !== "zeros" && init !== "constant" && init !== "tensor")
      return fail("an init kind", init, path)
    const leaf: SnapshotLeaf = { path, batchAxis: batch_axis, dtype, spec: spec as Dim[], init }
    byPath.set(path, leaf)
    leaves.push(leaf)
  }
  const dataStart = 8 + n
  const dataLength = bytes.byteLength - dataStart
  const entries: Entry[] = []
  for (const key of keys) {
    if (key === "__metadata__") continue
    const entry = header[key]
    if (!isRecord(entry)) return fail("a tensor entry", entry, key)
    const leaf = byPath.get(key)
    if (leaf === undefined) return fail("a tensor named in __metadata__.leaves", key, key)
    const dtype =
      typeof entry["dtype"] === "string" ? FROM_SAFETENSORS.get(entry["dtype"]) : undefined
    if (dtype === undefined)
      return fail("a dtype F32, F16, I32, I64, U8 or BOOL", entry["dtype"], key)
    const shape = entry["shape"]
    if (!Array.isArray(shape) || shape.length > MAX_RANK || !shape.every(isCount)) {
      return fail("a shape of non-negative integers", shape, key)
    }
    const offsets = entry["data_offsets"]
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount)) {
      return fail("data_offsets [begin, end]", offsets, key)
    }
    const [begin, end] = offsets as [number, number]
    if (begin > end || end > dataLength) {
      return fail(`data_offsets within ${dataLength} data bytes`, offsets, key)
    }
    let bytesNeeded = (shape as number[]).includes(0) ? 0 : dtypeByteSize(dtype)
    for (const d of bytesNeeded === 0 ? [] : (shape as number[])) {
      bytesNeeded *= d
      if (bytesNeeded > dataLength) break
    }
    if (bytesNeeded !== end - begin) {
      return fail(`${bytesNeeded} data bytes for shape ${JSON.stringify(shape)}`, end - begin, key)
    }
    entries.push({ leaf, dtype, shape: shape as number[], begin, end })
  }
  if (entries.length !== leaves.length) {
    // Paths are distinct and every entry names a leaf: some leaf has no entry.
    const present = new Set(entries.map((e) => e.leaf.path))
    const missing = leaves.find((l) => !present.has(l.path))
    return fail("a tensor for every leaf", `no tensor for ${missing?.path ?? "?"}`, missing?.path)
  }
  const sorted = [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end)
  let cursor = 0
  for (const e of sorted) {
    if (e.begin !== cursor) return fail(`data starting at byte ${cursor}`, e.begin, e.leaf.path)
    cursor = e.end
  }
  if (cursor !== dataLength) return fail(`${cursor} data bytes`, dataLength)
  // One copy of the data section; each tensor is a view into it when its offset is aligned for
  // its element size (always, for snapshots of float32 state), else a copy of its own.
  const region = bytes.slice(dataStart)
  const tensors = new Map<string, HostTensor>()
  for (const e of entries) {
    const { leaf } = e
    if (leaf.dtype !== e.dtype) return fail(`dtype ${leaf.dtype}`, e.dtype, leaf.path)
    if (e.shape.length !== leaf.spec.length) {
      return fail(`rank ${leaf.spec.length}`, e.shape.length, leaf.path)
    }
    if (e.shape[leaf.batchAxis] !== batchSize) {
      return fail(`batch size ${batchSize}`, e.shape[leaf.batchAxis], leaf.path)
    }
    const size = dtypeByteSize(e.dtype)
    const data =
      e.begin % size === 0
        ? dataView(e.dtype, region.buffer, e.begin, (e.end - e.begin) / size)
        : dataView(e.dtype, region.slice(e.begin, e.end).buffer, 0, (e.end - e.begin) / size)
    if (e.dtype === "bool") {
      const notBool = (data as Uint8Array).findIndex((v) => v > 1)
      if (notBool >= 0) {
        return fail("bool bytes 0 or 1", (data as Uint8Array)[notBool], leaf.path)
      }
    }
    tensors.set(leaf.path, new HostTensor(e.dtype, e.shape, data))
  }
  return E.right({ version: SNAPSHOT_VERSION, batchDim, batchSize, leaves, tensors })
}

function dataView(dtype: DType, buffer: ArrayBuffer, byteOffset: number, length: number): HostData {
  switch (dtype) {
    case "float32":
      return new Float32Array(buffer, byteOffset, length)
    case "float16":
      return new Uint16Array(buffer, byteOffset, length)
    case "int32":
      return new Int32Array(buffer, byteOffset, length)
    case "int64":
      return new BigInt64Array(buffer, byteOffset, length)
    case "uint8":
    case "bool":
      return new Uint8Array(buffer, byteOffset, length)
  }
}
