import type { LeafContext, StateBackend, TensorInfo } from "./backend.js"
import type { BackendError, DTypeMismatchError } from "./errors.js"
import {
  type BatchSizeMismatchError,
  DisposedError,
  OptionError,
  type RowIndexError,
  orThrow,
  type ShapeMismatchError,
  SnapshotFormatError,
  type SpecError,
  type TensorCheckError,
} from "./errors.js"
import type { HostTensor } from "./host-tensor.js"
import {
  RIGHT,
  type RowsInput,
  allRows,
  allocateLeaves,
  attempt,
  backendError,
  buildPerLeaf,
  checkLeaves,
  eachLeaf,
  checkSelection,
  checkTensors,
  contextOf,
  disposeQuietly,
  normalizeRows,
} from "./internal/checks.js"
import * as E from "./internal/either.js"
import { fail } from "./internal/fail.js"
import { isSize } from "./internal/predicates.js"
import { encodeState } from "./internal/encode.js"
import { leafShape } from "./internal/leaf-shape.js"
import { checkBackendOption, unsupportedDType } from "./internal/options.js"
import { checkSnapshot, toSnapshot } from "./internal/snapshot-check.js"
import type { Snapshot, SnapshotMetadata, SnapshotOptions } from "./snapshot.js"
import {
  type ResolvedLeaf,
  type ResolvedSpec,
  type SpecOptions,
  type StateSpec,
  resolveSpec,
} from "./state-spec.js"
import { type StateTree, unflatten } from "./state-tree.js"

export type { RowsInput } from "./internal/checks.js"
export { checkSnapshot } from "./internal/snapshot-check.js"

/**
 * Errors `createStateSaver` can return.
 *
 * @category saver
 * @since 0.2.0
 */
export type CreateSaverError = OptionError | SpecError | DTypeMismatchError | BackendError

/**
 * Errors `save` and `saveLeaves` can return.
 *
 * @category saver
 * @since 0.2.0
 */
export type SaveError = DisposedError | TensorCheckError

/**
 * Errors `reset` and `select` can return.
 *
 * @category saver
 * @since 0.2.0
 */
export type RowsError = DisposedError | RowIndexError | BackendError

/**
 * Errors `snapshot` can return.
 *
 * @category saver
 * @since 0.2.0
 */
export type SnapshotError = DisposedError | BackendError | SnapshotFormatError

/**
 * Errors `restore` can return: the bytes, their spec, or a leaf that does not fit.
 *
 * @category saver
 * @since 0.2.0
 */
export type RestoreError =
  | DisposedError
  | SnapshotFormatError
  | SpecError
  | DTypeMismatchError
  | ShapeMismatchError
  | BatchSizeMismatchError
  | BackendError

/**
 * Options of `createStateSaver`.
 *
 * @category saver
 * @since 0.1.0
 */
export interface StateSaverOptions<T, In = T> extends SpecOptions {
  readonly spec: StateSpec
  readonly backend: StateBackend<T, In>
  /** Rows in the batch; `select` may change it later. */
  readonly batchSize: number
}

/**
 * The state of one batch of rows, held by a backend. Every fallible call returns an `Either`
 * and leaves the state exactly as it was on `Left`.
 *
 * @category saver
 * @since 0.1.0
 */
