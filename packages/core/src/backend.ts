/*
 * The backend contract: everything a backend author must know is in this file.
 *
 * A backend stores state leaves as its own tensor type `T` and gives core the primitives of
 * `StateBackend`. Core builds `StateSaver` and `StateStore` on them (validation, ownership,
 * snapshots, eviction), so a backend never reimplements those. Core validates every input before
 * a primitive sees it, and a primitive may rely on what its doc comment says core guarantees.
 *
 * Run `describeBackendConformance` from `@statesaver/core/testing` to check a backend against
 * every rule below; docs/writing-a-backend.md walks through writing one.
 */
import type { DType, HostTensor } from "./host-tensor.js"
import type { Init } from "./state-spec.js"

/**
 * Shape and dtype of a backend tensor, as `describe` reports them.
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
  /** The axis of the leaf's shape that holds the rows; not always 0 (ONNX LSTM state: axis 1). */
  readonly batchAxis: number
  /**
   * The value a fresh row starts with, already checked against the leaf's dtype when the spec
   * was resolved. `zeros`; `constant` (a number, or a bigint for int64: convert with `BigInt`
   * and never through a double; float16 takes the number, rounded to half precision); or
   * `tensor`, a `HostTensor` of the leaf's dtype holding ONE row: the leaf's shape without the
   * batch axis.
   */
  readonly init: Init
  /**
   * True for a bookkeeping leaf (`LeafSpec.host`): a session reads and writes its data on the
   * CPU every step, so a backend whose tensors live on a device keeps this leaf in host memory
   * (onnxruntime: a `"cpu"` tensor; the host backend holds everything there). Every primitive
   * still handles it; rows move between host tensors of this leaf only.
   */
  readonly host?: boolean
}

/**
 * What a backend declares it can do; the conformance kit tests what is declared.
 *
 * @category backend
 * @since 0.1.0
 */
export interface BackendCapabilities {
  /**
   * dtypes the backend stores; `"float32"` is required. A spec with another dtype is refused
   * with a `DTypeMismatchError` before any primitive runs, so primitives only ever see these.
   * Declaring `"int64"` means storing it exactly, beyond 2**53 (`BigInt64Array` on the host,
   * never a double in between); `"float16"` travels as raw 16-bit words, `"bool"` as 0/1 bytes.
   */
  readonly dtypes: readonly DType[]
  /** True when tensors live on an accelerator and every row operation stays there. */
  readonly onDevice: boolean
}

/**
 * The plugin contract: primitives over a backend's tensor type `T`. Core builds `StateSaver`
 * and `StateStore` on top of them; a backend never reimplements those. `In` is what `save` and
 * `scatter` also accept besides `T` (tfjs holds `tf.Variable`s and takes any `tf.Tensor`).
 *
 * **What counts as a tensor.** Core walks state trees itself, before any primitive runs: every
 * array is a tuple of subtrees and every plain record (prototype `Object.prototype` or `null`) is
 * a record of subtrees; anything else is a leaf (`isDefaultLeaf`). So `T` and `In` must be
 * class instances (or other non-plain objects), never arrays nor plain objects. **A backend whose
 * tensors are plain objects (`{ data, shape }`) cannot work**: core would walk into them as
 * subtrees and refuse every save with a `StructureMismatchError`. Wrap such values in a class.
 *
 * **Synchronous.** Every primitive but `toHost` is synchronous: it returns its result, never a
 * promise, and never waits. That is what keeps every backend's hot path (save, reset, select,
 * gather, scatter) free of awaits.
 *
 * **Rows.** Rows are always along `leaf.batchAxis`, and row indices reach a primitive already
 * checked: integers in range, and the exact properties each primitive lists below.
 *
 * **Ownership.** Core owns the tensors it holds and frees each exactly once with `dispose`. It
 * never touches a tensor after freeing it, nor after handing it to an `adopt` that returned
 * another one. A primitive must not keep a reference to a tensor it was given beyond its call.
 *
 * **Throwing.** A primitive throws only for a real failure (out of memory, a lost device): the
 * inputs core promises are already checked. Core catches the throw (or `toHost`'s rejection)
 * and returns it as a `BackendError` naming the backend, the primitive (`operation`), the leaf
 * (`path`) and the thrown value (`cause`), as the call's `Left`, never as an exception. Tensors
 * core built for the failed call are freed. After a throw from a primitive that builds
 * (`allocate`, `gather`, `fromHost`, `toHost`) the state is unchanged; after a throw from one
 * that writes in place (`scatter`, `fill`, `adopt`), leaves handled before the failing one may
 * keep their change, so a primitive must throw before it changes anything it was given.
 * `describe` must not throw, and a throwing `dispose` is ignored: see those.
 *
 * @example
 * const backend: StateBackend<HostTensor> = hostBackend()
 * const saver = orThrow(createStateSaver({ spec: lstmSpec([8]), backend, batchSize: 4 }))
 * @category backend
 * @since 0.1.0
 */
