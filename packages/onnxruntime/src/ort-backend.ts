import {
  type BackendCapabilities,
  type DType,
  type HostData,
  HostTensor,
  type LeafContext,
  type RowLayout,
  type StateBackend,
  type TensorInfo,
  allocateData,
  fillRowsTyped,
  gatherRowsTyped,
  rowLayout,
  scatterRowsTyped,
  sizeOf,
} from "@statesaver/core"
import type * as common from "onnxruntime-common"
import { byteSize, dtypeOfOrt } from "./internal/dtypes.js"
import { type ElementWrite, writeElements } from "./internal/gpu-elements.js"
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
} from "./internal/webgpu.js"

/**
 * An ONNX Runtime tensor (`onnxruntime-common`'s `Tensor`), on the CPU or in a WebGPU buffer.
 *
 * @category backend
 * @since 0.1.0
 */
export type OrtTensor = common.Tensor

/**
 * The parts of an ONNX Runtime module the backend uses: `onnxruntime-web`,
 * `onnxruntime-web/webgpu` or `onnxruntime-node`, passed in by the user.
 *
 * @example
 * import * as ort from "onnxruntime-node"
 * const runtime: OrtRuntime = ort
 * @category backend
 * @since 0.1.0
 */
export interface OrtRuntime {
  readonly Tensor: typeof common.Tensor
}

/**
 * Options of `ortBackend`.
 *
 * @category backend
 * @since 0.1.0
 */
export interface OrtBackendOptions {
  /** The runtime module whose `Tensor` class the state uses. */
  readonly ort: OrtRuntime
  /**
   * Where new state tensors (initial state, fresh rows, restored snapshots) live: `"cpu"`
   * (default) or `"gpu-buffer"`, which needs `device`.
   */
  readonly location?: "cpu" | "gpu-buffer"
  /**
   * ONNX Runtime's own `GPUDevice` (`await ort.env.webgpu.device` after a WebGPU session was
   * created). Every operation on a GPU tensor runs on it. Required for GPU tensors.
   */
  readonly device?: unknown
}

/**
 * The ONNX Runtime backend, with counters for leak tests and copy accounting.
 *
 * @category backend
 * @since 0.1.0
 */
export interface OrtBackend extends StateBackend<OrtTensor> {
  /** Tensors the backend created or adopted and has not disposed. */
  liveTensors(): number
  /** GPU buffers the backend created and has not destroyed. */
  liveGpuBuffers(): number
  /** Bytes moved by row operations (gather, scatter, fill, fromHost) since creation. */
  bytesCopied(): number
}

// WebGPU copies and writes need offsets and sizes that are multiples of 4 bytes.
const DTYPES: readonly DType[] = ["float32", "float16", "int32", "int64", "uint8", "bool"]

/**
 * Creates a state backend on ONNX Runtime tensors. CPU tensors are changed in their typed data,
 * touching only the rows involved; GPU tensors (`location: "gpu-buffer"`) only through
 * `queue.writeBuffer` and `copyBufferToBuffer` on the given device, nothing read back but by
 * `toHost`. `adopt` keeps the tensor it is given and disposes the one it replaces.
 *
 * @example
 * import * as ort from "onnxruntime-node"
 * const backend = ortBackend({ ort })
 * const saver = orThrow(createStateSaver({ spec: lstmSpec([64], { layout: "time-major" }), backend, batchSize: 4 }))
 * @category backend
 * @since 0.1.0
 */
