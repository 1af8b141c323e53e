// Many streams' snapshots at once, for a store moving many streams (a persistence tier writing
// back or loading a thousand streams): the safetensors header is encoded once per call and
// each stream's bytes are the header and its rows; a snapshot whose header is byte for byte the
// one already decoded and checked in the same call is read without decoding it again.
import { HostTensor, type HostData, allocateData, dtypeByteSize } from "../host-tensor.js"
import type { SnapshotMetadata } from "../snapshot.js"
import type { ResolvedSpec } from "../state-spec.js"
import { encodeState } from "./encode.js"

/** The bytes of a host array (a view, no copy). */
export const bytesOf = (data: HostData): Uint8Array =>
  new Uint8Array(data.buffer, data.byteOffset, data.byteLength)

/**
 * Copies one row between a tensor of `rows` rows and a tensor of one row, as raw bytes: the row
 * of a leaf whose batch axis is not 0 is `outer` spans of `inner` bytes (an ONNX LSTM state's
 * `[layers, batch, hidden]` row is one span per layer).
 */
export interface RowCopy {
  /** Bytes of one row's span. */
  readonly inner: number
  /** Spans per row. */
  readonly outer: number
}

/** The spans of one row of `shape` (batch axis `axis`, element size `size` bytes). */
export function rowCopy(shape: readonly number[], axis: number, size: number): RowCopy {
  let outer = 1
  let inner = size
  for (let a = 0; a < shape.length; a++) {
    if (a < axis) outer *= shape[a] as number
    else if (a > axis) inner *= shape[a] as number
  }
  return { inner, outer }
}

/** Copies row `r` of `batch` (`rows` rows, as bytes) to `dst` at `at`. */
export function readRow(
  { inner, outer }: RowCopy,
  batch: Uint8Array,
  rows: number,
  r: number,
  dst: Uint8Array,
  at: number,
): void {
  for (let o = 0; o < outer; o++) {
    const from = (o * rows + r) * inner
    dst.set(batch.subarray(from, from + inner), at + o * inner)
  }
}

/** Copies one row's bytes (`src` from `at`) into row `r` of `batch` (`rows` rows). */
export function writeRow(
  { inner, outer }: RowCopy,
  src: Uint8Array,
  at: number,
  batch: Uint8Array,
  rows: number,
  r: number,
): void {
  for (let o = 0; o < outer; o++) {
    const from = at + o * inner
    batch.set(src.subarray(from, from + inner), (o * rows + r) * inner)
  }
}

/** The shape of one row of `shape`. */
const rowShape = (shape: readonly number[], axis: number): number[] =>
  shape.map((d, a) => (a === axis ? 1 : d))

/**
 * Encodes row `r` of every leaf of `hosts` (a batch of `rows` rows, in spec order) as one
 * stream's snapshot of batch size 1, for every row: the header is encoded once.
 */
export function encodeRows(
  spec: ResolvedSpec,
  hosts: readonly HostTensor[],
  rows: number,
  metadata?: SnapshotMetadata,
): Uint8Array[] {
  if (rows === 0) return []
  const copies = spec.leaves.map((l, i) =>
    rowCopy((hosts[i] as HostTensor).shape, l.batchAxis, dtypeByteSize(l.dtype)),
  )
  const batches = hosts.map((t) => bytesOf(t.data))
  // Row 0 encoded the usual way gives the header every row shares.
  const first = spec.leaves.map((l, i) => {
    const t = hosts[i] as HostTensor
    const copy = copies[i] as RowCopy
    const data = allocateData(t.dtype, (copy.inner * copy.outer) / dtypeByteSize(t.dtype))
    readRow(copy, batches[i] as Uint8Array, rows, 0, bytesOf(data), 0)
    return new HostTensor(t.dtype, rowShape(t.shape, l.batchAxis), data)
  })
  const head = encodeState(spec, 1, first, metadata)
  const dataStart = head.byteLength - copies.reduce((n, c) => n + c.inner * c.outer, 0)
  const out: Uint8Array[] = [head]
  for (let r = 1; r < rows; r++) {
    const bytes = new Uint8Array(head.byteLength)
    bytes.set(head.subarray(0, dataStart))
    let at = dataStart
    for (let i = 0; i < copies.length; i++) {
      const copy = copies[i] as RowCopy
      readRow(copy, batches[i] as Uint8Array, rows, r, bytes, at)
      at += copy.inner * copy.outer
    }
    out.push(bytes)
  }
  return out
}

/** Where the data of snapshot bytes starts (8 + the header length), or -1 when unreadable. */
export function dataStartOf(bytes: Uint8Array): number {
  if (bytes.byteLength < 8) return -1
  const view = new DataView(bytes.buffer, bytes.byteOffset, 8)
  // A header over 4 GiB is no header a store wrote.
  if (view.getUint32(4, true) !== 0) return -1
  const start = 8 + view.getUint32(0, true)
  return start <= bytes.byteLength ? start : -1
}

/** Whether `a` and `b` agree on their first `n` bytes (both at least `n` long). */
export function samePrefix(a: Uint8Array, b: Uint8Array, n: number): boolean {
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return false
  return true
}
