import {
  type BackendCapabilities,
  type DType,
  type HostData,
  HostTensor,
  type LeafContext,
  OptionError,
  type StateBackend,
  StructureMismatchError,
  type TensorInfo,
  allocateData,
  fillRowsTyped,
  gatherRowsTyped,
  reorderRowsTyped,
  rowLayout,
  scatterRowsTyped,
  forEachBlockSpan,
  sizeOf,
  writeBlockTyped,
} from "@statesaver/core"
import type * as common from "onnxruntime-common"
import { byteSize, dtypeOfOrt } from "./internal/dtypes.js"
import { type Counters, bufferOf, gpuRows } from "./internal/gpu-rows.js"
import { initRows } from "./internal/init-rows.js"
import { isObject, isOptions } from "./internal/validate.js"
import { PROXY_CHECK, proxyRefusal } from "./internal/proxy-mode.js"
import type { GpuDevice } from "./internal/webgpu.js"

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
  /**
   * GPU buffers the backend created and has not destroyed: its GPU tensors', and the scratch
   * buffer a GPU `reorder` (a `select` at the same batch size) keeps while a GPU tensor lives.
   */
  liveGpuBuffers(): number
  /** Bytes moved by row operations (gather, scatter, fill, reorder, fromHost) since creation. */
  bytesCopied(): number
}

const DTYPES: readonly DType[] = ["float32", "float16", "int32", "int64", "uint8", "bool"]

/** The array class of each dtype's data. */
const KINDS = Object.fromEntries(DTYPES.map((d) => [d, allocateData(d, 0).constructor])) as Record<
  DType,
  unknown
>

/** Freed arrays of gathered tensors kept for reuse: at most this many, and this many bytes. */
const SPARE_ARRAYS = 16
const SPARE_BYTES = 16 * 1024 * 1024

/** Checks `ortBackend`'s options; throws `OptionError` naming the first bad one. */
function checkOptions(options: unknown): {
  ort: OrtRuntime
  onGpu: boolean
  device: GpuDevice | undefined
} {
  if (!isOptions(options)) {
    throw new OptionError({
      path: "options",
      expected: "ortBackend options ({ ort, location?, device? })",
      actual: options,
    })
  }
  const { ort, location, device } = options as Partial<Record<keyof OrtBackendOptions, unknown>>
  if (!isObject(ort) || typeof (ort as { Tensor?: unknown }).Tensor !== "function") {
    throw new OptionError({
      path: "ort",
      expected:
        "the ONNX Runtime module (onnxruntime-web, onnxruntime-web/webgpu or onnxruntime-node)",
      actual: ort,
    })
  }
  const proxied = proxyRefusal(ort)
  if (proxied !== undefined) throw proxied
  if (location !== undefined && location !== "cpu" && location !== "gpu-buffer") {
    throw new OptionError({ path: "location", expected: '"cpu" or "gpu-buffer"', actual: location })
  }
  const onGpu = location === "gpu-buffer"
  if (device !== undefined || onGpu) {
    const d = device as Partial<Record<"createBuffer" | "createCommandEncoder" | "queue", unknown>>
    const ok =
      isObject(device) &&
      typeof d.createBuffer === "function" &&
      typeof d.createCommandEncoder === "function" &&
      isObject(d.queue)
    if (!ok) {
      throw new OptionError({
        path: "device",
        expected: "the runtime's GPUDevice (`await ort.env.webgpu.device`)",
        actual: device,
        ...(onGpu ? { detail: 'location "gpu-buffer" needs it' } : {}),
      })
    }
  }
  if (onGpu && typeof (ort as OrtRuntime).Tensor.fromGpuBuffer !== "function") {
    throw new OptionError({
      path: "ort",
      expected: "a runtime whose Tensor has fromGpuBuffer (onnxruntime-web/webgpu)",
      actual: ort,
      detail: 'location "gpu-buffer"',
    })
  }
  return { ort: ort as OrtRuntime, onGpu, device: device as GpuDevice | undefined }
}

/**
 * Creates a state backend on ONNX Runtime tensors. CPU tensors are changed in their typed data,
 * touching only the rows involved; GPU tensors (`location: "gpu-buffer"`) only through
 * `queue.writeBuffer` and `copyBufferToBuffer` on the given device, nothing read back but by
 * `toHost`. `adopt` keeps the tensor it is given and disposes the one it replaces. The memory of
 * a CPU tensor that `gather` made is reused once the tensor is freed (a store's step gathers the
 * same shapes call after call): do not keep its `data` past freeing it.
 * Returns the backend itself; throws `OptionError` when an option is malformed: `ort` without a
 * `Tensor` class, a `location` other than `"cpu"` or `"gpu-buffer"`, a `device` that is not a
 * GPUDevice (required for `"gpu-buffer"`), or, on a page, onnxruntime-web in proxy mode
 * (`ort.env.wasm.proxy`: its worker takes every input's ArrayBuffer, the state's among them; set
 * it before creating the backend, and leave it off).
 *
 * @example
 * import * as ort from "onnxruntime-node"
 * const backend = ortBackend({ ort })
 * const saver = orThrow(createStateSaver({ spec: lstmSpec([64], { layout: "time-major" }), backend, batchSize: 4 }))
 * @category backend
 * @since 0.1.0
 */