export function ortBackend(options: OrtBackendOptions): OrtBackend {
  const { ort } = options
  const onGpu = options.location === "gpu-buffer"
  const device = options.device as GpuDevice | undefined
  if (onGpu && device === undefined) {
    throw new TypeError(
      'ortBackend: location "gpu-buffer" needs the runtime\'s GPUDevice as `device`',
    )
  }
  // Owned tensors are kept in a plain array, never in a Set or WeakSet: hashing an ORT tensor
  // object makes onnxruntime-node read its fields measurably slower on every run it is fed to.
  // The array holds what is alive (a few tensors per saver, one slab per store leaf), so a
  // lookup is a short scan. Tensors core frees without having owned them (a store's scatter
  // input) are not found and leave the count alone.
  const live: OrtTensor[] = []
  let gpuBuffers = 0
  let copied = 0
  const own = (t: OrtTensor): OrtTensor => {
    // A tensor this backend made (fromHost, gather) comes back through adopt: count it once.
    if (live.lastIndexOf(t) < 0) live.push(t)
    return t
  }
  const free = (t: OrtTensor): void => {
    const at = live.lastIndexOf(t)
    if (at >= 0) {
      live[at] = live[live.length - 1] as OrtTensor
      live.pop()
    }
    if (t.location !== "none") t.dispose()
  }
  const needDevice = (): GpuDevice => {
    if (device === undefined)
      throw new TypeError("a GPU tensor needs the runtime's GPUDevice: pass `device` to ortBackend")
    return device
  }
  const isGpu = (t: OrtTensor): boolean => t.location === "gpu-buffer"

  const cpuTensor = (dtype: DType, shape: readonly number[], data?: HostData): OrtTensor =>
    new ort.Tensor(
      dtype as "float32",
      (data ?? allocateData(dtype, sizeOf(shape))) as Float32Array,
      shape,
    )

  /** A zeroed GPU buffer wrapped as a tensor that destroys the buffer when disposed. */
  const gpuTensor = (
    dtype: DType,
    shape: readonly number[],
  ): { tensor: OrtTensor; buffer: GpuBuffer } => {
    const dev = needDevice()
    const bytes = sizeOf(shape) * byteSize(dtype)
    const buffer = dev.createBuffer({
      size: Math.max(16, roundUp(bytes, 16)),
      usage: USAGE_STORAGE | USAGE_COPY_SRC | USAGE_COPY_DST,
    })
    gpuBuffers++
    let destroyed = false
    const tensor = ort.Tensor.fromGpuBuffer(buffer as unknown as common.Tensor.GpuBufferType, {
      dataType: dtype as "float32",
      dims: shape,
      dispose: () => {
        if (destroyed) return
        destroyed = true
        gpuBuffers--
        buffer.destroy()
      },
    })
    return { tensor, buffer }
  }

  const bufferOf = (t: OrtTensor): GpuBuffer => t.gpuBuffer as unknown as GpuBuffer

  /** Host data of one row block of `init` for a tensor of `shape` (outer chunks × one row). */
  const initRows = (
    shape: readonly number[],
    dtype: DType,
    leaf: LeafContext,
    count: number,
  ): HostData => {
    const rowShape = [...shape]
    rowShape[leaf.batchAxis] = count
    const data = allocateData(dtype, sizeOf(rowShape))
    if (leaf.init.kind !== "zeros") {
      const layout = rowLayout(rowShape, leaf.batchAxis)
      fillRowsTyped(
        data,
        layout,
        Array.from({ length: count }, (_, i) => i),
        leaf.init,
        dtype,
      )
    }
    return data
  }

  /** Writes init into rows `rows` of a GPU buffer laid out as `layout`. */
  const gpuFill = (
    buffer: GpuBuffer,
    shape: readonly number[],
    dtype: DType,
    rows: readonly number[],
    leaf: LeafContext,
  ) => {
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
      copied += rows.length * rowBytes * layout.outer
      return
    }
    for (const [start, count] of runs(rows)) {
      for (let o = 0; o < layout.outer; o++) {
        const src = one.subarray(o * layout.inner, (o + 1) * layout.inner)
        for (let r = start; r < start + count; r++) {
          dev.queue.writeBuffer(buffer, (o * layout.rows + r) * rowBytes, src)
          copied += rowBytes
        }
      }
    }
  }

  /** Encodes copies of row runs from `src` to `dst`; returns whether anything was encoded. */
  const gpuCopyRows = (
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
      copied += srcRows.length * rowBytes * srcLayout.outer
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
        copied += count * rowBytes
      }
      i += count
    }
    dev.queue.submit([encoder.finish()])
  }

  const capabilities: BackendCapabilities = {
    dtypes: DTYPES,
    onDevice: onGpu,
  }

  return {
    name: onGpu ? "onnxruntime (gpu-buffer)" : "onnxruntime",
    capabilities,
    describe(x: unknown): TensorInfo | undefined {
      if (!(x instanceof ort.Tensor)) return undefined
      const t = x as OrtTensor
      if (t.location === "none") return undefined
      return { shape: t.dims, dtype: dtypeOfOrt(t.type) }
    },
    allocate(shape, dtype, leaf) {
      if (!onGpu)
        return own(
          cpuTensor(dtype, shape, initRows(shape, dtype, leaf, shape[leaf.batchAxis] ?? 0)),
        )
      const { tensor, buffer } = gpuTensor(dtype, shape)
      const rows = Array.from({ length: shape[leaf.batchAxis] ?? 0 }, (_, i) => i)
      // A new GPU buffer is zeroed: only other inits are written.
      if (leaf.init.kind !== "zeros") gpuFill(buffer, shape, dtype, rows, leaf)
      return own(tensor)
    },
    gather(src, rows, leaf) {
      const dtype = dtypeOfOrt(src.type)
      const shape = [...src.dims]
      shape[leaf.batchAxis] = rows.length
      const srcLayout = rowLayout(src.dims, leaf.batchAxis)
      const dstLayout = rowLayout(shape, leaf.batchAxis)
      if (!isGpu(src)) {
        const out = cpuTensor(dtype, shape)
        gatherRowsTyped(
          out.data as HostData,
          dstLayout,
          src.data as HostData,
          srcLayout,
          rows,
          leaf.init,
          dtype,
        )
        copied += sizeOf(shape) * byteSize(dtype)
        return own(out)
      }
      const { tensor, buffer } = gpuTensor(dtype, shape)
      const from: number[] = []
      const to: number[] = []
      const fresh: number[] = []
      rows.forEach((r, i) => {
        if (r === null) fresh.push(i)
        else {
          from.push(r)
          to.push(i)
        }
      })
      try {
        gpuCopyRows(buffer, dstLayout, to, bufferOf(src), srcLayout, from, byteSize(dtype))
        if (leaf.init.kind !== "zeros") gpuFill(buffer, shape, dtype, fresh, leaf)
      } catch (e) {
        tensor.dispose()
        throw e
      }
      return own(tensor)
    },
    scatter(dst, rows, src, leaf) {
      const dtype = dtypeOfOrt(dst.type)
      const dstLayout = rowLayout(dst.dims, leaf.batchAxis)
      const srcLayout = rowLayout(src.dims, leaf.batchAxis)
      if (isGpu(dst) !== isGpu(src)) throw new TypeError("scatter between a CPU and a GPU tensor")
      if (!isGpu(dst)) {
        scatterRowsTyped(dst.data as HostData, dstLayout, rows, src.data as HostData, srcLayout)
        copied += rows.length * srcLayout.outer * srcLayout.inner * byteSize(dtype)
        return
      }
      const srcRows = rows.map((_, i) => i)
      gpuCopyRows(
        bufferOf(dst),
        dstLayout,
        rows,
        bufferOf(src),
        srcLayout,
        srcRows,
        byteSize(dtype),
      )
    },
    fill(t, rows, leaf) {
      const dtype = dtypeOfOrt(t.type)
      if (!isGpu(t)) {
        const layout = rowLayout(t.dims, leaf.batchAxis)
        fillRowsTyped(t.data as HostData, layout, rows, leaf.init, dtype)
        copied += rows.length * layout.outer * layout.inner * byteSize(dtype)
        return
      }
      gpuFill(bufferOf(t), t.dims, dtype, rows, leaf)
    },
    adopt(held, next) {
      free(held)
      return own(next)
    },
    toHost(t) {
      const dtype = dtypeOfOrt(t.type)
      if (!isGpu(t)) {
        const data = (t.data as HostData).slice() as HostData
        return Promise.resolve(new HostTensor(dtype, t.dims, data as HostTensor["data"]))
      }
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
    },
    fromHost(host, leaf) {
      const data = (host.data as HostData).slice() as HostData
      copied += data.byteLength
      if (!onGpu) return own(cpuTensor(host.dtype, host.shape, data))
      void leaf
      const { tensor, buffer } = gpuTensor(host.dtype, host.shape)
      if (data.byteLength > 0) {
        const padded = new Uint8Array(roundUp(data.byteLength, 4))
        padded.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength))
        needDevice().queue.writeBuffer(buffer, 0, padded)
      }
      return own(tensor)
    },
    dispose(t) {
      free(t)
    },
    liveTensors: () => live.length,
    liveGpuBuffers: () => gpuBuffers,
    bytesCopied: () => copied,
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
