import type { LeafContext, StateBackend, TensorInfo } from "./backend.js"
import { DisposedError } from "./errors.js"
import {
  DTYPES,
  type DType,
  HostTensor,
  type HostData,
  allocateData,
  dtypeByteSize,
  isHostTensorDisposed,
  markHostTensorDisposed,
  sizeOf,
} from "./host-tensor.js"
import { allRows } from "./internal/checks.js"
import { arrayOf, checkTensor } from "./internal/dtype-values.js"
import {
  type RowLayout,
  fillRowsTyped,
  gatherRowsTyped,
  rowLayout,
  scatterRowsTyped,
} from "./typed-rows.js"
import { rowViews } from "./internal/row-views.js"

/**
 * A zeroed array of `length` elements. Large ones get 64 spare bytes at the end: back-to-back
 * heap blocks whose size is a multiple of 4 KiB sit 16 bytes past a page multiple from each other,
 * and glibc's `rep movsb` copy on x86 runs ~15x slower at exactly that distance (4K aliasing),
 * which every gather and scatter between a slab and a batch would hit.
 */
function fresh(dtype: DType, length: number, padded: WeakSet<ArrayBufferLike>): HostData {
  const bytes = length * dtypeByteSize(dtype)
  if (bytes < 4096) return allocateData(dtype, length)
  const buffer = new ArrayBuffer(bytes + 64)
  padded.add(buffer)
  return new (arrayOf(dtype) as Float32ArrayConstructor)(buffer, 0, length)
}

/**
 * The host backend: `HostTensor`s (typed arrays). Adds `liveTensors()`, the number of tensors it
 * allocated or adopted and has not disposed, for leak tests.
 *
 * @category backend
 * @since 0.1.0
 */
export interface HostBackend extends StateBackend<HostTensor> {
  liveTensors(): number
  /** Bytes held by the buffer pool for reuse. */
  pooledBytes(): number
}

/**
 * Options of `hostBackend`.
 *
 * @category backend
 * @since 0.1.0
 */
export interface HostBackendOptions {
  /**
   * Bytes of freed buffers kept for reuse by the next allocation of the same size, so that a
   * steady `select` loop does not allocate. Default 64 MiB; 0 turns pooling off.
   */
  readonly poolBytes?: number
}

const PER_SIZE = 4
// Disposal is recorded on the tensor (`markHostTensorDisposed`), so a tensor disposed by one host
// backend is dead for all (its buffer may be pooled and reused).
const WHERE = "host backend: a HostTensor with inconsistent data"

/**
 * Throws the typed error that refuses `t` when its parts disagree (`ShapeMismatchError`,
 * `DTypeMismatchError`): a detached buffer, or a subclass or look-alike object whose `data` was
 * swapped. `HostTensor`s themselves are frozen and checked when built.
 */
function checkConsistent(t: HostTensor): void {
  const bad = checkTensor(t.dtype, t.shape, t.data, WHERE)
  if (bad) throw bad
}

/** Throws a `DisposedError` for a tensor a host backend disposed. */
function checkLive(t: HostTensor): void {
  if (isHostTensorDisposed(t)) throw new DisposedError({ what: "HostTensor" })
}

/**
 * Creates a host backend: state in typed arrays, row operations as `TypedArray.set` / `fill`
 * over the rows touched. Freed buffers are pooled and reused, so a tensor must not be read
 * after the saver replaced it (the state is borrowed until the next mutation).
 *
 * `describe` returns `undefined` for a disposed tensor and throws a `ShapeMismatchError` or
 * `DTypeMismatchError` for a tensor whose `data` disagrees with its dtype and shape (a detached
 * buffer, a look-alike object), which core reports as a `BackendError` naming the leaf. The
 * other primitives throw a `DisposedError` when given a disposed tensor.
 *
 * @example
 * const saver = orThrow(createStateSaver({ spec: lstmSpec([64]), backend: hostBackend(), batchSize: 4 }))
 * @category backend
 * @since 0.1.0
 */