export function ortBackend(options: OrtBackendOptions): OrtBackend {
  const { ort, onGpu, device } = checkOptions(options)
  // Owned tensors are kept in a plain array, never in a Set or WeakSet: hashing an ORT tensor
  // object makes onnxruntime-node read its fields measurably slower on every run it is fed to.
  // The array holds what is alive (a few tensors per saver, one slab per store leaf), so a
  // lookup is a short scan. Tensors core frees without having owned them (a store's scatter
  // input) are not found and leave the count alone.
  const live: OrtTensor[] = []
  const counters: Counters = { gpuBuffers: 0, copied: 0 }
  const gpu = gpuRows(ort, device, counters)
  const own = (t: OrtTensor): OrtTensor => {
    // A tensor this backend made (fromHost, gather) comes back through adopt: count it once.
    if (live.lastIndexOf(t) < 0) live.push(t)
    return t
  }
  // The data of live CPU tensors `gather` made, and freed ones kept for the next gather of the
  // same size: a store's step gathers and frees the same shapes call after call.
  const gathered: HostData[] = []
  const spare: HostData[] = []
  let spareBytes = 0
  const isGpu = (t: OrtTensor): boolean => t.location === "gpu-buffer"
  const free = (t: OrtTensor): void => {
    const at = live.lastIndexOf(t)
    if (at >= 0) {
      live[at] = live[live.length - 1] as OrtTensor
      live.pop()
    }
    // The scratch buffer of a GPU `reorder` lives while a GPU tensor does.
    if (gpu.hasScratch() && !live.some(isGpu)) gpu.releaseScratch()
    if (t.location === "none") return
    if (t.location === "cpu") {
      const data = t.data as HostData
      const made = gathered.lastIndexOf(data)
      if (made >= 0) {
        gathered[made] = gathered[gathered.length - 1] as HostData
        gathered.pop()
        if (spare.length < SPARE_ARRAYS && spareBytes + data.byteLength <= SPARE_BYTES) {
          spare.push(data)
          spareBytes += data.byteLength
        }
      }
    }
    t.dispose()
  }
  /** A spare array of `length` elements of `dtype`'s kind, or a new one (its contents unknown). */
  const forGather = (dtype: DType, length: number): HostData => {
    const kind = KINDS[dtype]
    for (let i = spare.length - 1; i >= 0; i--) {
      const data = spare[i] as HostData
      if (data.length === length && data.constructor === kind) {
        spare[i] = spare[spare.length - 1] as HostData
        spare.pop()
        spareBytes -= data.byteLength
        gathered.push(data)
        return data
      }
    }
    const data = allocateData(dtype, length)
    gathered.push(data)
    return data
  }
  const cpuTensor = (dtype: DType, shape: readonly number[], data?: HostData): OrtTensor =>
    new ort.Tensor(
      dtype as "float32",
      (data ?? allocateData(dtype, sizeOf(shape))) as Float32Array,
      shape,
    )

  const capabilities: BackendCapabilities = {
    dtypes: DTYPES,
    onDevice: onGpu,
  }

  const backend: OrtBackend & { readonly [PROXY_CHECK]: () => OptionError | undefined } = {
    name: onGpu ? "onnxruntime (gpu-buffer)" : "onnxruntime",
    capabilities,
    describe(x: unknown): TensorInfo | undefined {
      if (!(x instanceof ort.Tensor)) return undefined
      const t = x as OrtTensor
      if (t.location === "none") return undefined
      return { shape: t.dims, dtype: dtypeOfOrt(t.type) }
    },
    allocate(shape, dtype, leaf) {
      if (!onGpu || leaf.host)
        return own(
          cpuTensor(dtype, shape, initRows(shape, dtype, leaf, shape[leaf.batchAxis] ?? 0)),
        )
      const { tensor, buffer } = gpu.tensor(dtype, shape)
      const rows = Array.from({ length: shape[leaf.batchAxis] ?? 0 }, (_, i) => i)
      // A new GPU buffer is zeroed: only other inits are written.
      if (leaf.init.kind !== "zeros") gpu.fill(buffer, shape, dtype, rows, leaf)
      return own(tensor)
    },
    gather(src, rows, leaf) {
      const dtype = dtypeOfOrt(src.type)
      const shape = [...src.dims]
      shape[leaf.batchAxis] = rows.length
      const srcLayout = rowLayout(src.dims, leaf.batchAxis)
      const dstLayout = rowLayout(shape, leaf.batchAxis)
      if (!isGpu(src)) {
        // Every row is written below (copied or set to init): a spare array does.
        const out = cpuTensor(dtype, shape, forGather(dtype, sizeOf(shape)))
        gatherRowsTyped(
          out.data as HostData,
          dstLayout,
          src.data as HostData,
          srcLayout,
          rows,
          leaf.init,
          dtype,
        )
        counters.copied += sizeOf(shape) * byteSize(dtype)
        return own(out)
      }
      const { tensor, buffer } = gpu.tensor(dtype, shape)
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
        gpu.copyRows(buffer, dstLayout, to, bufferOf(src), srcLayout, from, byteSize(dtype))
        if (leaf.init.kind !== "zeros") gpu.fill(buffer, shape, dtype, fresh, leaf)
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
      if (isGpu(dst) !== isGpu(src)) {
        throw new StructureMismatchError({
          path: leaf.path,
          expected: `rows on the ${dst.location} tensor's device`,
          actual: `rows of a ${src.location} tensor`,
        })
      }
      if (!isGpu(dst)) {
        scatterRowsTyped(dst.data as HostData, dstLayout, rows, src.data as HostData, srcLayout)
        counters.copied += rows.length * srcLayout.outer * srcLayout.inner * byteSize(dtype)
        return
      }
      const srcRows = rows.map((_, i) => i)
      gpu.copyRows(
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
        counters.copied += rows.length * layout.outer * layout.inner * byteSize(dtype)
        return
      }
      gpu.fill(bufferOf(t), t.dims, dtype, rows, leaf)
    },
    adopt(held, next, leaf) {
      if (leaf.host && isGpu(next)) {
        // Thrown before anything is freed: core reports it as a BackendError, state unchanged.
        throw new StructureMismatchError({
          path: leaf.path,
          expected: "a cpu tensor (a host bookkeeping leaf)",
          actual: "a gpu-buffer tensor",
        })
      }
      free(held)
      return own(next)
    },
    writeAt(dst, axis, offsets, src, leaf) {
      const dtype = dtypeOfOrt(dst.type)
      if (isGpu(dst) !== isGpu(src)) {
        throw new StructureMismatchError({
          path: leaf.path,
          expected: `a block on the ${dst.location} tensor's device`,
          actual: `a block of a ${src.location} tensor`,
        })
      }
      if (!isGpu(dst)) {
        writeBlockTyped(
          dst.data as HostData,
          dst.dims,
          axis,
          leaf.batchAxis,
          offsets,
          src.data as HostData,
          src.dims,
        )
        counters.copied += sizeOf(src.dims) * byteSize(dtype)
        return
      }
      const from: number[] = []
      const to: number[] = []
      const counts: number[] = []
      forEachBlockSpan(dst.dims, axis, leaf.batchAxis, offsets, src.dims, (f, t, c) => {
        from.push(f)
        to.push(t)
        counts.push(c)
      })
      gpu.copySpans(bufferOf(dst), bufferOf(src), from, to, counts, byteSize(dtype))
    },
    toHost(t) {
      const dtype = dtypeOfOrt(t.type)
      if (!isGpu(t)) {
        const data = (t.data as HostData).slice() as HostData
        return Promise.resolve(new HostTensor(dtype, t.dims, data as HostTensor["data"]))
      }
      return gpu.toHost(t, dtype)
    },
    fromHost(host, leaf) {
      const data = (host.data as HostData).slice() as HostData
      counters.copied += data.byteLength
      if (!onGpu || leaf.host) return own(cpuTensor(host.dtype, host.shape, data))
      return own(gpu.fromHost(host.dtype, host.shape, data))
    },
    reorder(t: OrtTensor, rows: readonly number[], leaf: LeafContext) {
      const layout = rowLayout(t.dims, leaf.batchAxis)
      const bytes = byteSize(dtypeOfOrt(t.type))
      if (isGpu(t)) {
        // Through the backend's scratch buffer, on the device: nothing read back, no buffer
        // made once the scratch is large enough.
        gpu.reorder(bufferOf(t), layout, rows, bytes)
        return
      }
      const copies = reorderRowsTyped(t.data as HostData, layout, rows)
      counters.copied += copies * layout.outer * layout.inner * bytes
    },
    view(src, start, count, leaf) {
      // Only where the rows are one run of memory (every dim before the batch axis is 1), counted
      // nowhere, freed as a wrapper. On the CPU a subarray of the same array; on the GPU the
      // same buffer, read as the tensor of its first rows (a runtime's GPU tensor starts at its
      // buffer's start: rows further in cannot be shared).
      const dims = src.dims
      let row = 1
      for (let a = 0; a < dims.length; a++) {
        const d = dims[a] as number
        if (a < leaf.batchAxis && d !== 1) return undefined
        if (a > leaf.batchAxis) row *= d
      }
      const shape = [...dims]
      shape[leaf.batchAxis] = count
      if (isGpu(src)) {
        if (start !== 0) return undefined
        return ort.Tensor.fromGpuBuffer(src.gpuBuffer as common.Tensor.GpuBufferType, {
          dataType: src.type as "float32",
          dims: shape,
        })
      }
      const data = src.data as Float32Array
      return new ort.Tensor(
        src.type as "float32",
        data.subarray(start * row, (start + count) * row),
        shape,
      )
    },
    dispose(t) {
      free(t)
    },
    // The sessions made over this backend check again: proxy mode turned on since.
    [PROXY_CHECK]: () => proxyRefusal(ort),
    liveTensors: () => live.length,
    liveGpuBuffers: () => counters.gpuBuffers,
    bytesCopied: () => counters.copied,
  }
  return backend
}
