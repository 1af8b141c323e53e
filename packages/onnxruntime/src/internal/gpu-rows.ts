// Row operations on GPU tensors (ONNX Runtime WebGPU buffers): only `queue.writeBuffer`,
// `copyBufferToBuffer` and, for rows that are not whole 4-byte words, a small compute pass, all on
// ONNX Runtime's own device; nothing is read back but by `toHost`.
import {
  type DType,
  HostTensor,
  type LeafContext,
  OptionError,
  type RowLayout,
  allocateData,
  rowLayout,
  sizeOf,
} from "@statesaver/core"
import type * as common from "onnxruntime-common"
import type { OrtRuntime, OrtTensor } from "../ort-backend.js"
import { byteSize } from "./dtypes.js"
import { type ElementWrite, writeElements } from "./gpu-elements.js"
import { initRows } from "./init-rows.js"
import {
  type GpuBuffer,
  type GpuComputeDevice,
  type GpuDevice,
  MAP_MODE_READ,
  USAGE_COPY_DST,
  USAGE_COPY_SRC,
  USAGE_MAP_READ,
  USAGE_STORAGE,
  roundUp,
} from "./webgpu.js"

/** Counters the backend reports: GPU buffers alive, bytes moved by row operations. */
export interface Counters {
  gpuBuffers: number
  copied: number
}

/** The GPU half of the ONNX Runtime backend, bound to one device. */
export interface GpuRows {
  /** A zeroed GPU buffer wrapped as a tensor that destroys the buffer when disposed. */
  tensor(dtype: DType, shape: readonly number[]): { tensor: OrtTensor; buffer: GpuBuffer }
  /** Writes init into rows `rows` of a GPU buffer of `shape`. */
  fill(
    buffer: GpuBuffer,
    shape: readonly number[],
    dtype: DType,
    rows: readonly number[],
    leaf: LeafContext,
  ): void
  /** Copies rows `srcRows` of `src` to rows `dstRows` of `dst`. */
  copyRows(
    dst: GpuBuffer,
    dstLayout: RowLayout,
    dstRows: readonly number[],
    src: GpuBuffer,
    srcLayout: RowLayout,
    srcRows: readonly number[],
    elementBytes: number,
  ): void
  /**
   * Copies spans of elements from `src` to `dst`: span `i` is `counts[i]` elements from element
   * `from[i]` to element `to[i]`, all in one submission.
   */
  copySpans(
    dst: GpuBuffer,
    src: GpuBuffer,
    from: readonly number[],
    to: readonly number[],
    counts: readonly number[],
    elementBytes: number,
  ): void
  /**
   * Moves rows of `buffer` in place: row `i` takes what row `rows[i]` held. The rows read are
   * first copied into a scratch buffer the backend keeps for this (grown when too small), then
   * copied back to the rows that change: two submissions, no buffer made once the scratch fits.
   */
  reorder(buffer: GpuBuffer, layout: RowLayout, rows: readonly number[], elementBytes: number): void
  /** Destroys the scratch buffer of `reorder`, if any (the next `reorder` makes a new one). */
  releaseScratch(): void
  /** Whether `reorder` keeps a scratch buffer now. */
  hasScratch(): boolean
  /** Copies a GPU tensor to the host (the copy is queued before the first await). */
  toHost(t: OrtTensor, dtype: DType): Promise<HostTensor>
  /** A new GPU tensor holding `data`. */
  fromHost(dtype: DType, shape: readonly number[], data: ArrayBufferView): OrtTensor
}

export const bufferOf = (t: OrtTensor): GpuBuffer => t.gpuBuffer as unknown as GpuBuffer

