import type { LeafContext, StateBackend, TensorInfo } from "./backend.js"
import { DTYPES, HostTensor, type HostData, allocateData, sizeOf } from "./host-tensor.js"
import { fillRowsTyped, gatherRowsTyped, rowLayout, scatterRowsTyped } from "./typed-rows.js"

/**
 * The host backend: `HostTensor`s (typed arrays). Adds `liveTensors()`, the number of tensors it
 * allocated or adopted and has not disposed, for leak tests.
 *
 * @category backend
 * @since 0.1.0
 */
export interface HostBackend extends StateBackend<HostTensor> {
  liveTensors(): number
}

/**
 * Creates a host backend: state in typed arrays, row operations as `TypedArray.set` / `fill`
 * over the rows touched. The reference backend, and the default for CPU-only use.
 *
 * @example
 * const saver = orThrow(createStateSaver({ spec: lstmSpec([64]), backend: hostBackend(), batchSize: 4 }))
 * @category backend
 * @since 0.1.0
 */
export function hostBackend(): HostBackend {
  const live = new Set<HostTensor>()
  const disposed = new WeakSet<HostTensor>()
  const own = (t: HostTensor): HostTensor => {
    live.add(t)
    return t
  }
  const make = (shape: readonly number[], dtype: HostTensor["dtype"]): HostTensor =>
    new HostTensor(dtype, shape, allocateData(dtype, sizeOf(shape)))
  return {
    name: "host",
    capabilities: { dtypes: DTYPES, onDevice: false },
    describe(x: unknown): TensorInfo | undefined {
      if (!(x instanceof HostTensor) || disposed.has(x)) return undefined
      return x
    },
    allocate(shape, dtype, leaf: LeafContext) {
      const t = make(shape, dtype)
      if (leaf.init.kind !== "zeros") {
        const layout = rowLayout(shape, leaf.batchAxis)
        const all = Array.from({ length: layout.rows }, (_, i) => i)
        fillRowsTyped(t.data, layout, all, leaf.init, dtype)
      }
      return own(t)
    },
    gather(src, rows, leaf) {
      const shape = [...src.shape]
      shape[leaf.batchAxis] = rows.length
      const dst = make(shape, src.dtype)
      gatherRowsTyped(
        dst.data,
        rowLayout(shape, leaf.batchAxis),
        src.data,
        rowLayout(src.shape, leaf.batchAxis),
        rows,
        leaf.init,
        src.dtype,
      )
      return own(dst)
    },
    scatter(dst, rows, src, leaf) {
      scatterRowsTyped(
        dst.data,
        rowLayout(dst.shape, leaf.batchAxis),
        rows,
        src.data,
        rowLayout(src.shape, leaf.batchAxis),
      )
    },
    fill(t, rows, leaf) {
      fillRowsTyped(t.data, rowLayout(t.shape, leaf.batchAxis), rows, leaf.init, t.dtype)
    },
    adopt(held, next) {
      live.delete(held)
      disposed.add(held)
      return own(next)
    },
    toHost(t) {
      const data = (t.data as HostData).slice() as typeof t.data
      return Promise.resolve(new HostTensor(t.dtype, t.shape, data))
    },
    fromHost(host) {
      const data = (host.data as HostData).slice() as typeof host.data
      return own(new HostTensor(host.dtype, host.shape, data))
    },
    dispose(t) {
      live.delete(t)
      disposed.add(t)
    },
    liveTensors: () => live.size,
  }
}
