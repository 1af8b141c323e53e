import type { StateBackend, TensorInfo } from "./backend.js"
import type { DTypeMismatchError } from "./errors.js"
import {
  BackendError,
  type BatchSizeMismatchError,
  DisposedError,
  OptionError,
  type RowIndexError,
  type ShapeMismatchError,
  SnapshotFormatError,
  type SpecError,
  type TensorCheckError,
} from "./errors.js"
import type { HostTensor } from "./host-tensor.js"
import {
  type RowsInput,
  allocateLeaves,
  attempt,
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
import { encodeState } from "./internal/encode.js"
import { leafShape } from "./internal/leaf-shape.js"
import { checkBackendOption, unsupportedDType } from "./internal/options.js"
import { checkSnapshot, toSnapshot } from "./internal/snapshot-check.js"
import type { Snapshot } from "./snapshot.js"
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
   * fresh init row. The batch size becomes `rows.length`.
   */
  select(rows: readonly (number | null)[]): E.Either<RowsError, void>
  /** Copies the state to host memory as safetensors bytes (`encodeSnapshot`). */
  snapshot(): Promise<E.Either<SnapshotError, Uint8Array>>
  /** Replaces the state with a snapshot of the same spec and batch size. */
  restore(bytes: Uint8Array | Snapshot): E.Either<RestoreError, void>
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
  if (typeof batchSize !== "number" || !Number.isSafeInteger(batchSize) || batchSize < 1) {
    return E.left(
      new OptionError({ path: "batchSize", expected: "a positive integer", actual: batchSize }),
    )
  }
  const resolved = resolveSpec(options.spec, options)
  if (resolved._tag === "Left") return resolved
  const unsupported = unsupportedDType(backend, resolved.right)
  if (unsupported) return E.left(unsupported)
  const held = allocateLeaves(backend, resolved.right.leaves, batchSize)
  if (held._tag === "Left") return held
  return E.right(new Saver(backend, resolved.right, batchSize, held.right))
}

/** The one `Right(undefined)`: successful calls on the hot path allocate no result. */
const RIGHT: E.Either<never, void> = E.right(undefined)

class Saver<T, In> implements StateSaver<T, In> {
  #held: T[]
  #batchSize: number
  #disposed = false
  readonly #contexts

  constructor(
    readonly backend: StateBackend<T, In>,
    readonly spec: ResolvedSpec,
    batchSize: number,
    held: T[],
  ) {
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

  #live(): E.Either<DisposedError, void> {
    return this.#disposed ? E.left(new DisposedError({ what: "StateSaver" })) : RIGHT
  }