/** The GPU row operations on `device` (required once a GPU tensor is met). */
export function gpuRows(
  ort: OrtRuntime,
  device: GpuDevice | undefined,
  counters: Counters,
): GpuRows {
  const needDevice = (): GpuDevice => {
    if (device === undefined) {
      throw new OptionError({
        path: "device",
        expected: "the runtime's GPUDevice (pass `device` to ortBackend)",
        actual: device,
        detail: "a GPU tensor needs it",
      })
    }
    return device
  }

  const tensor = (
    dtype: DType,
    shape: readonly number[],
  ): { tensor: OrtTensor; buffer: GpuBuffer } => {
    const dev = needDevice()
    const bytes = sizeOf(shape) * byteSize(dtype)
    const buffer = dev.createBuffer({
      size: Math.max(16, roundUp(bytes, 16)),
      usage: USAGE_STORAGE | USAGE_COPY_SRC | USAGE_COPY_DST,
    })
    counters.gpuBuffers++
    let destroyed = false
    const t = ort.Tensor.fromGpuBuffer(buffer as unknown as common.Tensor.GpuBufferType, {
      dataType: dtype as "float32",
      dims: shape,
      dispose: () => {
        if (destroyed) return
        destroyed = true
        counters.gpuBuffers--
        buffer.destroy()
      },
    })
    return { tensor: t, buffer }
  }

  const fill = (
    buffer: GpuBuffer,
    shape: readonly number[],
    dtype: DType,
    rows: readonly number[],
    leaf: LeafContext,
  ): void => {
    const dev = needDevice()
    const layout = rowLayout(shape, leaf.batchAxis)
    const rowBytes = layout.inner * byteSize(dtype)
    if (rowBytes === 0 || rows.length === 0) return
    const one = initRows(shape, dtype, leaf, 1)
    if (rowBytes % 4 !== 0) {
      // Rows that are not whole words: a compute pass writes their elements.
      const writes: ElementWrite[] = []
      for (const r of rows) {
        for (let o = 0; o < layout.outer; o++) {
          for (let e = 0; e < layout.inner; e++) {
            writes.push({
              to: (o * layout.rows + r) * layout.inner + e,
              from: o * layout.inner + e,
              fromInit: true,
            })
          }
        }
      }
      const bytes = new Uint8Array(one.buffer, one.byteOffset, one.byteLength)
      writeElements(
        dev as GpuComputeDevice,
        buffer,
        undefined,
        bytes,
        byteSize(dtype) as 1 | 2,
        writes,
      )
      counters.copied += rows.length * rowBytes * layout.outer
      return
    }
    for (const [start, count] of runs(rows)) {
      for (let o = 0; o < layout.outer; o++) {
        const src = one.subarray(o * layout.inner, (o + 1) * layout.inner)
        for (let r = start; r < start + count; r++) {
          dev.queue.writeBuffer(buffer, (o * layout.rows + r) * rowBytes, src)
          counters.copied += rowBytes
        }
      }
    }
  }

  const copyRows = (
    dst: GpuBuffer,
    dstLayout: RowLayout,
    dstRows: readonly number[],
    src: GpuBuffer,
    srcLayout: RowLayout,
    srcRows: readonly number[],
    elementBytes: number,
  ): void => {
    const dev = needDevice()
    const rowBytes = srcLayout.inner * elementBytes
    if (rowBytes === 0 || srcRows.length === 0) return
    if (rowBytes % 4 !== 0) {
      // Rows that are not whole words: a compute pass writes their elements.
      const { inner } = srcLayout
      const writes: ElementWrite[] = []
      srcRows.forEach((s, i) => {
        const d = dstRows[i] as number
        for (let o = 0; o < srcLayout.outer; o++) {
          for (let e = 0; e < inner; e++) {
            writes.push({
              to: (o * dstLayout.rows + d) * inner + e,
              from: (o * srcLayout.rows + s) * inner + e,
              fromInit: false,
            })
          }
        }
      })
      writeElements(dev as GpuComputeDevice, dst, src, undefined, elementBytes as 1 | 2, writes)
      counters.copied += srcRows.length * rowBytes * srcLayout.outer
      return
    }
    const encoder = dev.createCommandEncoder()
    let i = 0
    while (i < srcRows.length) {
      const s = srcRows[i] as number
      const d = dstRows[i] as number
      let count = 1
      while (
        i + count < srcRows.length &&
        srcRows[i + count] === s + count &&
        dstRows[i + count] === d + count
      )
        count++
      for (let o = 0; o < srcLayout.outer; o++) {
        encoder.copyBufferToBuffer(
          src,
          (o * srcLayout.rows + s) * rowBytes,
          dst,
          (o * dstLayout.rows + d) * rowBytes,
          count * rowBytes,
        )
        counters.copied += count * rowBytes
      }
      i += count
    }
    dev.queue.submit([encoder.finish()])
  }

  const copySpans = (
    dst: GpuBuffer,
    src: GpuBuffer,
    from: readonly number[],
    to: readonly number[],
    counts: readonly number[],
    elementBytes: number,
  ): void => {
    const dev = needDevice()
    const aligned = from.every(
      (f, i) =>
        (f * elementBytes) % 4 === 0 &&
        ((to[i] as number) * elementBytes) % 4 === 0 &&
        ((counts[i] as number) * elementBytes) % 4 === 0,
    )
    if (!aligned) {
      // Spans that are not whole words: a compute pass writes their elements.
      const writes: ElementWrite[] = []
      from.forEach((f, i) => {
        for (let e = 0; e < (counts[i] as number); e++)
          writes.push({ to: (to[i] as number) + e, from: f + e, fromInit: false })
      })
      writeElements(dev as GpuComputeDevice, dst, src, undefined, elementBytes as 1 | 2, writes)
    } else {
      const encoder = dev.createCommandEncoder()
      from.forEach((f, i) => {
        const bytes = (counts[i] as number) * elementBytes
        if (bytes > 0)
          encoder.copyBufferToBuffer(
            src,
            f * elementBytes,
            dst,
            (to[i] as number) * elementBytes,
            bytes,
          )
      })
      dev.queue.submit([encoder.finish()])
    }
    for (const c of counts) counters.copied += c * elementBytes
  }

  // The scratch buffer of `reorder`: kept between calls (a beam step reorders every cache leaf
  // at every token), counted among the backend's live buffers, destroyed by `releaseScratch`.
  let scratch: GpuBuffer | undefined
  let scratchBytes = 0
  const releaseScratch = (): void => {
    if (scratch === undefined) return
    scratch.destroy()
    scratch = undefined
    scratchBytes = 0
    counters.gpuBuffers--
  }
  /** A scratch buffer of `bytes` or more; a new one is made `room` bytes or more. */
  const scratchOf = (bytes: number, room: number): GpuBuffer => {
    if (scratch !== undefined && scratchBytes >= bytes) return scratch
    const dev = needDevice()
    const size = Math.max(16, roundUp(Math.max(bytes, room), 16))
    const made = dev.createBuffer({ size, usage: USAGE_STORAGE | USAGE_COPY_SRC | USAGE_COPY_DST })
    releaseScratch()
    counters.gpuBuffers++
    scratch = made
    scratchBytes = size
    return made
  }

  const reorder = (
    buffer: GpuBuffer,
    layout: RowLayout,
    rows: readonly number[],
    elementBytes: number,
  ): void => {
    // The rows that change, and the rows they read, each once, in order of first use.
    const changed: number[] = []
    const sources: number[] = []
    const slotOf = new Map<number, number>()
    const slots: number[] = []
    rows.forEach((r, i) => {
      if (r === i) return
      let slot = slotOf.get(r)
      if (slot === undefined) {
        slot = sources.length
        slotOf.set(r, slot)
        sources.push(r)
      }
      changed.push(i)
      slots.push(slot)
    })
    if (changed.length === 0 || layout.inner * layout.outer === 0) return
    const held: RowLayout = { outer: layout.outer, rows: sources.length, inner: layout.inner }
    // Made the size of the whole tensor (how many rows a step reads varies, and a new size is a
    // new buffer), half again when it must grow (a growing cache is one position longer each step).
    const whole = layout.rows * layout.outer * layout.inner * elementBytes
    const aside = scratchOf(
      sources.length * layout.outer * layout.inner * elementBytes,
      scratch === undefined ? whole : Math.ceil(whole * 1.5),
    )
    const order = sources.map((_, k) => k)
    // Queued in order: every row read is set aside before any row is written.
    copyRows(aside, held, order, buffer, layout, sources, elementBytes)
    copyRows(buffer, layout, changed, aside, held, slots, elementBytes)
  }

  const toHost = (t: OrtTensor, dtype: DType): Promise<HostTensor> => {
    // The copy is encoded and submitted now, so later row operations cannot reach it.
    const dev = needDevice()
    const bytes = sizeOf(t.dims) * byteSize(dtype)
    const padded = Math.max(4, roundUp(bytes, 4))
    const staging = dev.createBuffer({ size: padded, usage: USAGE_MAP_READ | USAGE_COPY_DST })
    if (bytes > 0) {
      const encoder = dev.createCommandEncoder()
      encoder.copyBufferToBuffer(bufferOf(t), 0, staging, 0, padded)
      dev.queue.submit([encoder.finish()])
    }
    const dims = [...t.dims]
    return staging.mapAsync(MAP_MODE_READ).then(
      () => {
        const data = allocateData(dtype, sizeOf(dims))
        new Uint8Array(data.buffer, data.byteOffset, bytes).set(
          new Uint8Array(staging.getMappedRange(0, padded), 0, bytes),
        )
        staging.unmap()
        staging.destroy()
        return new HostTensor(dtype, dims, data as HostTensor["data"])
      },
      (e: unknown) => {
        staging.destroy()
        throw e
      },
    )
  }

  const fromHost = (dtype: DType, shape: readonly number[], data: ArrayBufferView): OrtTensor => {
    const made = tensor(dtype, shape)
    if (data.byteLength > 0) {
      const padded = new Uint8Array(roundUp(data.byteLength, 4))
      padded.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength))
      needDevice().queue.writeBuffer(made.buffer, 0, padded)
    }
    return made.tensor
  }

  return {
    tensor,
    fill,
    copyRows,
    copySpans,
    reorder,
    releaseScratch,
    hasScratch: () => scratch !== undefined,
    toHost,
    fromHost,
  }
}

/** Runs of consecutive ascending indices as [start, count]. */
function runs(rows: readonly number[]): [number, number][] {
  const out: [number, number][] = []
  let i = 0
  while (i < rows.length) {
    const r = rows[i] as number
    let count = 1
    while (i + count < rows.length && rows[i + count] === r + count) count++
    out.push([r, count])
    i += count
  }
  return out
}