export interface StateSaver<T, In = T> extends Disposable {
  readonly backend: StateBackend<T, In>
  readonly spec: ResolvedSpec
  /** Current number of rows. */
  readonly batchSize: number
  readonly disposed: boolean
  /**
   * The current state, borrowed: valid until the next `save`, `reset`, `select`, `restore` or
   * `dispose`. Throws `DisposedError` after `dispose`.
   */
  state(): StateTree<T>
  /**
   * Current sizes of the named dims other than the batch (a KV cache's `seq`). Throws
   * `DisposedError` after `dispose`.
   */
  dims(): Readonly<Record<string, number>>
  /**
   * Validates `next` against the spec and keeps it: the saver owns the given tensors from now on
   * and frees those it replaces. A leaf that is already the saver's is kept as is.
   */
  save(next: StateTree<T | In>): E.Either<SaveError, void>
  /**
   * The current leaves in spec order (`spec.leaves`), borrowed like `state()`: the fast path for
   * integrations that feed a model by leaf rather than by tree. Throws `DisposedError` after
   * `dispose`.
   */
  leaves(): readonly T[]
  /** `save` for leaves given in spec order (`spec.leaves`), with the same checks and ownership. */
  saveLeaves(next: readonly (T | In)[]): E.Either<SaveError, void>
  /**
   * Sets rows back to their init now, before the next step reads them: all rows (and named dims
   * back to their starting size) when `rows` is absent, else the given indices or mask.
   */
  reset(rows?: RowsInput): E.Either<RowsError, void>
  /**
   * Replaces the batch with rows gathered from it: drop, reorder, duplicate; `null` makes a
   * fresh init row. The batch size becomes `rows.length`. When it stays the same, no entry is
   * `null` and the backend has `reorder` (onnxruntime has it), the rows move within the
   * tensors held, no tensor made: a tensor borrowed from `state()` before shows the new rows.
   * Otherwise every leaf is gathered into a new tensor and the old ones are freed.
   */
  select(rows: readonly (number | null)[]): E.Either<RowsError, void>
  /**
   * Copies the state to host memory as safetensors bytes (`encodeSnapshot`), with the caller's
   * `metadata` strings beside it.
   */
  snapshot(options?: SnapshotOptions): Promise<E.Either<SnapshotError, Uint8Array>>
  /**
   * Replaces the state with a snapshot of the same spec and batch size; returns the snapshot's
   * metadata (`{}` when it has none).
   */
  restore(bytes: Uint8Array | Snapshot): E.Either<RestoreError, SnapshotMetadata>
  /** Frees every tensor the saver holds. Idempotent. */
  dispose(): void
}

/**
 * Creates a `StateSaver` for `batchSize` rows on `backend`, every leaf at its init.
 *
 * @example
 * const saver = orThrow(createStateSaver({ spec: lstmSpec([64, 32]), backend: hostBackend(), batchSize: 8 }))
 * const [h0, c0, h1, c1] = saver.leaves() // leaf order: [0][0], [0][1], [1][0], [1][1]
 * @category saver
 * @since 0.1.0
 */
export function createStateSaver<T, In = T>(
  options: StateSaverOptions<T, In>,
): E.Either<CreateSaverError, StateSaver<T, In>> {
  const bad = checkBackendOption(options)
  if (bad) return E.left(bad)
  const { backend, batchSize } = options
  if (!isSize(batchSize) || batchSize === 0) {
    return fail(OptionError, "batchSize", "a positive integer", batchSize)
  }
  const resolved = resolveSpec(options.spec, options)
  if (E.isLeft(resolved)) return resolved
  const unsupported = unsupportedDType(backend, resolved.right)
  if (unsupported) return E.left(unsupported)
  const held = allocateLeaves(backend, resolved.right.leaves, batchSize)
  if (E.isLeft(held)) return held
  return E.right(new Saver(backend, resolved.right, batchSize, held.right))
}

const disposed = (): DisposedError => new DisposedError({ what: "StateSaver" })

class Saver<T, In> implements StateSaver<T, In> {
  declare readonly backend: StateBackend<T, In>
  declare readonly spec: ResolvedSpec
  #held: T[]
  #batchSize: number
  #disposed = false
  readonly #contexts: LeafContext[]

  constructor(backend: StateBackend<T, In>, spec: ResolvedSpec, batchSize: number, held: T[]) {
    this.backend = backend
    this.spec = spec
    this.#held = held
    this.#batchSize = batchSize
    this.#contexts = spec.leaves.map(contextOf)
  }

  get batchSize(): number {
    return this.#batchSize
  }

  get disposed(): boolean {
    return this.#disposed
  }

  /** The held leaves; throws a `DisposedError` after `dispose`. */
  #live(): T[] {
    if (this.#disposed) throw disposed()
    return this.#held
  }

