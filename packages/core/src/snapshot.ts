import { SnapshotFormatError } from "./errors.js"
import {
  DTYPES,
  type DType,
  type HostData,
  HostTensor,
  dtypeByteSize,
  isDType,
} from "./host-tensor.js"
import { arrayOf, checkTensor } from "./internal/dtype-values.js"
import * as E from "./internal/either.js"
import { error, failSnapshot as fail } from "./internal/fail.js"
import { hasOwn, isArray, isName, isPlainRecord, isSize } from "./internal/predicates.js"
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

const SAFETENSORS_DTYPE: Readonly<Record<DType, string>> = {
  float32: "F32",
  float16: "F16",
  int32: "I32",
  int64: "I64",
  uint8: "U8",
  bool: "BOOL",
}

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
 * The caller's own string entries of a snapshot (an app's frame position, a segmenter's
 * state): written into safetensors' `__metadata__` beside statesaver's keys, which they may not
 * reuse (`format`, `version`, `batch_dim`, `batch_size`, `leaves`).
 *
 * @category snapshots
 * @since 0.3.0
 */
export type SnapshotMetadata = Readonly<Record<string, string>>

/**
 * Options of `snapshot` on a saver, a store and the sessions built on them.
 *
 * @example
 * const bytes = orThrow(await saver.snapshot({ metadata: { frame: "1200" } }))
 * const { frame } = orThrow(saver.restore(bytes)) // "1200"
 * @category snapshots
 * @since 0.3.0
 */
export interface SnapshotOptions {
  /** String entries stored beside the state and given back by `restore`. */
  readonly metadata?: SnapshotMetadata | undefined
}

/** The keys of `__metadata__` that statesaver writes. */
const RESERVED = ["format", "version", "batch_dim", "batch_size", "leaves"]

/**
 * The first problem of caller metadata as `[path, expected, actual]` (`metadata.frame`), or `undefined` when it is
 * a record of strings under keys statesaver does not use.
 */
/** @internal */
export const metadataProblem = (m: unknown): [string, string, unknown] | undefined => {
  if (m === undefined) return undefined
  if (!isPlainRecord(m)) return ["metadata", "a record of strings", m]
  for (const k in m) {
    const at = `metadata.${k}`
    if (RESERVED.includes(k)) return [at, `a key other than ${RESERVED.join(", ")}`, k]
    if (typeof m[k] !== "string") return [at, "a string", m[k]]
  }
  return undefined
}

/**
 * A decoded snapshot: per-leaf spec records in leaf order, each leaf's data, and the caller's
 * metadata.
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
  /** The caller's metadata; `{}` in a decoded snapshot that has none. */
  readonly metadata?: SnapshotMetadata | undefined
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1

/**
 * Encodes leaves as a safetensors file: an 8-byte little-endian header length, a JSON header
 * (`dtype`, `shape`, `data_offsets` per tensor, and `__metadata__` with the format, version,
 * batch dim and size, and the spec of each leaf), then the raw little-endian data.
 * Metadata values are strings, as safetensors requires; the caller's `metadata` entries sit
 * beside statesaver's. Throws a `SnapshotFormatError` for what `decodeSnapshot` would refuse (a
 * leaf without a tensor, a tensor of another dtype, more than 32,768 leaves, metadata that is not
 * strings or reuses a statesaver key, a big-endian host), and what `new HostTensor` throws for a
 * tensor whose data disagrees with its dtype and shape.
 *
 * @example
 * const { version, ...snapshot } = orThrow(decodeSnapshot(bytes))
 * const copy = encodeSnapshot(snapshot) // decodes to the same leaves and tensors
 * @category snapshots
 * @since 0.1.0
 */
export function encodeSnapshot(snapshot: Omit<Snapshot, "version">): Uint8Array {
  if (!LITTLE_ENDIAN) {
    throw error(SnapshotFormatError, "", "a little-endian host", "a big-endian host")
  }
  const { leaves } = snapshot
  if (leaves.length > MAX_LEAVES) {
    throw error(SnapshotFormatError, "", `at most ${MAX_LEAVES} leaves`, leaves.length)
  }
  const bad = metadataProblem(snapshot.metadata)
  if (bad) throw error(SnapshotFormatError, ...bad)
  // No prototype: a leaf path "__proto__" is an own key like any other.
  const header: Record<string, unknown> = Object.create(null)
  header["__metadata__"] = {
    ...snapshot.metadata,
    format: SNAPSHOT_FORMAT,
    version: String(SNAPSHOT_VERSION),
    batch_dim: snapshot.batchDim,
    batch_size: String(snapshot.batchSize),
    leaves: JSON.stringify(
      leaves.map((l) => ({
        path: l.path,
        batch_axis: l.batchAxis,
        dtype: l.dtype,
        spec: l.spec,
        init: l.init,
      })),
    ),
  }
  let offset = 0
  const parts: Uint8Array[] = []
  for (const { path, dtype } of leaves) {
    const t = snapshot.tensors.get(path)
    if (!(t instanceof HostTensor)) {
      throw error(SnapshotFormatError, path, "a HostTensor for this leaf", t)
    }
    const bad = checkTensor(t.dtype, t.shape, t.data, "encodeSnapshot")
    if (bad) throw bad
    if (t.dtype !== dtype) {
      throw error(SnapshotFormatError, path, `a tensor of the leaf's dtype ${dtype}`, t.dtype)
    }
    const bytes = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength)
    header[path] = {
      dtype: SAFETENSORS_DTYPE[dtype],
      shape: t.shape,
      data_offsets: [offset, (offset += bytes.byteLength)],
    }
    parts.push(bytes)
  }
  const json = new TextEncoder().encode(JSON.stringify(header))
  // The header is padded with spaces to a multiple of 8 bytes, so the data starts aligned.
  let at = 8 + Math.ceil(json.byteLength / 8) * 8
  const out = new Uint8Array(at + offset).fill(0x20, 8 + json.byteLength, at)
  new DataView(out.buffer).setBigUint64(0, BigInt(at - 8), true)
  out.set(json, 8)
  for (const part of parts) {
    out.set(part, at)
    at += part.byteLength
  }
  return out
}