export function hostBackend(options: HostBackendOptions = {}): HostBackend {
  const poolLimit = options.poolBytes ?? 64 * 1024 * 1024
  const live = new Set<HostTensor>()
  const pool = new Map<DType, Map<number, HostData[]>>()
  let pooled = 0
  // Row views per buffer and layout; buffers come back from the pool, and their views with them.
  const views = new WeakMap<HostData, { layout: RowLayout; views: HostData[] }>()

  const own = (t: HostTensor): HostTensor => {
    live.add(t)
    return t
  }
  // Buffers this backend padded (see `fresh`): their views are shorter than the buffer.
  const padded = new WeakSet<ArrayBufferLike>()
  const take = (dtype: DType, length: number, zero: boolean): HostData => {
    const data = pool.get(dtype)?.get(length)?.pop()
    if (!data) return fresh(dtype, length, padded)
    pooled -= data.byteLength
    if (zero) (data as Float32Array).fill(dtype === "int64" ? (0n as never) : 0)
    return data
  }
  const release = (t: HostTensor): void => {
    live.delete(t)
    if (isHostTensorDisposed(t)) return
    markHostTensorDisposed(t)
    const data = t.data as HostData
    if (data.byteLength === 0 || pooled + data.byteLength > poolLimit) return
    if (
      data.byteOffset !== 0 ||
      !(data.byteLength === data.buffer.byteLength || padded.has(data.buffer))
    )
      return
    let bySize = pool.get(t.dtype)
    if (!bySize) pool.set(t.dtype, (bySize = new Map()))
    let free = bySize.get(data.length)
    if (!free) bySize.set(data.length, (free = []))
    if (free.length >= PER_SIZE || free.includes(data)) return
    free.push(data)
    pooled += data.byteLength
  }
  const make = (shape: readonly number[], dtype: DType, zero: boolean): HostTensor =>
    new HostTensor(dtype, shape, take(dtype, sizeOf(shape), zero) as HostTensor["data"])
  const viewsOf = (data: HostData, layout: RowLayout): HostData[] | undefined => {
    // Worth it only for small rows (creating a view costs more than copying them) of small
    // tensors (a store's slab of many thousand rows would keep a view per row alive).
    if (layout.inner * 4 > 64 * 1024 || layout.outer * layout.rows > 4096) return undefined
    const cached = views.get(data)
    const l = cached?.layout
    if (l && l.outer === layout.outer && l.rows === layout.rows && l.inner === layout.inner) {
      return cached?.views
    }
    const v = rowViews(data, layout)
    views.set(data, { layout, views: v })
    return v
  }

  return {
    name: "host",
    capabilities: { dtypes: DTYPES, onDevice: false },
    describe(x: unknown): TensorInfo | undefined {
      if (!(x instanceof HostTensor) || isHostTensorDisposed(x)) return undefined
      checkConsistent(x)
      return x
    },
    allocate(shape, dtype, leaf: LeafContext) {
      const t = make(shape, dtype, true)
      if (leaf.init.kind !== "zeros") {
        const layout = rowLayout(shape, leaf.batchAxis)
        fillRowsTyped(t.data, layout, allRows(layout.rows), leaf.init, dtype)
      }
      return own(t)
    },
    gather(src, rows, leaf) {
      checkLive(src)
      const shape = [...src.shape]
      shape[leaf.batchAxis] = rows.length
      // Every row of the result is written (copied or set to init): no need to zero it first.
      const dst = make(shape, src.dtype, false)
      const srcLayout = rowLayout(src.shape, leaf.batchAxis)
      gatherRowsTyped(
        dst.data,
        rowLayout(shape, leaf.batchAxis),
        src.data,
        srcLayout,
        rows,
        leaf.init,
        src.dtype,
        viewsOf(src.data, srcLayout),
      )
      return own(dst)
    },
    scatter(dst, rows, src, leaf) {
      checkLive(dst)
      checkLive(src)
      const srcLayout = rowLayout(src.shape, leaf.batchAxis)
      scatterRowsTyped(
        dst.data,
        rowLayout(dst.shape, leaf.batchAxis),
        rows,
        src.data,
        srcLayout,
        viewsOf(src.data, srcLayout),
      )
    },
    fill(t, rows, leaf) {
      checkLive(t)
      fillRowsTyped(t.data, rowLayout(t.shape, leaf.batchAxis), rows, leaf.init, t.dtype)
    },
    adopt(held, next) {
      checkLive(next)
      release(held)
      return own(next)
    },
    toHost(t) {
      checkLive(t)
      checkConsistent(t)
      const data = (t.data as HostData).slice() as typeof t.data
      return Promise.resolve(new HostTensor(t.dtype, t.shape, data))
    },
    fromHost(host) {
      checkLive(host)
      checkConsistent(host)
      const t = make(host.shape, host.dtype, false)
      ;(t.data as Float32Array).set(host.data as Float32Array)
      return own(t)
    },
    dispose(t) {
      release(t)
    },
    liveTensors: () => live.size,
    pooledBytes: () => pooled,
  }
}
