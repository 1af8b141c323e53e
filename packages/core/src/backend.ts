import type { DType, HostTensor } from "./host-tensor.js"
import type { Init } from "./state-spec.js"

/**
 * Shape and dtype of a backend tensor.
 *
 * @category backend
 * @since 0.1.0
 */
export interface TensorInfo {
  readonly shape: readonly number[]
  readonly dtype: DType
}

/**
 * What a backend primitive is told about the leaf it works on.
 *
 * @category backend
 * @since 0.1.0
 */
export interface LeafContext {
  /** The leaf's path as printed in errors (`[1].c`); tfjs names its variables after it. */
  readonly path: string
  /** The axis of the leaf's shape that holds the rows. */
  readonly batchAxis: number
  /** The value a fresh row starts with. `init.kind === "tensor"` holds one row's shape. */
  readonly init: Init
}

/**
 * What a backend declares it can do; the conformance kit tests what is declared.
 *
 * @category backend
 * @since 0.1.0
 */
export interface BackendCapabilities {
  /** dtypes the backend stores. A spec with another dtype is refused with a `DTypeMismatchError`. */
  readonly dtypes: readonly DType[]
  /** True when tensors live on an accelerator and every row operation stays there. */
  readonly onDevice: boolean
}

/**
 * The plugin contract: primitives over a backend's tensor type `T`. Core builds `StateSaver`
 * and `StateStore` on top of them; a backend never reimplements those. Every primitive is
 * synchronous but `toHost`. A primitive may throw: core turns the throw into a `BackendError`
 * naming the leaf. Rows are always along `leaf.batchAxis`, and row indices are already checked.
 * `In` is what `save` and `scatter` also accept besides `T` (tfjs: any `tf.Tensor`, kept as a
 * `tf.Variable`).
 *
 * @example
 * const backend: StateBackend<HostTensor> = hostBackend()
 * const saver = orThrow(createStateSaver({ spec, backend, batchSize: 8 }))
 * @category backend
 * @since 0.1.0
 */
export interface StateBackend<T, In = T> {
  /** Shown in errors. */
  readonly name: string
  readonly capabilities: BackendCapabilities
  /** Shape and dtype of `x` when it is a live tensor of this backend; `undefined` otherwise. */
  describe(x: unknown): TensorInfo | undefined
  /** A new tensor of `shape` whose every row is `leaf.init`. */
  allocate(shape: readonly number[], dtype: DType, leaf: LeafContext): T
  /** A new tensor whose row `i` is row `rows[i]` of `src`, or `leaf.init` where `rows[i]` is null. */
  gather(src: T, rows: readonly (number | null)[], leaf: LeafContext): T
  /** Writes row `i` of `src` into row `rows[i]` of `dst`, in place. `rows` has no duplicates. */
  scatter(dst: T, rows: readonly number[], src: T | In, leaf: LeafContext): void
  /** Sets rows `rows` of `t` to `leaf.init`, in place. */
  fill(t: T, rows: readonly number[], leaf: LeafContext): void
  /**
   * Makes `next` the leaf's value in place of `held` (never the same object) and returns the
   * tensor the saver holds from now on: `next` itself (freeing `held`), or `held` updated
   * from `next` (freeing `next`). Either way, exactly one of them stays alive.
   */
  adopt(held: T, next: T | In, leaf: LeafContext): T
  /** Copies `t` to host memory. The only asynchronous primitive. */
  toHost(t: T): Promise<HostTensor>
  /** A new tensor holding a copy of `host`. */
  fromHost(host: HostTensor, leaf: LeafContext): T
  /** Frees `t`: a tensor core owned (held, or given to `scatter`). Called once per tensor. */
  dispose(t: T | In): void
}

/**
 * The tensor type of a backend.
 *
 * @category backend
 * @since 0.1.0
 */
export type TensorOf<B> = B extends StateBackend<infer T> ? T : never