  state(): StateTree<T> {
    if (this.#disposed) throw new DisposedError({ what: "StateSaver" })
    return unflatten(this.spec.def, this.#held)
  }

  dims(): Readonly<Record<string, number>> {
    if (this.#disposed) throw new DisposedError({ what: "StateSaver" })
    const out: Record<string, number> = {}
    this.spec.leaves.forEach((leaf, i) => {
      const info = this.#describe(i)
      if (info._tag === "Left") throw info.left
      for (const [axis, name] of leaf.growing) out[name] = info.right?.shape[axis] ?? 0
    })
    return out
  }

  /** The backend's `describe` of leaf `i`, a throw turned into a `BackendError`. */
  #describe(i: number): E.Either<BackendError, TensorInfo | undefined> {
    const ctx = this.#contexts[i] as ReturnType<typeof contextOf>
    return attempt(this.backend, "describe", ctx.path, () => this.backend.describe(this.#held[i]))
  }

  save(next: StateTree<T | In>): E.Either<SaveError, void> {
    const live = this.#live()
    if (live._tag === "Left") return live
    const checked = checkTensors(this.spec, this.backend, next, this.#batchSize)
    if (checked._tag === "Left") return checked
    return this.#keep(checked.right.leaves)
  }

  leaves(): readonly T[] {
    if (this.#disposed) throw new DisposedError({ what: "StateSaver" })
    return this.#held.slice()
  }

  saveLeaves(next: readonly (T | In)[]): E.Either<SaveError, void> {
    const live = this.#live()
    if (live._tag === "Left") return live
    const checked = checkLeaves(this.spec, this.backend, next, this.#batchSize)
    if (checked._tag === "Left") return checked
    return this.#keep(checked.right.leaves)
  }

  /** Takes ownership of validated leaves, freeing what they replace. */
  #keep(incoming: (T | In)[]): E.Either<BackendError, void> {
    const prepared = this.#unswap(incoming)
    if (prepared._tag === "Left") return prepared
    const held = this.#held
    for (let i = 0; i < prepared.right.length; i++) {
      const x = prepared.right[i] as T
      const current = held[i] as T
      if (x === current) continue
      const ctx = this.#contexts[i] as ReturnType<typeof contextOf>
      // Inline rather than `attempt`: this loop runs on every step of a model.
      try {
        held[i] = this.backend.adopt(current, x, ctx)
      } catch (e) {
        // Copies made for a swapped save that were not adopted yet are core's to free.
        const copies = prepared.right.slice(i).filter((t, j) => t !== incoming[i + j]) as T[]
        disposeQuietly(this.backend, copies)
        return E.left(
          new BackendError({
            backend: this.backend.name,
            operation: "adopt",
            path: ctx.path,
            cause: e,
          }),
        )
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
      if (x !== held[i] && held.includes(x)) swapped = true
    }
    if (!swapped) return E.right(incoming)
    const all = Array.from({ length: this.#batchSize }, (_, r) => r)
    const prepared: T[] = []
    const copies: T[] = []
    for (let i = 0; i < incoming.length; i++) {
      const x = incoming[i] as T
      if (x === held[i] || !held.includes(x)) {
        prepared.push(x)
        continue
      }
      const ctx = this.#contexts[i] as ReturnType<typeof contextOf>
      const copy = attempt(this.backend, "gather", ctx.path, () => this.backend.gather(x, all, ctx))
      if (copy._tag === "Left") {
        disposeQuietly(this.backend, copies)
        return copy
      }
      copies.push(copy.right)
      prepared.push(copy.right)
    }
    return E.right(prepared)
  }

  reset(rows?: RowsInput): E.Either<RowsError, void> {
    const live = this.#live()
    if (live._tag === "Left") return live
    if (rows === undefined) return this.#resetAll()
    const normalized = normalizeRows(rows, this.#batchSize)
    if (normalized._tag === "Left") return normalized
    const list = normalized.right
    if (list.length === 0) return RIGHT
    const held = this.#held
    return eachLeaf(this.backend, "fill", this.#contexts, (i, ctx) =>
      this.backend.fill(held[i] as T, list, ctx),
    )
  }

  #resetAll(): E.Either<BackendError, void> {
    const all = Array.from({ length: this.#batchSize }, (_, r) => r)
    const leaves = this.spec.leaves
    // Leaves at their starting shape are filled in place; grown ones (a KV cache) are reallocated.
    let grown = false
    for (let i = 0; i < leaves.length && !grown; i++) {
      const info = this.#describe(i)
      if (info._tag === "Left") return info
      const start = leafShape(leaves[i] as ResolvedLeaf, this.#batchSize)
      const shape = info.right?.shape
      grown = shape === undefined || shape.some((d, axis) => d !== start[axis])
    }
    if (grown) {
      const fresh = allocateLeaves(this.backend, leaves, this.#batchSize)
      if (fresh._tag === "Left") return fresh
      this.#replaceAll(fresh.right)
      return E.right(undefined)
    }
    const held = this.#held
    return eachLeaf(this.backend, "fill", this.#contexts, (i, ctx) =>
      this.backend.fill(held[i] as T, all, ctx),
    )
  }

  #replaceAll(next: T[]): void {
    const old = this.#held
    this.#held = next
    disposeQuietly(this.backend, old)
  }

  select(rows: readonly (number | null)[]): E.Either<RowsError, void> {
    const live = this.#live()
    if (live._tag === "Left") return live
    const checked = checkSelection(rows, this.#batchSize)
    if (checked._tag === "Left") return checked
    const list = [...checked.right]
    const held = this.#held
    const next = buildPerLeaf(this.backend, "gather", this.#contexts, (i, ctx) =>
      this.backend.gather(held[i] as T, list, ctx),
    )
    if (next._tag === "Left") return next
    this.#replaceAll(next.right)
    this.#batchSize = list.length
    return E.right(undefined)
  }

  async snapshot(): Promise<E.Either<SnapshotError, Uint8Array>> {
    const live = this.#live()
    if (live._tag === "Left") return live
    // Every copy starts before the first await, so later mutations cannot reach the snapshot.
    const pending: Promise<HostTensor>[] = []
    for (let i = 0; i < this.#held.length; i++) {
      const ctx = this.#contexts[i] as ReturnType<typeof contextOf>
      const src = this.#held[i] as T
      const started = attempt(this.backend, "toHost", ctx.path, () => this.backend.toHost(src))
      if (started._tag === "Left") {
        pending.forEach((p) => p.catch(() => undefined))
        return started
      }
      pending.push(started.right)
    }
    const settled = await Promise.allSettled(pending)
    const hosts: HostTensor[] = []
    for (let i = 0; i < settled.length; i++) {
      const s = settled[i] as PromiseSettledResult<HostTensor>
      if (s.status === "rejected") {
        const path = (this.spec.leaves[i] as ResolvedLeaf).pathString
        return E.left(
          new BackendError({
            backend: this.backend.name,
            operation: "toHost",
            path,
            cause: s.reason,
          }),
        )
      }
      hosts.push(s.value)
    }
    const first = this.spec.leaves[0]
    const batchSize = first === undefined ? undefined : hosts[0]?.shape[first.batchAxis]
    try {
      return E.right(encodeState(this.spec, batchSize ?? this.#batchSize, hosts))
    } catch (e) {
      if (e instanceof SnapshotFormatError) return E.left(e)
      throw e
    }
  }

  restore(bytes: Uint8Array | Snapshot): E.Either<RestoreError, void> {
    const live = this.#live()
    if (live._tag === "Left") return live
    const decoded = toSnapshot(bytes)
    if (decoded._tag === "Left") return decoded
    const snap = decoded.right
    const checked = checkSnapshot(this.spec, snap, this.#batchSize)
    if (checked._tag === "Left") return checked
    const hosts = checked.right
    const made = buildPerLeaf(this.backend, "fromHost", this.#contexts, (i, ctx) =>
      this.backend.fromHost(hosts[i] as HostTensor, ctx),
    )
    if (made._tag === "Left") return made
    const fresh = made.right
    for (let i = 0; i < fresh.length; i++) {
      const ctx = this.#contexts[i] as ReturnType<typeof contextOf>
      const current = this.#held[i] as T
      const x = fresh[i] as T
      const kept = attempt(this.backend, "adopt", ctx.path, () =>
        this.backend.adopt(current, x, ctx),
      )
      if (kept._tag === "Left") {
        disposeQuietly(this.backend, fresh.slice(i))
        return kept
      }
      this.#held[i] = kept.right
    }
    return E.right(undefined)
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