export interface StateBackend<T, In = T> {
  /** Shown in errors (`BackendError.backend`, dtype refusals). */
  readonly name: string
  readonly capabilities: BackendCapabilities
  /**
   * Shape and dtype of `x` when it is a live tensor of this backend, else `undefined`: for a
   * disposed tensor, and for anything that is not its own (numbers, strings, arrays, plain
   * objects that look like a tensor, another framework's tensors). Core calls it on every leaf a
   * user passes to `save` and `scatter`: it is how core tells a tensor from a mistake, and an
   * answer for a disposed tensor would let core adopt freed memory. May throw a `StateError` for
   * one of its own tensors that is corrupt (the host backend does, for a `HostTensor` whose data
   * disagrees with its shape); core reports a throw as a `BackendError` naming the leaf, with the
   * thrown value as `cause` (`reset()` returns it; `dims()`, which returns a
   * plain value, throws it).
   */
  describe(x: unknown): TensorInfo | undefined
  /**
   * A new tensor of `shape` and `dtype` whose every row is `leaf.init`. `shape` has the batch
   * size at `leaf.batchAxis` (at least 1) and may have 0-sized axes: a growing named dim (a KV
   * cache's `seq`) starts at 0.
   */
  allocate(shape: readonly number[], dtype: DType, leaf: LeafContext): T
  /**
   * A new tensor whose row `i` is row `rows[i]` of `src`, or `leaf.init` where `rows[i]` is
   * `null`. `rows` is not empty; its entries may repeat and come in any order. `src` may have
   * 0-sized axes (an empty KV cache): the result has `src`'s shape with `rows.length` at the
   * batch axis all the same. The result never
   * shares memory with `src`, even when `rows` is `[0, 1, ..., n-1]`: core copies a leaf this way
   * and then writes to one copy or frees the other. `src` is left unchanged and alive.
   */
  gather(src: T, rows: readonly (number | null)[], leaf: LeafContext): T
  /**
   * Writes row `i` of `src` into row `rows[i]` of `dst`, in place. `rows` is distinct and in
   * range of `dst` but not necessarily sorted; `rows.length` is `src`'s batch size; `src` has
   * `dst`'s dtype and every other dim of `dst` (core checked it with `describe`). `src` may be
   * an `In`. Do not keep `src`: core frees it after the call.
   */
  scatter(dst: T, rows: readonly number[], src: T | In, leaf: LeafContext): void
  /**
   * Sets rows `rows` of `t` to `leaf.init`, in place. `rows` is sorted ascending, distinct, in
   * range and not empty; it may be every row.
   */
  fill(t: T, rows: readonly number[], leaf: LeafContext): void
  /**
   * Makes `next` the leaf's value in place of `held` and returns the tensor the saver holds from
   * now on. `next` is never `held`, was checked with `describe` (dtype, batch size, fixed dims;
   * a growing named dim may differ from `held`'s), and may be an `In`. Either return `next`
   * itself and free `held`, or update `held` from `next` and free `next`, or return a new tensor
   * and free both (tfjs, when a variable cannot change shape): after the call core owns only
   * the returned tensor, and the backend has freed whatever of `held` and `next` it did not return.
   * If `adopt` throws, core takes both as untouched: `held` stays the leaf's value and `next`
   * stays with its owner, so throw before freeing either.
   */
  adopt(held: T, next: T | In, leaf: LeafContext): T
  /**
   * A copy of `t` in host memory: a `HostTensor` of `t`'s dtype and shape. The only asynchronous
   * primitive. The copy must be taken, or its transfer queued ahead of any later write, before
   * `toHost` returns its promise (before its first `await`): core starts every leaf's copy, then
   * allows `reset`, `save`, `select` and `dispose` while the snapshot is pending, which may fill,
   * overwrite or free `t` at once. Do not free `t`.
   */
  toHost(t: T): Promise<HostTensor>
  /**
   * A new tensor holding a copy of `host` (its dtype and shape). Copy the data: never keep
   * `host.data` nor a view of it, since the caller may reuse or change that array afterwards.
   */
  fromHost(host: HostTensor, leaf: LeafContext): T
  /**
   * Optional: writes `src` into `dst` in place along `axis` at a per-row offset. For each row `r`
   * of `dst` (along `leaf.batchAxis`), positions `offsets[r]` to `offsets[r] + k - 1` along
   * `axis` take positions `0` to `k - 1` of row `r` of `src`, where `k` is `src`'s size along
   * `axis`: how a fixed-capacity KV cache `[batch, heads, capacity, dim]` takes one step's keys
   * `[batch, heads, k, dim]` at each row's length. The caller checked: `axis` is not the batch
   * axis; `src` has `dst`'s dtype and shape but along `axis`; `offsets` has one integer per row,
   * each with `offsets[r] + k <= ` the size of `axis`. Positions outside the block keep their
   * values. `src` may be an `In`; do not keep it. A device backend copies on the device (no
   * read-back). A backend without it cannot hold a fixed-capacity cache; `writeBlockTyped`
   * does the work for typed-array data.
   */
  writeAt?(dst: T, axis: number, offsets: readonly number[], src: T | In, leaf: LeafContext): void
  /**
   * Optional. A tensor sharing rows `start` to `start + count - 1` of `src` (along
   * `leaf.batchAxis`) without a copy, or `undefined` when the backend cannot share them (rows
   * that are not one contiguous run of `src`'s memory, as when a dim before the batch axis is
   * larger than 1; rows from `start > 0` of device memory, which a runtime's tensor shows only
   * from its start). Writes through it change `src`. Core disposes it with `dispose`, which
   * must free nothing of `src`, before `src` itself is freed (a store may keep a view given back
   * to it and hand it out again for the same rows). A `StateStore` uses it for
   * `gather(keys, { views: true })`, so that a step over streams held side by side copies no
   * state out of the store and back.
   */
  view?(src: T, start: number, count: number, leaf: LeafContext): T | undefined
  /**
   * Optional. Replaces the rows of `t` in place so that row `i` holds what row `rows[i]` held:
   * `gather` into `t`'s own memory. `rows` has exactly `t`'s batch size of entries, each an
   * integer in range and never `null`; they may repeat (a row duplicated, another dropped) and
   * come in any order. Core uses it for `StateSaver.select` when the batch size stays the same
   * and no row is fresh, on tensors the saver holds, so a beam search's step allocates nothing
   * (a growing KV cache is a new size every step: no freed array fits it). A backend offers it
   * only when it can do it for every tensor it holds (onnxruntime: CPU tensors in their arrays,
   * WebGPU buffers through a scratch buffer). It must throw before it changes anything: core reorders
   * leaf after leaf, and a throw leaves the leaves before it reordered. `reorderRowsTyped` does
   * the work for typed-array data.
   */
  reorder?(t: T, rows: readonly number[], leaf: LeafContext): void
  /**
   * Frees `t`: a tensor core owned (held, a temporary of its own, or one given to `scatter`).
   * Core calls it exactly once per such tensor; never for the tensors it hands to `adopt`,
   * unless `adopt` threw.
   * If `dispose` throws, core ignores it: every call goes through one helper
   * (`disposeQuietly`) that swallows the throw, reports nothing, and counts the tensor as freed,
   * so a failed free shows only as a leak in the backend's live-tensor count. The conformance
   * kit sees what core does not: it records every dispose and fails a test on a double free, on
   * a dispose of a tensor given to a successful `adopt`, and on a `dispose` that throws.
   */
  dispose(t: T | In): void
}

/**
 * The tensor type `T` of a backend type.
 *
 * @example
 * type Held = TensorOf<HostBackend> // HostTensor
 * @category backend
 * @since 0.1.0
 */
export type TensorOf<B> = B extends StateBackend<infer T, infer _In> ? T : never

/**
 * What a backend's `save` and `scatter` also accept, `In` (tfjs: `tf.Tensor`); `T` when the
 * backend takes only its own tensors.
 *
 * @example
 * type Given = InputOf<HostBackend> // HostTensor
 * @category backend
 * @since 0.2.0
 */
export type InputOf<B> = B extends StateBackend<infer _T, infer In> ? In : never