/** `JSON.parse(text())`, or the error saying what was expected and what the parser said. */
const parse = (text: () => string, expected: string): E.Either<SnapshotFormatError, unknown> => {
  try {
    return E.right(JSON.parse(text()))
  } catch (e) {
    // JSON.parse and TextDecoder throw errors (SyntaxError, TypeError, RangeError).
    return fail(expected, (e as Error).message)
  }
}

/** A problem found while decoding: the `expected` and `actual` of its error, and its path. */
type Problem = readonly [expected: string, actual: unknown, path?: string]

/** The problem of a count above the leaf limit. */
const overLimit = (count: number, what: string): Problem => [
  `at most ${MAX_LEAVES} ${what} (the leaf limit)`,
  `${count} ${what}`,
]

const LEAVES_JSON = "a leaves JSON string"

/** A tensor entry: the byte range of its data and its leaf's path. */
type Entry = readonly [begin: number, end: number, path: string]

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
  const total = bytes.byteLength
  if (total < 8) return fail("at least 8 bytes", `${total} bytes`)
  const headerLength = new DataView(bytes.buffer, bytes.byteOffset, total).getBigUint64(0, true)
  const maxHeader = Math.min(MAX_HEADER_BYTES, total - 8)
  if (headerLength > BigInt(maxHeader)) {
    return fail(
      `a header length of at most ${maxHeader} bytes (the ${maxHeader === MAX_HEADER_BYTES ? "header limit" : "bytes that follow"})`,
      `${headerLength} bytes`,
    )
  }
  const dataStart = 8 + Number(headerLength)
  const dataLength = total - dataStart
  const parsed = parse(
    () => new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, dataStart)),
    "a UTF-8 JSON header",
  )
  if (E.isLeft(parsed)) return parsed
  const header = parsed.right
  if (!isPlainRecord(header))
    return fail("a JSON object header", isArray(header) ? "an array" : header)
  const meta = hasOwn(header, "__metadata__") ? header["__metadata__"] : undefined
  if (!isPlainRecord(meta)) return fail("a __metadata__ object", meta)
  const { format, version, batch_dim: batchDim, batch_size, leaves: leavesJson, ...metadata } = meta
  const batchSize = Number(batch_size)
  const keys = Object.keys(header)
  const badMeta = metadataProblem(metadata)
  let bad: Problem | undefined =
    format !== SNAPSHOT_FORMAT
      ? [`format "${SNAPSHOT_FORMAT}"`, format]
      : version !== String(SNAPSHOT_VERSION)
        ? [`version "${SNAPSHOT_VERSION}"`, version]
        : !isName(batchDim)
          ? ["a batch_dim name", batchDim]
          : typeof batch_size !== "string" || !isSize(batchSize)
            ? ["a batch_size", batch_size]
            : keys.length - 1 > MAX_LEAVES
              ? overLimit(keys.length - 1, "tensors")
              : typeof leavesJson !== "string"
                ? [LEAVES_JSON, leavesJson]
                : badMeta && [badMeta[1], badMeta[2], badMeta[0]]
  if (bad) return fail(...bad)
  const leavesParsed = parse(() => leavesJson as string, LEAVES_JSON)
  if (E.isLeft(leavesParsed)) return leavesParsed
  const rawLeaves = leavesParsed.right
  if (!isArray(rawLeaves)) return fail("a leaves array", rawLeaves)
  if (rawLeaves.length > MAX_LEAVES) return fail(...overLimit(rawLeaves.length, "leaves"))
  const leaves: SnapshotLeaf[] = []
  const byPath = new Map<string, SnapshotLeaf>()
  for (const raw of rawLeaves as unknown[]) {
    if (!isPlainRecord(raw)) return fail("a leaf record", raw)
    const { path, batch_axis, dtype, spec, init } = raw
    // JSON holds no `undefined`: a spec dim found here is a bad one.
    const badDim = isArray(spec) && spec.find((d: unknown) => !isSize(d) && !isName(d))
    bad =
      typeof path !== "string"
        ? ["a leaf path", path]
        : byPath.has(path)
          ? ["distinct leaf paths", path, path]
          : !isDType(dtype)
            ? ["a dtype", dtype, path]
            : !isArray(spec) || spec.length > MAX_RANK
              ? ["a spec shape", spec, path]
              : badDim !== undefined
                ? ["a spec dim", badDim, path]
                : !isSize(batch_axis) || spec[batch_axis] !== batchDim
                  ? [`a batch_axis naming "${batchDim}"`, batch_axis, path]
                  : init !== "zeros" && init !== "constant" && init !== "tensor"
                    ? ["an init kind", init, path]
                    : undefined
    if (bad) return fail(...bad)
    const leaf = { path, batchAxis: batch_axis, dtype, spec, init } as SnapshotLeaf
    byPath.set(leaf.path, leaf)
    leaves.push(leaf)
  }
  // One copy of the data section; each tensor is a view into it when its offset is aligned for
  // its element size (always, for snapshots of float32 state), else a copy of its own.
  const region = bytes.slice(dataStart)
  const tensors = new Map<string, HostTensor>()
  const entries: Entry[] = []
  for (const key of keys) {
    if (key === "__metadata__") continue
    const entry = header[key]
    if (!isPlainRecord(entry)) return fail("a tensor entry", entry, key)
    const leaf = byPath.get(key)
    const { shape, data_offsets: offsets } = entry
    const dtype = DTYPES.find((d) => SAFETENSORS_DTYPE[d] === entry["dtype"])
    // Read only once `offsets` is known to be two sizes.
    const range = offsets as [number, number]
    bad = !leaf
      ? ["a tensor named in __metadata__.leaves", key]
      : !dtype
        ? [`a dtype ${Object.values(SAFETENSORS_DTYPE).join(", ")}`, entry["dtype"]]
        : !isArray(shape) || shape.length > MAX_RANK || !shape.every(isSize)
          ? ["a shape of non-negative integers", shape]
          : !isArray(offsets) || offsets.length !== 2 || !offsets.every(isSize)
            ? ["data_offsets [begin, end]", offsets]
            : range[0] > range[1] || range[1] > dataLength
              ? [`data_offsets within ${dataLength} data bytes`, offsets]
              : undefined
    if (bad) return fail(bad[0], bad[1], key)
    const [begin, end] = range
    const dims = shape as number[]
    const { dtype: leafDType, spec, batchAxis } = leaf as SnapshotLeaf
    // Stops multiplying once past the data: a crafted shape must not overflow to a match.
    const size = dtypeByteSize(dtype as DType)
    let bytesNeeded = dims.includes(0) ? 0 : size
    for (const d of dims) if ((bytesNeeded *= d) > dataLength) break
    bad =
      bytesNeeded !== end - begin
        ? [`${bytesNeeded} data bytes for shape ${JSON.stringify(dims)}`, end - begin]
        : leafDType !== dtype
          ? [`dtype ${leafDType}`, dtype]
          : dims.length !== spec.length
            ? [`rank ${spec.length}`, dims.length]
            : dims[batchAxis] !== batchSize
              ? [`batch size ${batchSize}`, dims[batchAxis]]
              : undefined
    if (bad) return fail(bad[0], bad[1], key)
    const A = arrayOf(dtype) as Float32ArrayConstructor
    const data = (
      begin % size
        ? new A(region.slice(begin, end).buffer)
        : new A(region.buffer, begin, (end - begin) / size)
    ) as HostData
    if (dtype === "bool") {
      const notBool = data.findIndex((v: number | bigint) => v > 1)
      if (notBool >= 0) return fail("bool bytes 0 or 1", data[notBool], key)
    }
    tensors.set(key, new HostTensor(leafDType, dims, data))
    entries.push([begin, end, key])
  }
  if (entries.length !== leaves.length) {
    // Paths are distinct and every entry names a leaf: some leaf has no entry.
    const missing = leaves.find((l) => !tensors.has(l.path))?.path
    return fail("a tensor for every leaf", `no tensor for ${missing ?? "?"}`, missing)
  }
  let cursor = 0
  for (const [begin, end, path] of entries.sort((a, b) => a[0] - b[0] || a[1] - b[1])) {
    if (begin !== cursor) return fail(`data starting at byte ${cursor}`, begin, path)
    cursor = end
  }
  if (cursor !== dataLength) return fail(`${cursor} data bytes`, dataLength)
  return E.right({
    version: SNAPSHOT_VERSION,
    batchDim: batchDim as string,
    batchSize,
    leaves,
    tensors,
    metadata: metadata as SnapshotMetadata,
  })
}