  state(): StateTree<T> {
    return unflatten(this.spec.def, this.#live())
  }

  dims(): Readonly<Record<string, number>> {
    this.#live()
    const out: Record<string, number> = {}
    this.spec.leaves.forEach((leaf, i) => {
      const shape = orThrow(this.#describe(i))?.shape
      for (const [axis, name] of leaf.growing) out[name] = shape?.[axis] ?? 0
    })
    return out
  }

  /** The backend's `describe` of leaf `i`, a throw turned into a `BackendError`. */
  #describe(i: number): E.Either<BackendError, TensorInfo | undefined> {
    const { backend } = this
    const path = (this.#contexts[i] as LeafContext).path
    return attempt(backend, "describe", path, () => backend.describe(this.#held[i]))
  }

  save(next: StateTree<T | In>): E.Either<SaveError, void> {
    return this.#save(checkTensors, next)
  }

  leaves(): readonly T[] {
    return this.#live().slice()
  }

  saveLeaves(next: readonly (T | In)[]): E.Either<SaveError, void> {
    return this.#save(checkLeaves, next)
  }

  /** `save` and `saveLeaves`: `check` is `checkTensors` (a tree) or `checkLeaves` (a list). */
  #save<X>(
    check: (
      spec: ResolvedSpec,
      backend: StateBackend<T, In>,
      next: X,
      batchSize: number,
    ) => E.Either<TensorCheckError, { leaves: (T | In)[] }>,
    next: X,
  ): E.Either<SaveError, void> {
    if (this.#disposed) return E.left(disposed())
    const checked = check(this.spec, this.backend, next, this.#batchSize)
    return E.isLeft(checked) ? checked : this.#keep(checked.right.leaves, false)
  }

  /**
   * Takes ownership of validated leaves, freeing what they replace. On a failure, the leaves not
   * adopted yet are freed when core made them: all when `owned`, else copies of a swapped save.
   */
  #keep(incoming: (T | In)[], owned: boolean): E.Either<BackendError, void> {
    const prepared = this.#unswap(incoming)
    if (E.isLeft(prepared)) return prepared
    const { backend } = this
    const held = this.#held
    for (let i = 0; i < prepared.right.length; i++) {
      const x = prepared.right[i] as T
      const current = held[i] as T
      if (x === current) continue
      const ctx = this.#contexts[i] as LeafContext
      // Inline rather than `attempt`: this loop runs on every step of a model.
      try {
        held[i] = backend.adopt(current, x, ctx)
      } catch (e) {
        const rest = prepared.right.slice(i).filter((t, j) => owned || t !== incoming[i + j])
        disposeQuietly(backend, rest as T[])
        return E.left(backendError(backend, "adopt", ctx.path, e))
      }
    }
    return RIGHT
  }

  /**
   * A tensor the saver already holds at another leaf (a swapped save) is copied, since adopting
   * it would free it under the other leaf. The common case, no such tensor, allocates nothing.
   */
  #unswap(incoming: (T | In)[]): E.Either<BackendError, (T | In)[]> {
    const held = this.#held
    let swapped = false
    for (let i = 0; i < incoming.length && !swapped; i++) {
      const x = incoming[i] as T
      swapped = x !== held[i] && held.includes(x)
    }
    if (!swapped) return E.right(incoming)
    const { backend } = this
    const all = allRows(this.#batchSize)
    return buildPerLeaf(
      backend,
      "gather",
      this.#contexts,
      (i, ctx) => {
        const x = incoming[i] as T
        return x === held[i] || !held.includes(x) ? x : backend.gather(x, all, ctx)
      },
      (t, i) => t === incoming[i],
    )
  }

  reset(rows?: RowsInput): E.Either<RowsError, void> {
    if (this.#disposed) return E.left(disposed())
    const n = this.#batchSize
    let list: number[] = []
    if (rows === undefined) {
      // Leaves at their starting shape are filled in place; grown ones (a KV cache) are
      // reallocated.
      const leaves = this.spec.leaves
      for (let i = 0; i < leaves.length; i++) {
        const info = this.#describe(i)
        if (E.isLeft(info)) return info
        const start = leafShape(leaves[i] as ResolvedLeaf, n)
        const shape = info.right?.shape
        if (!shape || shape.some((d, axis) => d !== start[axis])) {
          return this.#replaceWith(allocateLeaves(this.backend, leaves, n), n)
        }
      }
      list = allRows(n)
    } else {
      const normalized = normalizeRows(rows, n)
      if (E.isLeft(normalized)) return normalized
      list = normalized.right
      if (list.length === 0) return RIGHT
    }
    const { backend } = this
    const held = this.#held
    return eachLeaf(backend, "fill", this.#contexts, (i, ctx) =>
      backend.fill(held[i] as T, list, ctx),
    )
  }

  /** Replaces every held leaf with `next` (when it is a Right) and sets the batch size. */
  #replaceWith(next: E.Either<BackendError, T[]>, batchSize: number): E.Either<BackendError, void> {
    if (E.isLeft(next)) return next
    const old = this.#held
    this.#held = next.right
    this.#batchSize = batchSize
    disposeQuietly(this.backend, old)
    return RIGHT
  }

  select(rows: readonly (number | null)[]): E.Either<RowsError, void> {
    if (this.#disposed) return E.left(disposed())
    const checked = checkSelection(rows, this.#batchSize)
    if (E.isLeft(checked)) return checked
    const list = [...checked.right]
    const { backend } = this
    const held = this.#held
    const { reorder } = backend
    if (reorder !== undefined && list.length === this.#batchSize && !list.includes(null)) {
      // The same batch size and no fresh row: the rows move within the tensors held.
      return eachLeaf(backend, "reorder", this.#contexts, (i, ctx) =>
        reorder.call(backend, held[i] as T, list as number[], ctx),
      )
    }
    return this.#replaceWith(
      buildPerLeaf(backend, "gather", this.#contexts, (i, ctx) =>
        backend.gather(held[i] as T, list, ctx),
      ),
      list.length,
    )
  }

  async snapshot(options?: SnapshotOptions): Promise<E.Either<SnapshotError, Uint8Array>> {
    if (this.#disposed) return E.left(disposed())
    const { backend } = this
    const held = this.#held
    // Every copy starts before the first await, so later mutations cannot reach the snapshot.
    const pending: Promise<HostTensor>[] = []
    for (let i = 0; i < held.length; i++) {
      const started = attempt(backend, "toHost", (this.#contexts[i] as LeafContext).path, () =>
        backend.toHost(held[i] as T),
      )
      if (E.isLeft(started)) return started
      // A rejection is reported below, or dropped when a later leaf fails: never unhandled.
      started.right.catch(() => undefined)
      pending.push(started.right)
    }
    const settled = await Promise.allSettled(pending)
    const failed = settled.findIndex((r) => r.status === "rejected")
    if (failed >= 0) {
      const { reason } = settled[failed] as PromiseRejectedResult
      return E.left(
        backendError(backend, "toHost", (this.#contexts[failed] as LeafContext).path, reason),
      )
    }
    const hosts = settled.map((r) => (r as PromiseFulfilledResult<HostTensor>).value)
    // The batch size of the copies: a `select` may have run since.
    const batchSize = hosts[0]?.shape[(this.spec.leaves[0] as ResolvedLeaf).batchAxis]
    try {
      return E.right(encodeState(this.spec, batchSize ?? this.#batchSize, hosts, options?.metadata))
    } catch (e) {
      if (e instanceof SnapshotFormatError) return E.left(e)
      throw e
    }
  }

  restore(bytes: Uint8Array | Snapshot): E.Either<RestoreError, SnapshotMetadata> {
    if (this.#disposed) return E.left(disposed())
    const decoded = toSnapshot(bytes)
    if (E.isLeft(decoded)) return decoded
    const checked = checkSnapshot(this.spec, decoded.right, this.#batchSize)
    if (E.isLeft(checked)) return checked
    const hosts = checked.right
    const { backend } = this
    const made = buildPerLeaf(backend, "fromHost", this.#contexts, (i, ctx) =>
      backend.fromHost(hosts[i] as HostTensor, ctx),
    )
    if (E.isLeft(made)) return made
    const kept = this.#keep(made.right, true)
    return E.isLeft(kept) ? kept : E.right(decoded.right.metadata ?? {})
  }

  dispose(): void {
    if (this.#disposed) return
    this.#disposed = true
    const old = this.#held
    this.#held = []
    disposeQuietly(this.backend, old)
  }

  [Symbol.dispose](): void {
    this.dispose()
  }
}
