import { forEachBlockSpan } from "./block-rows.js"
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
 * which every gather and scatter between a slab and a batch would hit. Recorded in `mine`, the
 * buffers a host backend allocated and so may pool.
 */
// Stryker disable next-line BlockStatement: without `fresh`, HostTensor allocates its own zeroed, unpadded, never pooled array (only slower)
function fresh(dtype: DType, length: number, mine: WeakSet<HostData>): HostData {
  const bytes = length * dtypeByteSize(dtype)
  const data =
    // Stryker disable next-line ConditionalExpression,EqualityOperator: padding a buffer or not changes where it lies in memory (the copy speed), never its elements
    bytes < 4096
      ? allocateData(dtype, length)
      : new (arrayOf(dtype) as Float32ArrayConstructor)(new ArrayBuffer(bytes + 64), 0, length)
  // Stryker disable next-line CallExpression: a buffer left out of `mine` is never pooled, so later tensors allocate anew (only slower)
  mine.add(data)
  return data
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
 * `t`, or the typed error that refuses it when its parts disagree (`ShapeMismatchError`,
 * `DTypeMismatchError`): a detached buffer, or a subclass or look-alike object whose `data` was
 * swapped. `HostTensor`s themselves are frozen and checked when built.
 */
function consistent(t: HostTensor): HostTensor {
  const bad = checkTensor(t.dtype, t.shape, t.data, WHERE)
  if (bad) throw bad
  return t
}

/** `t`, or a `DisposedError` for a tensor a host backend disposed. */
function live(t: HostTensor): HostTensor {
  if (isHostTensorDisposed(t)) throw new DisposedError({ what: "HostTensor" })
  return t
}

/**
 * Creates a host backend: state in typed arrays, row operations as `TypedArray.set` / `fill`
 * over the rows touched. Freed buffers it allocated are pooled and reused, so a tensor must not
 * be read after the saver replaced it (the state is borrowed until the next mutation).
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
  // Stryker disable next-line LogicalOperator,ArithmeticOperator: the pool's byte limit decides how many freed buffers are kept for reuse, never what a tensor holds
  const poolLimit = options.poolBytes ?? 64 * 1024 * 1024
  const held = new Set<HostTensor>()
  // Freed buffers by dtype and length, for reuse. Only buffers this backend allocated are kept:
  // a caller's array may be a view of a larger buffer, which pooling would keep alive.
  const pool = new Map(DTYPES.map((d) => [d, new Map<number, HostData[]>()]))
  const mine = new WeakSet<HostData>()
  let pooled = 0
  // Row views per buffer; buffers come back from the pool, and their views with them.
  const views = new WeakMap<HostData, HostData[]>()

  const own = (t: HostTensor): HostTensor => {
    held.add(t)
    return t
  }
  // Not zeroed: every caller writes every element.
  const make = (shape: readonly number[], dtype: DType): HostTensor => {
    const length = sizeOf(shape)
    const reused = (pool.get(dtype) as Map<number, HostData[]>).get(length)?.pop()
    // Stryker disable next-line AssignmentOperator,LogicalOperator: the pool's byte count only decides when the pool is full, never what a tensor holds
    pooled -= reused?.byteLength ?? 0
    return new HostTensor(
      dtype,
      shape,
      (reused ?? fresh(dtype, length, mine)) as HostTensor["data"],
    )
  }
  const release = (t: HostTensor): void => {
    held.delete(t)
    if (isHostTensorDisposed(t)) return
    markHostTensorDisposed(t)
    const data = t.data as HostData
    const bySize = pool.get(t.dtype) as Map<number, HostData[]>
    const free = bySize.get(data.length) ?? []
    // Stryker disable next-line all: which freed buffers are kept for reuse decides how often memory is allocated, never what a tensor holds
    if (!mine.has(data) || free.length >= PER_SIZE || pooled + data.byteLength > poolLimit) return
    // Stryker disable next-line CallExpression: a buffer not pooled is allocated anew when next needed (only slower)
    free.push(data)
    // Stryker disable next-line CallExpression: a buffer not pooled is allocated anew when next needed (only slower)
    bySize.set(data.length, free)
    // Stryker disable next-line AssignmentOperator: the pool's byte count only decides when the pool is full, never what a tensor holds
    pooled += data.byteLength
  }
  // Stryker disable next-line BlockStatement: without cached row views, the same rows are copied through new views (only slower)
  const viewsOf = (data: HostData, layout: RowLayout): HostData[] | undefined => {
    // Worth it only for small rows (creating a view costs more than copying them) of small
    // tensors (a store's slab of many thousand rows would keep a view per row alive).
    // Stryker disable next-line all: whether row views are cached changes only how rows are copied (speed and memory), never which
    if (layout.inner > 16 * 1024 || layout.outer * layout.rows > 4096) return undefined
    // View k is elements k * inner to (k + 1) * inner of `data`, whose length is count * inner:
    // the number of views alone tells whether they fit this layout (also when inner is 0).
    const cached = views.get(data)
    // Stryker disable next-line ConditionalExpression,EqualityOperator: a cache never read, or never filled (the first call returns no views), copies the same rows (only slower)
    if (cached?.length === layout.outer * layout.rows) return cached
    const v = rowViews(data, layout)
    // Stryker disable next-line CallExpression: without this entry the cache never matches, so views are made again on each call (only slower)
    views.set(data, v)
    return v
  }

  return {
    name: "host",
    capabilities: { dtypes: DTYPES, onDevice: false },
    describe(x: unknown): TensorInfo | undefined {
      if (!(x instanceof HostTensor) || isHostTensorDisposed(x)) return undefined
      return consistent(x)
    },
    allocate(shape, dtype, leaf: LeafContext) {
      const t = make(shape, dtype)
      const layout = rowLayout(shape, leaf.batchAxis)
      fillRowsTyped(t.data, layout, allRows(layout.rows), leaf.init, dtype)
      return own(t)
    },
    gather(src, rows, leaf) {
      const { data, dtype } = live(src)
      const shape = [...src.shape]
      shape[leaf.batchAxis] = rows.length
      const dst = make(shape, dtype)
      const srcLayout = rowLayout(src.shape, leaf.batchAxis)
      gatherRowsTyped(
        dst.data,
        rowLayout(shape, leaf.batchAxis),
        data,
        srcLayout,
        rows,
        leaf.init,
        dtype,
        viewsOf(data, srcLayout),
      )
      return own(dst)
    },
    scatter(dst, rows, src, leaf) {
      const to = live(dst)
      const { data, shape } = live(src)
      const srcLayout = rowLayout(shape, leaf.batchAxis)
      scatterRowsTyped(
        to.data,
        rowLayout(to.shape, leaf.batchAxis),
        rows,
        data,
        srcLayout,
        viewsOf(data, srcLayout),
      )
    },
    fill(t, rows, leaf) {
      const { data, shape, dtype } = live(t)
      fillRowsTyped(data, rowLayout(shape, leaf.batchAxis), rows, leaf.init, dtype)
    },
    writeAt(dst, axis, offsets, src, leaf) {
      const to = live(dst)
      const from = live(src)
      // writeBlockTyped, inline: one function fewer in every bundle that holds the host backend.
      forEachBlockSpan(to.shape, axis, leaf.batchAxis, offsets, from.shape, (f, t, c) =>
        (to.data as Float32Array).set((from.data as Float32Array).subarray(f, f + c), t),
      )
    },
    adopt(current, next) {
      const kept = live(next)
      release(current)
      return own(kept)
    },
    toHost(t) {
      const { data, shape, dtype } = consistent(live(t))
      return Promise.resolve(
        new HostTensor(dtype, shape, (data as HostData).slice() as typeof data),
      )
    },
    fromHost(host) {
      const { data, shape, dtype } = consistent(live(host))
      const t = make(shape, dtype)
      ;(t.data as Float32Array).set(data as Float32Array)
      return own(t)
    },
    dispose(t) {
      release(t)
    },
    liveTensors: () => held.size,
    pooledBytes: () => pooled,
  }
}
