import type { LeafContext, StateBackend } from "./backend.js"
import {
  BackendError,
  BusyError,
  DTypeMismatchError,
  DisposedError,
  KeyError,
  OptionError,
  ShapeMismatchError,
  SnapshotFormatError,
  type ErrorFields,
  type SpecError,
  type StateError,
  type TensorCheckError,
  showValue,
} from "./errors.js"
import { writeBlockTyped } from "./block-rows.js"
import { HostTensor, dtypeByteSize } from "./host-tensor.js"
import {
  allRows,
  attempt,
  buildPerLeaf,
  checkLeaves,
  checkTensors,
  contextOf,
  disposeQuietly,
  allocateLeaves,
  leavesAlong,
} from "./internal/checks.js"
import * as E from "./internal/either.js"
import { arrangement, inverse } from "./internal/arrange.js"
import { encodeState } from "./internal/encode.js"
import { type SnapshotCheckError, checkSnapshot, toSnapshot } from "./internal/snapshot-check.js"
import { type StoreLimits, checkStoreOptions } from "./internal/store-options.js"
import {
  type RowCopy,
  bytesOf,
  dataStartOf,
  encodeRows,
  rowCopy,
  samePrefix,
  writeRow,
} from "./internal/snapshot-rows.js"
import { isPlainRecord } from "./internal/predicates.js"
import {
  type Snapshot,
  type SnapshotMetadata,
  type SnapshotOptions,
  metadataProblem,
} from "./snapshot.js"
import {
  type ResolvedLeaf,
  type ResolvedSpec,
  type SpecOptions,
  type StateSpec,
  resolveSpec,
} from "./state-spec.js"
import { type StateTree, flatten, unflatten } from "./state-tree.js"
import { fillRowsTyped, rowLayout } from "./typed-rows.js"

/**
 * A stream key: any string or finite number (numbers and their strings are different keys).
 *
 * @category store
 * @since 0.1.0
 */
export type StreamKey = string | number

/**
 * Errors `createStateStore` can return: an option (`path` names it), the spec, a dtype the
 * backend does not store, or the first allocation.
 *
 * @category store
 * @since 0.2.0
 */
export type CreateStoreError = OptionError | SpecError | DTypeMismatchError | BackendError

/**
 * Errors `StateStore.gather` can return. `OptionError` is a `clock` that returned a
 * non-finite value; `BusyError` a `gather` from inside `onEvict` that would evict a stream.
 *
 * @category store
 * @since 0.2.0
 */
export type GatherError = DisposedError | KeyError | OptionError | BusyError | BackendError

/**
 * Errors `StateStore.scatter` can return: keys, the `clock`, or the tree given (structure,
 * dtype, shape, batch size, a leaf given twice, a backend that cannot read it).
 *
 * @category store
 * @since 0.2.0
 */
export type ScatterError = DisposedError | KeyError | OptionError | TensorCheckError

/**
 * Errors `StateStore.reset` can return.
 *
 * @category store
 * @since 0.2.0
 */
export type StoreResetError = DisposedError | KeyError

/**
 * Errors `StateStore.snapshot` can return.
 *
 * @category store
 * @since 0.2.0
 */
export type StoreSnapshotError = DisposedError | KeyError | BackendError | SnapshotFormatError

/**
 * Errors `StateStore.restore` can return: the key, the bytes and their spec, the `clock`, a
 * `restore` from inside `onEvict` that would evict a stream (`BusyError`), or the backend.
 *
 * @category store
 * @since 0.2.0
 */
export type StoreRestoreError =
  DisposedError | KeyError | OptionError | BusyError | SnapshotCheckError | BackendError

/**
 * Errors `StateStore.resizeDim` can return: a bad `name` or `size` (`OptionError` with that
 * path), a backend without `writeAt` (`OptionError` at `backend`), or the backend.
 *
 * @category store
 * @since 0.3.0
 */
export type ResizeDimError = DisposedError | OptionError | BackendError

/**
 * Options of `StateStore.scatter`.
 *
 * @category store
 * @since 0.3.0
 */
export interface ScatterOptions {
  /**
   * Rows longer than the store's along a named dim that grows (a KV cache's `seq`) make the
   * store grow to them first, as `resizeDim` does, in the same call: on `Left` nothing grew.
   * Default false: such rows are a `ShapeMismatchError`.
   */
  readonly grow?: boolean
}

/**
 * Options of `StateStore.gather`.
 *
 * @category store
 * @since 0.3.0
 */
export interface GatherOptions {
  /**
   * Views of the store's rows instead of copies where the keys' rows lie side by side (see
   * `StateStore.gather`). Default false.
   */
  readonly views?: boolean
}

/**
 * One stream's snapshot for `StateStore.restoreMany`.
 *
 * @category store
 * @since 0.3.0
 */
export interface StreamSnapshot {
  readonly key: StreamKey
  readonly snapshot: Uint8Array | Snapshot
}

/**
 * Options of `createStateStore`.
 *
 * @category store
 * @since 0.1.0
 */
export interface StateStoreOptions<T, In = T> extends SpecOptions {
  readonly spec: StateSpec
  readonly backend: StateBackend<T, In>
  /**
   * Most streams kept at once (a positive integer); past it the least recently used stream is
   * evicted. Default: no limit.
   */
  readonly capacity?: number
  /** Slots allocated up front (a positive integer); the slab doubles from there, up to `capacity`. Default 8. */
  readonly initialSlots?: number
  /**
   * A stream unused for longer than this many milliseconds (>= 0) is evicted, on the next store
   * call that does not name it or by `sweep`. Default: never.
   */
  readonly idleTtlMs?: number
  /**
   * Called after a stream was evicted (by capacity or idle TTL, not by `delete`) with a snapshot
   * of its state, restorable with `restore(key, snapshot)` here or in another process. The rows
   * are copied synchronously at eviction; the snapshot is read to the host and the callback
   * runs afterwards. Until it settles, the key is refused by `gather` (`KeyError`): `await
   * store.flush()` or `restore` it first.
   */
  readonly onEvict?: (
    key: StreamKey,
    snapshot: Uint8Array,
    reason: "capacity" | "idle",
  ) => void | Promise<void>
  /**
   * Milliseconds now, read only with an `idleTtlMs`; inject a fake clock in tests. A call that
   * reads a non-finite value returns an `OptionError` (path `"clock"`). Default `Date.now`.
   */
  readonly clock?: () => number
}

/**
 * Many independent streams, each with its own state rows, batched on demand. Storage is a slab
 * of rows (slots) per leaf on the backend: a stream's state never moves except into and out of
 * a batch. Fallible calls return an `Either` and change nothing on `Left`: no stream is evicted,
 * no recency changes, no `onEvict` runs.
 *
 * @category store
 * @since 0.1.0
 */
export interface StateStore<T, In = T> extends Disposable {
  readonly backend: StateBackend<T, In>
  readonly spec: ResolvedSpec
  /** Number of streams held. */
  readonly size: number
  /** Slots allocated in the slab (held streams plus free slots). */
  readonly slots: number
  readonly disposed: boolean
  /** Whether `key` is held (after evicting idle streams). False for anything that is not a held key. */
  has(key: StreamKey): boolean
  /**
   * Whether `key` is held now, evicting nothing: a stream idle past `idleTtlMs` still counts
   * until the next call that sweeps (which `gather` of that key is not: it keeps it).
   */
  holds(key: StreamKey): boolean
  /** Keys, least recently used first (after evicting idle streams). */
  keys(): StreamKey[]
  /**
   * Stacks the keys' rows into a new batch, in key order; a new key starts at `init`. The returned
   * tensors are the caller's: pass them to `scatter`, or free them (`disposeTree`). A key whose
   * `onEvict` is still running is refused with a `KeyError` (it would silently start at init).
   *
   * With `{ views: true }`, when every key is held and off init, a leaf whose backend has `view`
   * comes back as a view of the store's rows instead of a copy: writes to it change the streams'
   * state, and it is valid only until the next call that changes the store. Views need the keys'
   * rows side by side in key order (from the slab's first row, for a backend that shares no
   * other): where they are not, the backend has `reorder` and every leaf's rows can be viewed,
   * the store first moves rows in place so that they are (as few as it can; no stream's state
   * changes, and every view handed out before is invalid), so that later steps over the same
   * keys copy nothing: streams that join and leave cost one move, not a copy per step. Giving a
   * view back to `scatter` for the same keys copies nothing; freeing it frees nothing of the
   * store. When every leaf comes back that way, the store checks nothing and keeps the views:
   * the next `gather` of the same rows hands the same tensor objects out again instead of
   * making new ones (so a view given back is the store's: a caller that kept it must not use
   * it, since it may still show the store's rows). A session does this for each step. Such a
   * gather of held keys does not count as a use (the `scatter` does), so a step refused between
   * the two leaves the order of eviction as it was.
   */
  gather(keys: readonly StreamKey[], options?: GatherOptions): E.Either<GatherError, StateTree<T>>
  /**
   * Writes row `i` of `next` back to `keys[i]`, which must be held. On `Right` the store took
   * ownership of `next` and freed it; on `Left` it is still the caller's. Named dims must have
   * the store's sizes (`dims()`), or, with `{ grow: true }`, may be longer where they grow.
   */
  scatter(
    keys: readonly StreamKey[],
    next: StateTree<T | In>,
    options?: ScatterOptions,
  ): E.Either<ScatterError, void>
  /**
   * The sizes of the named dims other than the batch that every stream's rows have now (a KV
   * cache's `seq`), by name.
   */
  dims(): Readonly<Record<string, number>>
  /**
   * Sets named dim `name` (a KV cache's `seq`) of every leaf that has it to `size` positions,
   * for every stream at once. Growing, each stream keeps its positions where they were, and the
   * new ones after them hold the leaf's `init` (zeros: a cache's mask then masks them). The
   * slabs are copied on the backend with `writeAt`, nothing read to the host: a backend without
   * it is an `OptionError` at `backend` once a stream holds rows. `scatter(keys, next, { grow:
   * true })` grows the same way, and `restore` grows to a snapshot that holds more positions
   * (and pads one that holds fewer). The slab never shrinks by itself, and shrinks here only
   * while no stream holds rows (each held stream new or reset): a stream's positions may sit
   * anywhere along the dim (one that joined late holds the last ones), so shrinking would move
   * each stream's rows by its own amount, which no backend primitive does on the device. A dim
   * sized by the `dims` option or by an init tensor never changes. Bad `name` or `size`: an `OptionError` naming it. Atomic: on `Left` nothing
   * changed.
   *
   * @example
   * orThrow(store.resizeDim("seq", 128))
   */
  resizeDim(name: string, size: number): E.Either<ResizeDimError, void>
  /** Sets the keys' rows back to `init` (the keys stay held). */
  reset(keys: readonly StreamKey[]): E.Either<StoreResetError, void>
  /** Forgets a stream and frees its slot. Returns whether it was held (false for any other value). */
  delete(key: StreamKey): boolean
  /**
   * One stream's state as safetensors bytes with batch size 1 (a `StateSaver` of 1 row restores
   * it too), with the caller's `metadata` strings beside it. Does not count as a use of the
   * stream.
   */
  snapshot(
    key: StreamKey,
    options?: SnapshotOptions,
  ): Promise<E.Either<StoreSnapshotError, Uint8Array>>
  /**
   * Sets a stream's state from a snapshot of batch size 1, adding the key if it is new (which
   * may evict the least recently used stream). Atomic: on `Left` neither this stream nor any
   * other changed. Evicting is refused with a `BusyError` from inside an `onEvict` callback and
   * for a key whose own `onEvict` has not settled (such chains of evictions need not end).
   * Along a named dim that grows (see `resizeDim`), a snapshot holding fewer positions than the
   * store is padded with the leaf's `init`, and one holding more grows every stream's rows
   * first, so a stream evicted before the store grew comes back into it.
   * Returns the snapshot's metadata (`{}` when it has none).
   */
  restore(
    key: StreamKey,
    snapshot: Uint8Array | Snapshot,
  ): E.Either<StoreRestoreError, SnapshotMetadata>
  /**
   * Many streams' `snapshot`s in one call, in key order: the rows are copied once per leaf and
   * read to the host once, and the header is encoded once (a persistence tier writing back a
   * thousand streams spends its time on Redis, not here). Each `Uint8Array` is what `snapshot`
   * returns for its key. Every key must be held and appear once (`KeyError`).
   */
  snapshotMany(
    keys: readonly StreamKey[],
    options?: SnapshotOptions,
  ): Promise<E.Either<StoreSnapshotError, Uint8Array[]>>
  /**
   * Many streams' `restore`s in one call: the rows are written once per leaf, and a snapshot
   * whose header is byte for byte that of the one before it (streams of one store, as
   * `snapshotMany` writes them) is read without decoding its header again. Atomic for the whole
   * call: on `Left` no stream changed; an error about one snapshot names its item and stream in
   * its `detail` (`snapshots[3], stream "call-7"`). Keys must be distinct. Returns each
   * snapshot's metadata, in item order.
   */
  restoreMany(items: readonly StreamSnapshot[]): E.Either<StoreRestoreError, SnapshotMetadata[]>
  /**
   * Sets each stream of `to` to a copy of the state of `from` (which must be held), row by row on
   * the backend (nothing read to the host): a prompt's state shared by many streams, or beams
   * spread over streams. New keys are added (which may evict the least recently used streams,
   * never `from`); held ones are overwritten; `from` itself in `to` stays as it is. Counts as a
   * use of `from` and of every key of `to`. Atomic: on `Left` no stream changed. Keys as for
   * `gather` (errors name them `from`, `to[2]`); `to` and `from` together fit in `capacity`.
   */
  fork(from: StreamKey, to: readonly StreamKey[]): E.Either<GatherError, void>
  /**
   * Copies the keys' rows into a new batch as `gather` does, without counting as a use: every
   * key must be held, and no stream is added, evicted or reordered (a read before a `scatter`
   * that may not happen). The returned tensors are the caller's.
   */
  peek(keys: readonly StreamKey[]): E.Either<DisposedError | KeyError | BackendError, StateTree<T>>
  /** Evicts streams idle past `idleTtlMs` now. Returns how many. */
  sweep(): number
  /**
   * Waits until every `onEvict` call has settled. Rejects with an `AggregateError` of every
   * failure since the last `flush` (always an `AggregateError`, also for one failure): what a
   * callback threw, or a `BackendError` when an evicted stream could not be read to the host.
   */
  flush(): Promise<void>
  dispose(): void
}

/** A named dim of a leaf: its axis, its name and the slab's size along it. */
interface Named {
  readonly axis: number
  readonly name: string
  readonly size: number
}

/** The slabs and sizes `#resize` replaced, and the slabs it installed (for `#settle`). */
interface Resized<T> {
  readonly slabs: T[]
  readonly named: Named[][]
  readonly installed: T[]
}

/** A held stream, linked into the recency list (least recently used at the head). */
interface Entry {
  readonly key: StreamKey
  slot: number
  used: number
  prev: Entry | undefined
  next: Entry | undefined
  /** Id of the last call that named this key: finds duplicates without a Set per call. */
  stamp: number
  /** The slot's rows were never written since the stream started or was reset: it is at init. */
  atInit: boolean
}

/** The keys of a call, checked: held entries in key order (undefined where new) and the new keys. */
interface Resolved {
  readonly entries: (Entry | undefined)[]
  readonly fresh: StreamKey[]
  /** Rows to read per key (the slot, or null for a stream at init or a new key). */
  readonly rows: (number | null)[]
  /** Slots of held keys in key order (only meaningful when `fresh` is empty). */
  readonly slots: number[]
  /** Whether a held key's stream is at init (a scatter then marks it off init). */
  readonly anyAtInit: boolean
  /** The recency order (`#order`) right after these keys were last touched; -1 before. */
  ordered: number
}

/** A stream chosen for eviction, with its rows copied and on their way to the host. */
interface Victim {
  readonly entry: Entry
  readonly reason: "capacity" | "idle"
  reads?: Promise<HostTensor>[]
  copies?: unknown[]
}

/** What a call that may evict or admit streams will change, decided before anything changes. */
interface Plan {
  readonly victims: Victim[]
  readonly growTo: number
}

/**
 * Creates a `StateStore` on `backend`. Every option is checked first: a bad one is an
 * `OptionError` whose `path` names it and whose `actual` is the value given.
 *
 * @example
 * const store = orThrow(createStateStore({ spec: lstmSpec([128, 128]), backend: hostBackend(), capacity: 10_000 }))
 * const batch = orThrow(store.gather(["alice", "bob"]))
 * // ... run the model on batch, then:
 * orThrow(store.scatter(["alice", "bob"], nextState))
 * @category store
 * @since 0.1.0
 */
export function createStateStore<T, In = T>(
  options: StateStoreOptions<T, In>,
): E.Either<CreateStoreError, StateStore<T, In>> {
  const limits = checkStoreOptions(options)
  if (limits._tag === "Left") return limits
  const { backend } = options
  const resolved = resolveSpec(options.spec, options)
  if (resolved._tag === "Left") return resolved
  for (const leaf of resolved.right.leaves) {
    if (!backend.capabilities.dtypes.includes(leaf.dtype)) {
      return E.left(
        new DTypeMismatchError({
          path: leaf.pathString,
          expected: `one of the dtypes backend ${backend.name} stores (${backend.capabilities.dtypes.join(", ")})`,
          actual: leaf.dtype,
        }),
      )
    }
  }
  const slabs = allocateLeaves(backend, resolved.right.leaves, limits.right.initialSlots)
  if (slabs._tag === "Left") return slabs
  return E.right(
    new Store(backend, limits.right, resolved.right, slabs.right, Object.keys(options.dims ?? {})),
  )
}

const keyOk = (k: unknown): k is StreamKey =>
  typeof k === "string" || (typeof k === "number" && Number.isFinite(k))

/** The one `Right(undefined)`: successful calls on the hot path allocate no result. */
const RIGHT: E.Either<never, void> = E.right(undefined)

const NO_VICTIMS: Plan = { victims: [], growTo: 0 }

const NOT_RESIZED: E.Either<never, undefined> = E.right(undefined)

const NO: E.Either<never, boolean> = E.right(false)
const YES: E.Either<never, boolean> = E.right(true)

/** A call's boolean option `name` (false when absent), or the `OptionError` refusing it. */
function flag(options: unknown, name: string): E.Either<OptionError, boolean> {
  if (options === undefined) return NO
  if (!isPlainRecord(options)) {
    return E.left(
      new OptionError({ path: "options", expected: `{ ${name}?: boolean }`, actual: options }),
    )
  }
  const value = options[name]
  if (value === undefined || value === false) return NO
  if (value === true) return YES
  return E.left(new OptionError({ path: name, expected: "a boolean", actual: value }))
}

/** Whether slots follow each other: `slots[i] = slots[0] + i`. */
function inOrder(slots: readonly number[]): boolean {
  for (let i = 1; i < slots.length; i++) if (slots[i] !== (slots[0] as number) + i) return false
  return true
}

class Store<T, In> implements StateStore<T, In> {
  readonly #entries = new Map<StreamKey, Entry>()
  /** Views `gather` handed out, with the slab and rows they show. */
  // A list, not a WeakMap: hashing a runtime's tensor object (onnxruntime-node's) makes every
  // later run that reads it slower. A successful `scatter` empties it; at most 64 are kept.
  readonly #views: { tensor: unknown; slab: unknown; start: number; count: number }[] = []
  /**
   * Views a `scatter` was given back whole (every leaf a view of exactly the rows it gave them
   * back to): kept instead of freed, and handed out again by the next `gather` of the same rows
   * of the same slabs, so that steps over the same streams make no view. Freed when the slabs
   * are replaced or another `gather` makes views.
   */
  #spare: { start: number; count: number; slabs: readonly T[]; views: T[] } | undefined
  #head: Entry | undefined
  #tail: Entry | undefined
  /**
   * Whether moving rows can give views of every leaf: false once a leaf's rows could not be
   * shared at the slab's first row (a dim before the batch axis), which no move changes.
   */
  #movesHelp = true
  /** Free slots; popped from the end, so the lowest slot is handed out first. */
  readonly #free: number[] = []
  readonly #contexts: LeafContext[]
  /** Per leaf, the non-batch dims of the slab that `scatter` must match beyond the spec (named dims). */
  #named: Named[][]
  /** Named dims that never change size: sized by the `dims` option or by an init tensor. */
  readonly #fixedDims: ReadonlySet<string>
  readonly #capacity: number
  readonly #ttl: number | undefined
  readonly #onEvict: StoreLimits["onEvict"]
  readonly #clock: () => number
  /** `onEvict` calls not settled yet, and the keys they are about (with a count: a key may be evicted twice). */
  readonly #pending = new Set<Promise<void>>()
  readonly #evicting = new Map<StreamKey, number>()
  /** Depth of synchronous `onEvict` calls on the stack: evicting from there is refused. */
  #inCallback = 0
  #errors: { key: StreamKey; error: unknown }[] = []
  #slabs: T[]
  #stamp = 0
  /** Bumped whenever the recency list changes. */
  #order = 0
  /** Bumped whenever a key is added or removed, a slot moves, or a stream goes to or from init. */
  #version = 0
  /** The last call's checked keys: the same keys again skip the map lookups. */
  #cache: { keys: StreamKey[]; resolved: Resolved; version: number } | undefined
  #disposed = false

  constructor(
    readonly backend: StateBackend<T, In>,
    limits: StoreLimits,
    readonly spec: ResolvedSpec,
    slabs: T[],
    fixedDims: readonly string[],
  ) {
    this.#slabs = slabs
    this.#capacity = limits.capacity
    this.#ttl = limits.idleTtlMs
    this.#onEvict = limits.onEvict
    this.#clock = limits.clock ?? Date.now
    this.#contexts = spec.leaves.map(contextOf)
    this.#named = spec.leaves.map((leaf, i) => {
      if (leaf.growing.size === 0) return []
      const shape = backend.describe(slabs[i])?.shape ?? []
      return [...leaf.growing].map(([axis, name]) => ({ axis, name, size: shape[axis] as number }))
    })
    const fixed = new Set(fixedDims)
    for (const leaf of spec.leaves)
      if (leaf.init.kind === "tensor") for (const name of leaf.growing.values()) fixed.add(name)
    this.#fixedDims = fixed
    for (let s = limits.initialSlots - 1; s >= 0; s--) this.#free.push(s)
  }

  get size(): number {
    return this.#entries.size
  }

  get slots(): number {
    return this.#free.length + this.#entries.size
  }

  get disposed(): boolean {
    return this.#disposed
  }

  has(key: StreamKey): boolean {
    this.sweep()
    return this.holds(key)
  }

  holds(key: StreamKey): boolean {
    return keyOk(key) && this.#entries.has(key)
  }

  keys(): StreamKey[] {
    this.sweep()
    const out: StreamKey[] = []
    for (let e = this.#head; e !== undefined; e = e.next) out.push(e.key)
    return out
  }

  #live(): E.Either<DisposedError, void> {
    return this.#disposed ? E.left(new DisposedError({ what: "StateStore" })) : RIGHT
  }

  /** Milliseconds now, or an `OptionError` when the clock gives no finite number. Only with a TTL. */
  #now(): E.Either<OptionError, number> {
    if (this.#ttl === undefined) return ZERO
    let now: unknown
    try {
      now = this.#clock()
    } catch (e) {
      return E.left(clockError(this.#clock, `clock() threw: ${showValue(e)}`, e))
    }
    if (typeof now !== "number" || !Number.isFinite(now)) {
      return E.left(clockError(now, "clock() returned it; it must return finite milliseconds"))
    }
    return E.right(now)
  }

  /**
   * Checks the keys of a call: an array of 1..capacity distinct strings or finite numbers; with
   * `held`, every key held. A new key whose `onEvict` is still running is refused too.
   */
  #resolve(keys: readonly StreamKey[], held: boolean): E.Either<KeyError, Resolved> {
    const cache = this.#cache
    if (
      cache !== undefined &&
      cache.version === this.#version &&
      Array.isArray(keys) &&
      keys.length === cache.keys.length &&
      (cache.resolved.fresh.length === 0 || !held)
    ) {
      const prior = cache.keys
      let same = true
      for (let i = 0; same && i < prior.length; i++) same = keys[i] === prior[i]
      // The same keys as the last call and nothing changed since: the same answer (new keys
      // of a gather that failed were not admitted, and are still new).
      if (same) return E.right(cache.resolved)
    }
    const checked = this.#check(keys, held)
    if (checked._tag === "Right")
      this.#cache = { keys: keys.slice(), resolved: checked.right, version: this.#version }
    return checked
  }

  /** `#resolve` uncached; `restoring` admits new keys whose `onEvict` is still running. */
  #check(
    keys: readonly StreamKey[],
    held: boolean,
    restoring = false,
  ): E.Either<KeyError, Resolved> {
    if (!Array.isArray(keys)) {
      return E.left(
        new KeyError({ expected: "an array of keys (strings or finite numbers)", actual: keys }),
      )
    }
    if (keys.length === 0)
      return E.left(new KeyError({ expected: "at least one key", actual: keys }))
    if (keys.length > this.#capacity) {
      return E.left(
        new KeyError({
          expected: `at most ${this.#capacity} keys in one call (the capacity)`,
          actual: keys,
          detail: `${keys.length} keys`,
        }),
      )
    }
    const stamp = ++this.#stamp
    const n = keys.length
    const entries: (Entry | undefined)[] = new Array(n)
    const rows: (number | null)[] = new Array(n)
    const slots: number[] = new Array(n)
    const fresh: StreamKey[] = []
    let freshSet: Set<StreamKey> | undefined
    let anyAtInit = false
    for (let i = 0; i < n; i++) {
      const k: unknown = keys[i]
      if (!keyOk(k)) {
        return E.left(
          new KeyError({
            expected: "keys that are strings or finite numbers",
            actual: k,
            detail: `keys[${i}]`,
          }),
        )
      }
      const e = this.#entries.get(k)
      if (e !== undefined) {
        if (e.stamp === stamp) return E.left(duplicate(keys, k, i))
        e.stamp = stamp
        entries[i] = e
        rows[i] = e.atInit ? null : e.slot
        slots[i] = e.slot
        if (e.atInit) anyAtInit = true
        continue
      }
      if (!restoring && this.#evicting.has(k)) return E.left(beingEvicted(k, i))
      if (held) {
        return E.left(
          new KeyError({ expected: "a key held by the store", actual: k, detail: `keys[${i}]` }),
        )
      }
      freshSet ??= new Set()
      if (freshSet.has(k)) return E.left(duplicate(keys, k, i))
      freshSet.add(k)
      fresh.push(k)
      rows[i] = null
      slots[i] = -1
    }
    return E.right({ entries, fresh, rows, slots, anyAtInit, ordered: -1 })
  }

  /**
   * Marks entries used at `now` and moves them, in key order, to the most recent end. With the
   * checked keys of the call, a run already in place (nothing reordered since) costs nothing.
   */
  #touch(entries: readonly (Entry | undefined)[], now: number, resolved?: Resolved): void {
    if (resolved !== undefined && resolved.ordered === this.#order) {
      if (this.#ttl !== undefined) for (const e of entries) (e as Entry).used = now
      return
    }
    for (const e of entries) {
      if (e === undefined) continue
      e.used = now
      if (e === this.#tail) continue
      this.#unlink(e)
      this.#append(e)
    }
    if (resolved !== undefined) resolved.ordered = this.#order
  }

  sweep(): number {
    if (this.#disposed || this.#ttl === undefined || this.#inCallback > 0) return 0
    // A clock that gives no finite number evicts nothing here; the next fallible call reports it.
    const now = this.#now()
    if (now._tag === "Left") return 0
    let evicted = 0
    for (const victim of this.#idle(now.right, 0).victims) {
      // Each victim on its own: one that cannot be copied for `onEvict` stays held (and the
      // failure is reported by `flush`), the others go.
      const copied = this.#copyVictims([victim])
      if (copied._tag === "Left") {
        this.#errors.push({ key: victim.entry.key, error: copied.left })
        continue
      }
      this.#evict(victim)
      evicted++
    }
    if (evicted > 0) this.#version++
    return evicted
  }

  /** Streams idle past the TTL that the current call (`stamp`) does not name, oldest first. */
  #idle(now: number, stamp: number): { victims: Victim[]; stop: Entry | undefined } {
    const victims: Victim[] = []
    const ttl = this.#ttl
    let e = this.#head
    if (ttl !== undefined && this.#inCallback === 0) {
      for (; e !== undefined && now - e.used > ttl; e = e.next) {
        if (e.stamp !== stamp || stamp === 0) victims.push({ entry: e, reason: "idle" })
      }
    }
    return { victims, stop: e }
  }

  /**
   * Decides, without changing anything, which streams a call that admits `fresh` new keys
   * evicts (idle ones, then the least recently used as needed) and how far the slab grows.
   * `stamp` marks the call's own keys, which are never evicted.
   */
  #plan(
    operation: string,
    fresh: readonly StreamKey[],
    stamp: number,
    now: number,
  ): E.Either<BusyError, Plan> {
    const { victims, stop } = this.#idle(now, stamp)
    const slots = this.slots
    let growTo = slots
    let need = fresh.length - this.#free.length - victims.length
    if (need > 0 && slots < this.#capacity) {
      while (growTo - slots < need && growTo < this.#capacity)
        growTo = Math.min(growTo * 2, this.#capacity)
      need -= growTo - slots
    }
    if (need > 0) {
      const busy = this.#evictionLoop(operation, fresh)
      if (busy) return E.left(busy)
    }
    const ttl = this.#ttl
    for (let e = stop; e !== undefined && need > 0; e = e.next) {
      if (e.stamp === stamp) continue
      const idle = ttl !== undefined && now - e.used > ttl
      victims.push({ entry: e, reason: idle ? "idle" : "capacity" })
      need--
    }
    // `need` is 0 here: a call names at most `capacity` keys, so at capacity enough streams
    // that the call does not name are held.
    return E.right({ victims, growTo })
  }

  /**
   * A `BusyError` when evicting now could feed an endless chain of evictions: from inside an
   * `onEvict` callback, or when admitting a key whose own `onEvict` has not settled (a callback
   * that restores its stream into a full store would evict another, whose callback restores...).
   */
  #evictionLoop(operation: string, fresh: readonly StreamKey[]): BusyError | undefined {
    const advice =
      "a full store evicts no stream until it settles, so that evictions cannot chain forever: await store.flush() first"
    if (this.#inCallback > 0) {
      return new BusyError({ operation, inFlight: "an onEvict callback", detail: advice })
    }
    const own = fresh.find((k) => this.#evicting.has(k))
    if (own === undefined) return undefined
    return new BusyError({
      operation,
      inFlight: `the onEvict callback of stream ${showValue(own)}`,
      detail: advice,
    })
  }

  /** With `onEvict`: copies each victim's rows and starts reading them to the host; nothing on failure. */
  #copyVictims(victims: Victim[]): E.Either<BackendError, void> {
    if (this.#onEvict === undefined) return RIGHT
    for (let v = 0; v < victims.length; v++) {
      const victim = victims[v] as Victim
      const copied = this.#copyRows([victim.entry.atInit ? null : victim.entry.slot])
      let failed: BackendError | undefined = copied._tag === "Left" ? copied.left : undefined
      if (copied._tag === "Right") {
        const reads: Promise<HostTensor>[] = []
        for (let i = 0; i < copied.right.length && failed === undefined; i++) {
          const ctx = this.#contexts[i] as LeafContext
          const read = attempt(this.backend, "toHost", ctx.path, () =>
            this.backend.toHost(copied.right[i] as T),
          )
          if (read._tag === "Left") failed = read.left
          else reads.push(read.right)
        }
        victim.reads = reads
        victim.copies = copied.right
      }
      if (failed !== undefined) {
        this.#dropCopies(victims.slice(0, v + 1))
        return E.left(
          withDetail(failed, `copying evicted stream ${showValue(victim.entry.key)} for onEvict`),
        )
      }
    }
    return RIGHT
  }

  /** Unwinds `#copyVictims`: frees the copies and silences their reads. */
  #dropCopies(victims: readonly Victim[]): void {
    for (const v of victims) {
      v.reads?.forEach((p) => p.catch(() => undefined))
      if (v.copies) disposeQuietly(this.backend, v.copies as T[])
      delete v.reads
      delete v.copies
    }
  }

  /** Forgets a victim and hands its copied rows to `onEvict` (asynchronously). */
  #evict(victim: Victim): void {
    const { entry, reason, reads, copies } = victim
    this.#forget(entry)
    const onEvict = this.#onEvict
    if (onEvict === undefined || reads === undefined) return
    const key = entry.key
    this.#evicting.set(key, (this.#evicting.get(key) ?? 0) + 1)
    const p: Promise<void> = Promise.all(reads)
      .finally(() => disposeQuietly(this.backend, (copies ?? []) as T[]))
      .then(
        (hosts) => {
          const bytes = encodeState(this.spec, 1, hosts)
          this.#inCallback++
          try {
            return onEvict(key, bytes, reason)
          } finally {
            this.#inCallback--
          }
        },
        (e: unknown) => {
          throw new BackendError({
            backend: this.backend.name,
            operation: "toHost",
            cause: e,
            detail: `reading evicted stream ${showValue(key)} for onEvict`,
          })
        },
      )
      .catch((error: unknown) => {
        this.#errors.push({ key, error })
      })
      .finally(() => {
        this.#pending.delete(p)
        const left = (this.#evicting.get(key) ?? 1) - 1
        if (left === 0) this.#evicting.delete(key)
        else this.#evicting.set(key, left)
      })
    this.#pending.add(p)
  }

  #append(e: Entry): void {
    this.#order++
    e.prev = this.#tail
    e.next = undefined
    if (this.#tail === undefined) this.#head = e
    else this.#tail.next = e
    this.#tail = e
  }

  #unlink(e: Entry): void {
    this.#order++
    if (e.prev === undefined) this.#head = e.next
    else e.prev.next = e.next
    if (e.next === undefined) this.#tail = e.prev
    else e.next.prev = e.prev
    e.prev = e.next = undefined
  }

  /** Drops an entry and frees its slot. */
  #forget(e: Entry): void {
    this.#entries.delete(e.key)
    this.#unlink(e)
    this.#free.push(e.slot)
    this.#version++
  }

  /** New tensors holding the given slots' rows (init where null), one per leaf. */
  #copyRows(rows: readonly (number | null)[]): E.Either<BackendError, T[]> {
    const slabs = this.#slabs
    const contexts = this.#contexts
    const out: T[] = new Array(contexts.length)
    for (let i = 0; i < contexts.length; i++) {
      const ctx = contexts[i] as LeafContext
      try {
        out[i] = this.backend.gather(slabs[i] as T, rows, ctx)
      } catch (e) {
        disposeQuietly(this.backend, out.slice(0, i))
        return E.left(
          new BackendError({
            backend: this.backend.name,
            operation: "gather",
            path: ctx.path,
            cause: e,
          }),
        )
      }
    }
    return E.right(out)
  }

  /** Host copies of the given slots' rows (init where null), one per leaf. */
  async #readRows(rows: readonly (number | null)[]): Promise<E.Either<BackendError, HostTensor[]>> {
    const copied = this.#copyRows(rows)
    if (copied._tag === "Left") return copied
    // Every read starts before the first await, so later calls cannot reach the copies.
    const reads: Promise<HostTensor>[] = []
    for (let i = 0; i < copied.right.length; i++) {
      const ctx = this.#contexts[i] as LeafContext
      const read = attempt(this.backend, "toHost", ctx.path, () =>
        this.backend.toHost(copied.right[i] as T),
      )
      if (read._tag === "Left") {
        reads.forEach((p) => p.catch(() => undefined))
        disposeQuietly(this.backend, copied.right)
        return read
      }
      reads.push(read.right)
    }
    const settled = await Promise.allSettled(reads)
    disposeQuietly(this.backend, copied.right)
    const hosts: HostTensor[] = []
    for (let i = 0; i < settled.length; i++) {
      const s = settled[i] as PromiseSettledResult<HostTensor>
      if (s.status === "rejected") {
        const path = (this.#contexts[i] as LeafContext).path
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
    return E.right(hosts)
  }

  /**
   * Runs a plan's backend steps and writes `made` (freed here) into `slots` of the slabs it
   * leaves; the grown slabs, for `#commit`. Rows of the slots in `inPlace` are kept first and
   * put back if a leaf fails half-way, so that on `Left` nothing changed.
   */
  #writeAtomically(
    plan: Plan,
    slots: readonly number[],
    made: readonly T[],
    inPlace: ReadonlySet<number>,
  ): E.Either<BackendError, T[] | undefined> {
    const grown = this.#prepare(plan)
    if (grown._tag === "Left") {
      disposeQuietly(this.backend, made)
      return grown
    }
    const slabs = grown.right ?? this.#slabs
    let backup: T[] | undefined
    if (slots.some((s) => inPlace.has(s))) {
      const copied = buildPerLeaf(this.backend, "gather", this.#contexts, (i, ctx) =>
        this.backend.gather(slabs[i] as T, slots, ctx),
      )
      if (copied._tag === "Left") {
        disposeQuietly(this.backend, made)
        this.#unprepare(plan, grown.right)
        return copied
      }
      backup = copied.right
    }
    const failed = this.#writeRows(slabs, slots, made)
    disposeQuietly(this.backend, made)
    if (backup !== undefined) {
      if (failed !== undefined)
        this.#writeRows(slabs.slice(0, failed.leaf), slots, backup.slice(0, failed.leaf))
      disposeQuietly(this.backend, backup)
    }
    if (failed !== undefined) {
      this.#unprepare(plan, grown.right)
      return E.left(failed.failed)
    }
    return grown
  }

  /** Views of rows `start` to `start + count - 1` of every slab, `undefined` where a leaf has none. */
  #probe(start: number, count: number): E.Either<BackendError, (T | undefined)[]> {
    const view = this.backend.view as NonNullable<StateBackend<T, In>["view"]>
    const slabs = this.#slabs
    const spare = this.#spare
    if (spare !== undefined) {
      this.#spare = undefined
      // Still live: a caller that kept a view it gave back may have freed it since.
      if (
        spare.slabs === slabs &&
        spare.start === start &&
        spare.count === count &&
        spare.views.every((v) => this.#alive(v))
      )
        return E.right(spare.views)
      disposeQuietly(this.backend, spare.views)
    }
    const contexts = this.#contexts
    const out: (T | undefined)[] = new Array(contexts.length)
    for (let i = 0; i < contexts.length; i++) {
      const ctx = contexts[i] as LeafContext
      const made = attempt(this.backend, "view", ctx.path, () =>
        view.call(this.backend, slabs[i] as T, start, count, ctx),
      )
      if (made._tag === "Left") {
        this.#drop(out)
        return made
      }
      out[i] = made.right
    }
    return E.right(out)
  }

  /** Frees the views kept by `scatter` (their slabs are being replaced or freed). */
  #dropSpare(): void {
    const spare = this.#spare
    if (spare === undefined) return
    this.#spare = undefined
    disposeQuietly(this.backend, spare.views)
  }

  /**
   * Whether every one of `leaves` (a tree's, in spec order) is a live view `gather` handed out of
   * exactly the rows `slots` of its own slab: given back, they need no check and no write.
   */
  #allViews(leaves: readonly T[], slots: readonly number[]): boolean {
    if (!inOrder(slots)) return false
    const start = slots[0] as number
    for (let i = 0; i < leaves.length; i++) {
      const t = leaves[i] as T
      const seen = this.#views.find((v) => v.tensor === t)
      if (
        seen === undefined ||
        seen.slab !== this.#slabs[i] ||
        seen.start !== start ||
        seen.count !== slots.length
      )
        return false
      if (!this.#alive(t)) return false
    }
    return true
  }

  /** Whether the backend still describes `t` (not a tensor freed since, nor one it cannot read). */
  #alive(t: T): boolean {
    try {
      return this.backend.describe(t) !== undefined
    } catch {
      return false
    }
  }

  /** Frees views made by `#probe` that are not handed out. */
  #drop(views: readonly (T | undefined)[]): void {
    disposeQuietly(
      this.backend,
      views.filter((v) => v !== undefined),
    )
  }

  /** Records views handed out (at most 64 kept): `scatter` of them to the same rows writes nothing. */
  #handOut(views: readonly (T | undefined)[], start: number, count: number): void {
    for (let i = 0; i < views.length; i++) {
      const tensor = views[i]
      if (tensor === undefined) continue
      const seen = { tensor, slab: this.#slabs[i], start, count }
      if (this.#views.push(seen) > 64) this.#views.shift()
    }
  }

  /**
   * The batch of held keys off init, as views where the backend can share the rows. Rows that do
   * not lie side by side in key order, or that the backend shares only from the slab's first
   * row (a runtime's GPU tensor starts at its buffer's start), move first (`#arranged`).
   */
  #shared(slots: readonly number[], rows: readonly (number | null)[]): E.Either<BackendError, T[]> {
    const { view, reorder } = this.backend
    if (view === undefined) return this.#copyRows(rows)
    const canMove = reorder !== undefined && this.#movesHelp
    if (!inOrder(slots)) return canMove ? this.#arranged(slots, rows) : this.#copyRows(rows)
    const start = slots[0] as number
    const n = slots.length
    const here = this.#probe(start, n)
    if (here._tag === "Left") return here
    if (start !== 0 && canMove && here.right.some((v) => v === undefined)) {
      // Shared where they lie for some leaves only: from the slab's first row, perhaps all.
      this.#drop(here.right)
      return this.#arranged(slots, rows, 0)
    }
    return this.#completed(here.right, start, rows)
  }

  /** The views of `#probe` handed out, and copies of the rows `rows` where a leaf has none. */
  #completed(
    views: readonly (T | undefined)[],
    start: number,
    rows: readonly (number | null)[],
  ): E.Either<BackendError, T[]> {
    const out: T[] = new Array(views.length)
    for (let i = 0; i < views.length; i++) {
      const v = views[i]
      if (v !== undefined) {
        out[i] = v
        continue
      }
      const ctx = this.#contexts[i] as LeafContext
      const copy = attempt(this.backend, "gather", ctx.path, () =>
        this.backend.gather(this.#slabs[i] as T, rows, ctx),
      )
      if (copy._tag === "Left") {
        disposeQuietly(this.backend, out.slice(0, i))
        this.#drop(views.slice(i + 1))
        return copy
      }
      out[i] = copy.right
    }
    this.#handOut(views, start, rows.length)
    return E.right(out)
  }

  /**
   * Views of the rows of held keys, moved first so that they lie side by side in key order
   * where the backend can share them (the backend's `reorder`, in place, as few rows as can be;
   * from the slab's first row if the backend shares no other, or from `at`): later steps over
   * the same keys find them there. When some leaf's rows cannot be shared wherever they lie (a
   * dim before the batch axis), nothing moves, now or later: the rows are views where they are
   * and copies otherwise.
   */
  #arranged(
    slots: readonly number[],
    rows: readonly (number | null)[],
    at?: number,
  ): E.Either<BackendError, T[]> {
    const reorder = this.backend.reorder as NonNullable<StateBackend<T, In>["reorder"]>
    const n = slots.length
    let plan = arrangement(slots, this.slots, at)
    let shared = this.#probe(plan.start, n)
    if (shared._tag === "Left") return shared
    if (plan.start !== 0 && shared.right.some((v) => v === undefined)) {
      this.#drop(shared.right)
      plan = arrangement(slots, this.slots, 0)
      shared = this.#probe(0, n)
      if (shared._tag === "Left") return shared
    }
    if (shared.right.some((v) => v === undefined)) {
      // A leaf copied each step anyway: moving the others would save little.
      this.#drop(shared.right)
      this.#movesHelp = false
      return this.#shared(slots, rows)
    }
    const views = shared.right as T[]
    const { start, from } = plan
    const slabs = this.#slabs
    const contexts = this.#contexts
    // Leaf after leaf; a refused move puts the leaves moved before it back.
    for (let i = 0; i < contexts.length; i++) {
      const ctx = contexts[i] as LeafContext
      const moved = attempt(this.backend, "reorder", ctx.path, () =>
        reorder.call(this.backend, slabs[i] as T, from, ctx),
      )
      if (moved._tag === "Left") {
        const back = inverse(from)
        for (let k = 0; k < i; k++) {
          const at = contexts[k] as LeafContext
          attempt(this.backend, "reorder", at.path, () =>
            reorder.call(this.backend, slabs[k] as T, back, at),
          )
        }
        this.#drop(views)
        return moved
      }
    }
    // Every stream and free slot goes where its rows went.
    const to = inverse(from)
    for (const e of this.#entries.values()) e.slot = to[e.slot] as number
    const free = this.#free
    for (let k = 0; k < free.length; k++) free[k] = to[free[k] as number] as number
    free.sort((a, b) => b - a)
    this.#version++
    // No view handed out before shows the rows it did; these do.
    this.#views.length = 0
    this.#handOut(views, start, n)
    return E.right(views)
  }

  /** Writes row `i` of each leaf of `src` into slot `slots[i]` of `slabs`; the leaf index of a failure. */
  #writeRows(
    slabs: readonly T[],
    slots: readonly number[],
    src: readonly (T | In)[],
    skip?: readonly boolean[],
  ): { failed: BackendError; leaf: number } | undefined {
    const contexts = this.#contexts
    for (let i = 0; i < contexts.length; i++) {
      if (skip?.[i] === true) continue
      const ctx = contexts[i] as LeafContext
      try {
        this.backend.scatter(slabs[i] as T, slots, src[i] as T | In, ctx)
      } catch (e) {
        const failed = new BackendError({
          backend: this.backend.name,
          operation: "scatter",
          path: ctx.path,
          cause: e,
        })
        return { failed, leaf: i }
      }
    }
    return undefined
  }

  /**
   * A `ShapeMismatchError` when rows of `shape` do not fit leaf `i`'s slab in a named dim. With
   * `longer`, rows longer along a dim that grows fit (or shorter ones too, with `shorter`), and
   * the largest size of each such dim is recorded there.
   */
  #misfit(
    i: number,
    shape: readonly number[],
    batchLabel: string | number,
    longer?: Map<string, number>,
    shorter = false,
  ): ShapeMismatchError | null {
    const named = this.#named[i] as Named[]
    for (const { axis, name, size } of named) {
      const at = shape[axis] as number
      if (at === size) continue
      if (longer !== undefined && (at > size || shorter) && !this.#fixedDims.has(name)) {
        if (at > (longer.get(name) ?? size)) longer.set(name, at)
        continue
      }
      const leaf = this.#contexts[i] as LeafContext
      const expected = shape.map((d, a) =>
        a === leaf.batchAxis ? batchLabel : (named.find((x) => x.axis === a)?.size ?? d),
      )
      return new ShapeMismatchError({
        path: leaf.path,
        expected,
        actual: shape,
        detail: `a store's rows keep the slab's size on axis ${axis}`,
      })
    }
    return null
  }

  /**
   * Runs the backend steps a plan needs (growing the slab, copying victims for `onEvict`) and
   * returns the new slabs (or `undefined` when not growing); on failure, nothing is left behind.
   */
  #prepare(plan: Plan): E.Either<BackendError, T[] | undefined> {
    let grown: T[] | undefined
    const slots = this.slots
    if (plan.growTo > slots) {
      const rows: (number | null)[] = Array.from({ length: plan.growTo }, (_, r) =>
        r < slots ? r : null,
      )
      const next = this.#copyRows(rows)
      if (next._tag === "Left") return next
      grown = next.right
    }
    const copied = this.#copyVictims(plan.victims)
    if (copied._tag === "Left") {
      if (grown) disposeQuietly(this.backend, grown)
      return copied
    }
    return E.right(grown)
  }

  /** A held stream whose rows were written (not at init), if any. */
  #holder(): Entry | undefined {
    for (const e of this.#entries.values()) if (!e.atInit) return e
    return undefined
  }

  /**
   * Gives the named dims of `sizes` those sizes, in new slabs it installs at once; returns what
   * they replaced, for `#settle` to keep or undo. A stream's rows are copied into the new slabs
   * with `writeAt` (growing only); with no stream holding rows there is nothing to copy. On
   * `Left` nothing changed.
   */
  #resize(
    sizes: ReadonlyMap<string, number>,
  ): E.Either<OptionError | BackendError, Resized<T> | undefined> {
    const { backend } = this
    const slots = this.slots
    const copy = this.#holder() !== undefined
    const writeAt = backend.writeAt
    const offsets = new Array<number>(slots).fill(0)
    const made: T[] = []
    let slabs: T[] | undefined
    for (let i = 0; i < this.#contexts.length; i++) {
      const dims = (this.#named[i] as Named[]).filter(
        (d) => (sizes.get(d.name) ?? d.size) !== d.size,
      )
      if (dims.length === 0) continue
      const ctx = this.#contexts[i] as LeafContext
      const leaf = this.spec.leaves[i] as ResolvedLeaf
      if (copy && writeAt === undefined) {
        disposeQuietly(backend, made)
        return E.left(
          new OptionError({
            path: "backend",
            expected: "a backend with writeAt, to grow a named dim on the backend",
            actual: backend,
            detail: `backend ${backend.name} has no writeAt: dim ${showValue((dims[0] as Named).name)} of ${ctx.path} cannot grow`,
          }),
        )
      }
      const shape = leaf.shape.map((d, a) => (a === ctx.batchAxis ? slots : d)) as number[]
      for (const d of this.#named[i] as Named[]) shape[d.axis] = d.size
      // Growing with rows to keep: one dim at a time, each copy along one axis.
      const steps = copy ? dims : [dims[dims.length - 1] as Named]
      if (!copy) for (const d of dims) shape[d.axis] = sizes.get(d.name) as number
      let held = this.#slabs[i] as T
      for (const d of steps) {
        shape[d.axis] = sizes.get(d.name) as number
        const next = attempt(backend, "allocate", ctx.path, () =>
          backend.allocate(shape.slice(), leaf.dtype, ctx),
        )
        if (next._tag === "Left") {
          disposeQuietly(backend, made)
          return next
        }
        made.push(next.right)
        if (copy) {
          const src = held
          const wrote = attempt(backend, "writeAt", ctx.path, () =>
            (writeAt as NonNullable<typeof writeAt>).call(
              backend,
              next.right,
              d.axis,
              offsets,
              src,
              ctx,
            ),
          )
          if (wrote._tag === "Left") {
            disposeQuietly(backend, made)
            return wrote
          }
        }
        held = next.right
      }
      ;(slabs ??= this.#slabs.slice())[i] = held
    }
    if (slabs === undefined) return NOT_RESIZED
    const installed = slabs
    disposeQuietly(
      backend,
      made.filter((t) => !installed.includes(t)),
    )
    const prior: Resized<T> = { slabs: this.#slabs, named: this.#named, installed }
    this.#dropSpare()
    this.#slabs = installed
    this.#named = this.#named.map((dims) =>
      dims.map((d) => ({ ...d, size: sizes.get(d.name) ?? d.size })),
    )
    return E.right(prior)
  }

  /**
   * Keeps (`ok`) or undoes what `#resize` installed, and frees the slabs no longer held (views
   * `gather` made of replaced ones are forgotten).
   */
  #settle(prior: Resized<T> | undefined, ok: boolean): void {
    if (prior === undefined) return
    const { slabs, installed } = prior
    if (!ok) {
      this.#slabs = slabs
      this.#named = prior.named
      disposeQuietly(
        this.backend,
        installed.filter((t, i) => t !== slabs[i]),
      )
      return
    }
    const replaced = slabs.filter((t, i) => t !== installed[i])
    const views = this.#views.filter((v) => !replaced.includes(v.slab as T))
    this.#views.splice(0, this.#views.length, ...views)
    disposeQuietly(this.backend, replaced)
  }

  /** Undoes `#prepare`. */
  #unprepare(plan: Plan, grown: T[] | undefined): void {
    if (grown) disposeQuietly(this.backend, grown)
    this.#dropCopies(plan.victims)
  }

  /**
   * Applies a prepared plan (cannot fail): installs the grown slab, evicts the victims, and gives
   * each new key a free slot, at init. Returns the new entries in order.
   */
  #commit(plan: Plan, grown: T[] | undefined, fresh: readonly StreamKey[], now: number): Entry[] {
    if (grown !== undefined) {
      const old = this.#slabs
      const slots = this.slots
      this.#dropSpare()
      this.#slabs = grown
      disposeQuietly(this.backend, old)
      // Beneath the free slots, lowest on top: a call's new keys take slots in key order.
      const added: number[] = []
      for (let s = plan.growTo - 1; s >= slots; s--) added.push(s)
      this.#free.unshift(...added)
    }
    for (const v of plan.victims) this.#evict(v)
    const added: Entry[] = []
    for (const key of fresh) {
      const e: Entry = {
        key,
        slot: this.#free.pop() as number,
        used: now,
        stamp: 0,
        prev: undefined,
        next: undefined,
        atInit: true,
      }
      this.#entries.set(key, e)
      this.#append(e)
      added.push(e)
    }
    this.#version++
    return added
  }

  /**
   * The slot `#commit` will give the `f`-th new key: it puts grown slots beneath the free ones,
   * pushes victims' slots, then pops (victims' slots, the free ones, the grown ones in order).
   */
  #freeSlot(plan: Plan, f: number): number {
    const { victims } = plan
    if (f < victims.length) return (victims[victims.length - 1 - f] as Victim).entry.slot
    const g = f - victims.length
    const free = this.#free.length
    if (g < free) return this.#free[free - 1 - g] as number
    return this.slots + (g - free)
  }

  gather(keys: readonly StreamKey[], options?: GatherOptions): E.Either<GatherError, StateTree<T>> {
    const live = this.#live()
    if (live._tag === "Left") return live
    const views = flag(options, "views")
    if (views._tag === "Left") return views
    const checked = this.#resolve(keys, false)
    if (checked._tag === "Left") return checked
    const now = this.#now()
    if (now._tag === "Left") return now
    const { entries, fresh, rows, slots } = checked.right
    if (fresh.length === 0 && !this.#idleDue(now.right)) {
      // Hot path: every key held, nothing to evict. Only copies (or views, the rows perhaps moved
      // first, which changes no stream's state): nothing to undo.
      const batch =
        !views.right || checked.right.anyAtInit ? this.#copyRows(rows) : this.#shared(slots, rows)
      if (batch._tag === "Left") return batch
      // With views, the `scatter` that gives them back is the use: a step refused in between
      // leaves the streams' recency as it was.
      if (!views.right) this.#touch(entries, now.right, checked.right)
      return E.right(unflatten(this.spec.def, batch.right))
    }
    const stamp = this.#stampAll(entries)
    const plan = this.#plan("gather", fresh, stamp, now.right)
    if (plan._tag === "Left") return plan
    const grown = this.#prepare(plan.right)
    if (grown._tag === "Left") return grown
    // The batch is read from the current slab: new keys read as init (null rows).
    const batch = this.#copyRows(rows)
    if (batch._tag === "Left") {
      this.#unprepare(plan.right, grown.right)
      return batch
    }
    const added = this.#commit(plan.right, grown.right, fresh, now.right)
    const all: Entry[] = new Array(entries.length)
    for (let i = 0, next = 0; i < entries.length; i++)
      all[i] = entries[i] ?? (added[next++] as Entry)
    this.#touch(all, now.right)
    return E.right(unflatten(this.spec.def, batch.right))
  }

  /** Whether the least recently used stream is idle past the TTL (a sweep has work). */
  #idleDue(now: number): boolean {
    const ttl = this.#ttl
    const head = this.#head
    return (
      ttl !== undefined && head !== undefined && now - head.used > ttl && this.#inCallback === 0
    )
  }

  /** Marks the held entries of a call with a new stamp (its keys are never evicted by it). */
  #stampAll(entries: readonly (Entry | undefined)[]): number {
    const stamp = ++this.#stamp
    for (const e of entries) if (e !== undefined) e.stamp = stamp
    return stamp
  }

  /**
   * The leaves of a tree given to `scatter`, checked (structure, liveness, dtypes, shapes, batch
   * size), and the named dims it would grow (`grow`) when their sizes must match the slabs'.
   * `flat`: its leaves or where it departs, when already walked.
   */
  #checkedLeaves(
    next: StateTree<T | In>,
    flat: ReturnType<typeof leavesAlong<T>> | undefined,
    count: number,
    growing: boolean,
  ): E.Either<ScatterError, { leaves: T[]; grow: Map<string, number> | undefined }> {
    const tensors = Array.isArray(flat)
      ? checkLeaves(this.spec, this.backend, flat, count)
      : checkTensors(this.spec, this.backend, next as StateTree<T>, count)
    if (tensors._tag === "Left") return tensors
    const { leaves, infos } = tensors.right
    if (!this.spec.hasNamedDims) return E.right({ leaves, grow: undefined })
    // Streams share one slab shape: the named dims must match it, not only agree (or, growing,
    // may be longer: the slab grows first).
    const longer = growing ? new Map<string, number>() : undefined
    for (let i = 0; i < infos.length; i++) {
      const misfit = this.#misfit(
        i,
        (infos[i] as { shape: readonly number[] }).shape,
        this.spec.batchDim,
        longer,
      )
      if (misfit) return E.left(misfit)
    }
    return E.right({ leaves, grow: longer !== undefined && longer.size > 0 ? longer : undefined })
  }

  scatter(
    keys: readonly StreamKey[],
    next: StateTree<T | In>,
    options?: ScatterOptions,
  ): E.Either<ScatterError, void> {
    const live = this.#live()
    if (live._tag === "Left") return live
    const growing = flag(options, "grow")
    if (growing._tag === "Left") return growing
    const checked = this.#resolve(keys, true)
    if (checked._tag === "Left") return checked
    const { entries, slots } = checked.right
    // Views of exactly these rows given back (a step over streams side by side): nothing to
    // check or write, and kept for the next `gather` of the same rows.
    const flat = this.#views.length > 0 ? leavesAlong<T>(this.spec.def, next) : undefined
    const back = Array.isArray(flat) && this.#allViews(flat, slots) ? flat : undefined
    const given =
      back === undefined ? this.#checkedLeaves(next, flat, keys.length, growing.right) : undefined
    if (given?._tag === "Left") return given
    const leaves: readonly T[] = back ?? (given?.right.leaves as T[])
    const grow = given?.right.grow
    const now = this.#now()
    if (now._tag === "Left") return now
    // Views of this store's rows: given back to the rows they show, nothing to write; written
    // elsewhere, copied first (the write could overwrite rows the view still has to give). Views
    // given back whole (`back`) were found so already.
    let src: readonly (T | In)[] = leaves
    let skip: boolean[] | undefined
    let viewCopies: T[] | undefined
    for (let i = 0; back === undefined && i < leaves.length; i++) {
      const seen = this.#views.find((v) => v.tensor === leaves[i])
      if (seen === undefined || seen.slab !== this.#slabs[i]) continue
      if (seen.start === slots[0] && seen.count === slots.length && inOrder(slots)) {
        skip ??= new Array<boolean>(leaves.length).fill(false)
        skip[i] = true
        continue
      }
      const ctx = this.#contexts[i] as LeafContext
      const copy = attempt(this.backend, "gather", ctx.path, () =>
        this.backend.gather(leaves[i] as T, allRows(slots.length), ctx),
      )
      if (copy._tag === "Left") {
        if (viewCopies) disposeQuietly(this.backend, viewCopies)
        return copy
      }
      ;(viewCopies ??= []).push(copy.right)
      if (src === leaves) src = leaves.slice()
      ;(src as (T | In)[])[i] = copy.right
    }
    // Longer rows: every stream's rows grow first (undone below if the call fails).
    let resized: Resized<T> | undefined
    if (grow !== undefined) {
      const made = this.#resize(grow)
      if (made._tag === "Left") {
        if (viewCopies) disposeQuietly(this.backend, viewCopies)
        return made
      }
      resized = made.right
    }
    let plan = NO_VICTIMS
    if (this.#idleDue(now.right)) {
      plan = { victims: this.#idle(now.right, this.#stampAll(entries)).victims, growTo: 0 }
      const copied = this.#copyVictims(plan.victims)
      if (copied._tag === "Left") {
        if (viewCopies) disposeQuietly(this.backend, viewCopies)
        this.#settle(resized, false)
        return copied
      }
    }
    const failed = back === undefined ? this.#writeRows(this.#slabs, slots, src, skip) : undefined
    if (failed !== undefined) {
      if (viewCopies) disposeQuietly(this.backend, viewCopies)
      this.#dropCopies(plan.victims)
      this.#settle(resized, false)
      return E.left(failed.failed)
    }
    if (viewCopies) disposeQuietly(this.backend, viewCopies)
    // The store changed: no view handed out before stays valid (see `gather`), whether given
    // back or not (a session replaces its views of a bookkeeping leaf), so none is kept.
    this.#views.length = 0
    this.#settle(resized, true)
    if (back === undefined) disposeQuietly(this.backend, leaves as T[])
    else {
      this.#dropSpare()
      this.#spare = {
        start: slots[0] as number,
        count: slots.length,
        slabs: this.#slabs,
        views: back,
      }
    }
    if (checked.right.anyAtInit) {
      for (const e of entries) (e as Entry).atInit = false
      this.#version++
    }
    for (const v of plan.victims) this.#evict(v)
    this.#touch(entries, now.right, checked.right)
    return RIGHT
  }

  reset(keys: readonly StreamKey[]): E.Either<StoreResetError, void> {
    const live = this.#live()
    if (live._tag === "Left") return live
    const checked = this.#resolve(keys, true)
    if (checked._tag === "Left") return checked
    // Rows are set to init lazily: the next read of a stream at init reads `init`, and the next
    // write replaces every row. Nothing to fail here.
    for (const e of checked.right.entries) (e as Entry).atInit = true
    this.#version++
    return RIGHT
  }

  dims(): Readonly<Record<string, number>> {
    const out: Record<string, number> = {}
    for (const dims of this.#named) for (const { name, size } of dims) out[name] = size
    return out
  }

  resizeDim(name: string, size: number): E.Either<ResizeDimError, void> {
    const live = this.#live()
    if (live._tag === "Left") return live
    const current = this.#named.flat().find((d) => d.name === name)?.size
    if (current === undefined || this.#fixedDims.has(name)) {
      const grows = Object.keys(this.dims()).filter((d) => !this.#fixedDims.has(d))
      return E.left(
        new OptionError({
          path: "name",
          expected: `a named dim of the store that changes size (${grows.map((d) => showValue(d)).join(", ") || "it has none"})`,
          actual: name,
          ...(current === undefined
            ? {}
            : { detail: "its size was set by the dims option or by an init tensor" }),
        }),
      )
    }
    if (!Number.isSafeInteger(size) || size < 0) {
      return E.left(
        new OptionError({ path: "size", expected: "a non-negative integer", actual: size }),
      )
    }
    if (size === current) return RIGHT
    if (size < current) {
      const holder = this.#holder()
      if (holder !== undefined) {
        return E.left(
          new OptionError({
            path: "size",
            expected: `at least ${current} (the size now) while a stream holds rows`,
            actual: size,
            detail: `stream ${showValue(holder.key)} holds rows: a store shrinks only while every stream is new or reset`,
          }),
        )
      }
    }
    const resized = this.#resize(new Map([[name, size]]))
    if (resized._tag === "Left") return resized
    this.#settle(resized.right, true)
    return RIGHT
  }

  delete(key: StreamKey): boolean {
    if (this.#disposed || !keyOk(key)) return false
    const entry = this.#entries.get(key)
    if (entry === undefined) return false
    this.#forget(entry)
    return true
  }

  async snapshot(
    key: StreamKey,
    options?: SnapshotOptions,
  ): Promise<E.Either<StoreSnapshotError, Uint8Array>> {
    const live = this.#live()
    if (live._tag === "Left") return live
    if (!keyOk(key)) {
      return E.left(new KeyError({ expected: "a string or finite number key", actual: key }))
    }
    const entry = this.#entries.get(key)
    if (entry === undefined) {
      return E.left(
        this.#evicting.has(key)
          ? beingEvicted(key, undefined)
          : new KeyError({ expected: "a key held by the store", actual: key }),
      )
    }
    const hosts = await this.#readRows([entry.atInit ? null : entry.slot])
    if (hosts._tag === "Left") return hosts
    try {
      return E.right(encodeState(this.spec, 1, hosts.right, options?.metadata))
    } catch (e) {
      // Metadata that is not strings, or that reuses a statesaver key.
      if (e instanceof SnapshotFormatError) return E.left(e)
      throw e
    }
  }

  restore(
    key: StreamKey,
    snapshot: Uint8Array | Snapshot,
  ): E.Either<StoreRestoreError, SnapshotMetadata> {
    const live = this.#live()
    if (live._tag === "Left") return live
    if (!keyOk(key)) {
      return E.left(new KeyError({ expected: "a string or finite number key", actual: key }))
    }
    const restored = this.#restoreItems([{ key, snapshot }], false)
    return restored._tag === "Left" ? restored : E.right(restored.right[0] as SnapshotMetadata)
  }

  async snapshotMany(
    keys: readonly StreamKey[],
    options?: SnapshotOptions,
  ): Promise<E.Either<StoreSnapshotError, Uint8Array[]>> {
    const live = this.#live()
    if (live._tag === "Left") return live
    const checked = this.#check(keys, true)
    if (checked._tag === "Left") return checked
    const bad = metadataProblem(options?.metadata)
    if (bad) {
      return E.left(new SnapshotFormatError({ path: bad[0], expected: bad[1], actual: bad[2] }))
    }
    const hosts = await this.#readRows(checked.right.rows)
    if (hosts._tag === "Left") return hosts
    return E.right(encodeRows(this.spec, hosts.right, keys.length, options?.metadata))
  }

  restoreMany(items: readonly StreamSnapshot[]): E.Either<StoreRestoreError, SnapshotMetadata[]> {
    const live = this.#live()
    if (live._tag === "Left") return live
    if (!Array.isArray(items) || items.some((it: unknown) => !isPlainRecord(it))) {
      return E.left(
        new KeyError({ expected: "an array of { key, snapshot } records", actual: items }),
      )
    }
    return this.#restoreItems(items, true)
  }

  fork(from: StreamKey, to: readonly StreamKey[]): E.Either<GatherError, void> {
    const live = this.#live()
    if (live._tag === "Left") return live
    const source = keyOk(from) ? this.#entries.get(from) : undefined
    if (source === undefined) {
      return E.left(
        new KeyError({
          expected: keyOk(from) ? "a key held by the store" : "a string or finite number key",
          actual: from,
          detail: "from",
        }),
      )
    }
    const checked = this.#check(to, false)
    if (checked._tag === "Left") return E.left(named(checked.left, "to"))
    const { entries, fresh } = checked.right
    if (!entries.includes(source) && to.length >= this.#capacity) {
      return E.left(
        new KeyError({
          expected: `at most ${this.#capacity - 1} keys besides from (the capacity is ${this.#capacity})`,
          actual: to,
          detail: `${to.length} keys in to`,
        }),
      )
    }
    const now = this.#now()
    if (now._tag === "Left") return now
    const plan = this.#plan("fork", fresh, this.#stampAll([source, ...entries]), now.right)
    if (plan._tag === "Left") return plan
    // The slot of each key of `to` but `from`, in order; new keys get the slots `#commit` gives.
    const slots: number[] = []
    const targets: (Entry | undefined)[] = []
    for (let k = 0, f = 0; k < to.length; k++) {
      const e = entries[k]
      if (e === source) continue
      slots.push(e?.slot ?? this.#freeSlot(plan.right, f++))
      targets.push(e)
    }
    let grown: T[] | undefined
    if (source.atInit || slots.length === 0) {
      // A stream at init is copied by marking the targets at init: no rows to move.
      const prepared = this.#prepare(plan.right)
      if (prepared._tag === "Left") return prepared
      grown = prepared.right
    } else {
      const made = this.#copyRows(slots.map(() => source.slot))
      if (made._tag === "Left") return made
      const inPlace = new Set<number>()
      for (const e of targets) if (e !== undefined && !e.atInit) inPlace.add(e.slot)
      for (const v of plan.right.victims) if (!v.entry.atInit) inPlace.add(v.entry.slot)
      const written = this.#writeAtomically(plan.right, slots, made.right, inPlace)
      if (written._tag === "Left") return written
      grown = written.right
    }
    const added = this.#commit(plan.right, grown, fresh, now.right)
    const all: Entry[] = [source]
    for (let k = 0, f = 0; k < targets.length; k++) {
      const e = targets[k] ?? (added[f++] as Entry)
      e.atInit = source.atInit
      all.push(e)
    }
    this.#version++
    this.#touch(all, now.right)
    return RIGHT
  }

  peek(
    keys: readonly StreamKey[],
  ): E.Either<DisposedError | KeyError | BackendError, StateTree<T>> {
    const live = this.#live()
    if (live._tag === "Left") return live
    const checked = this.#check(keys, true)
    if (checked._tag === "Left") return checked
    const batch = this.#copyRows(checked.right.rows)
    return batch._tag === "Left" ? batch : E.right(unflatten(this.spec.def, batch.right))
  }

  /** `restoreMany`; errors of a snapshot name its item when `named`. */
  #restoreItems(
    items: readonly StreamSnapshot[],
    named: boolean,
  ): E.Either<StoreRestoreError, SnapshotMetadata[]> {
    const keys = items.map((it) => it.key)
    const checked = this.#check(keys, false, true)
    if (checked._tag === "Left") return checked
    const read = this.#stackSnapshots(items, named)
    if (read._tag === "Left") return read
    const { hosts, metadata, sizes } = read.right
    const now = this.#now()
    if (now._tag === "Left") return now
    const { entries, fresh } = checked.right
    const n = items.length
    const plan = this.#plan("restore", fresh, this.#stampAll(entries), now.right)
    if (plan._tag === "Left") return plan
    // Snapshots holding more positions than the store: every stream's rows grow first.
    const resized = sizes.size > 0 ? this.#resize(sizes) : NOT_RESIZED
    if (resized._tag === "Left") return resized
    const made = buildPerLeaf(this.backend, "fromHost", this.#contexts, (i, ctx) =>
      this.backend.fromHost(hosts[i] as HostTensor, ctx),
    )
    if (made._tag === "Left") {
      this.#settle(resized.right, false)
      return made
    }
    const slots: number[] = new Array(n)
    for (let k = 0, f = 0; k < n; k++)
      slots[k] = entries[k]?.slot ?? this.#freeSlot(plan.right, f++)
    const inPlace = new Set<number>()
    for (const e of entries) if (e !== undefined && !e.atInit) inPlace.add(e.slot)
    for (const v of plan.right.victims) if (!v.entry.atInit) inPlace.add(v.entry.slot)
    const written = this.#writeAtomically(plan.right, slots, made.right, inPlace)
    if (written._tag === "Left") {
      this.#settle(resized.right, false)
      return written
    }
    this.#settle(resized.right, true)
    const added = this.#commit(plan.right, written.right, fresh, now.right)
    const all: Entry[] = new Array(n)
    for (let k = 0, f = 0; k < n; k++) all[k] = entries[k] ?? (added[f++] as Entry)
    for (const e of all) e.atInit = false
    this.#version++
    this.#touch(all, now.right)
    return E.right(metadata)
  }

  /**
   * The snapshots' rows stacked in item order, one host tensor per leaf, and their metadata.
   * A snapshot whose header is, byte for byte, the header this store writes for the snapshot
   * decoded just before it has the same leaves, shapes and metadata: its rows are copied
   * without decoding it again. Errors name the item. Along named dims that grow, rows are
   * stacked at the longest size among the snapshots and the store's (`sizes` holds those past
   * the store's), shorter ones padded with `init`.
   */
  #stackSnapshots(
    items: readonly StreamSnapshot[],
    named: boolean,
  ): E.Either<
    SnapshotCheckError | ShapeMismatchError,
    { hosts: HostTensor[]; metadata: SnapshotMetadata[]; sizes: Map<string, number> }
  > {
    const n = items.length
    const contexts = this.#contexts
    const hosts: HostTensor[] = []
    const batches: Uint8Array[] = []
    const copies: RowCopy[] = []
    const metadata: SnapshotMetadata[] = new Array(n)
    let known: { bytes: Uint8Array; start: number; offsets: number[] } | undefined
    const sizes = new Map<string, number>()
    for (let k = 0; k < n; k++) {
      const given: unknown = (items[k] as StreamSnapshot).snapshot
      if (known !== undefined && given instanceof Uint8Array && sameHeader(given, known)) {
        if (this.#boolsOk(given, known.start, known.offsets)) {
          for (let i = 0; i < contexts.length; i++) {
            const at = known.start + (known.offsets[i] as number)
            writeRow(copies[i] as RowCopy, given, at, batches[i] as Uint8Array, n, k)
          }
          metadata[k] = metadata[k - 1] as SnapshotMetadata
          continue
        }
      }
      const decoded = toSnapshot(given)
      if (decoded._tag === "Left")
        return E.left(named ? inItem(decoded.left, k, items) : decoded.left)
      const checked = checkSnapshot(this.spec, decoded.right, 1)
      if (checked._tag === "Left")
        return E.left(named ? inItem(checked.left, k, items) : checked.left)
      const rows = checked.right
      let total = 0
      for (const size of sizes.values()) total += size
      for (let i = 0; i < rows.length; i++) {
        const misfit = this.#misfit(i, (rows[i] as HostTensor).shape, 1, sizes, true)
        if (misfit) return E.left(named ? inItem(misfit, k, items) : misfit)
      }
      if (this.spec.hasNamedDims) {
        let grown = -total
        for (const size of sizes.values()) grown += size
        for (let i = 0; i < rows.length; i++) {
          const dims = this.#named[i] as Named[]
          const ctx = contexts[i] as LeafContext
          rows[i] = padded(rows[i] as HostTensor, dims, sizes, ctx)
          // A longer snapshot: the rows stacked so far take its sizes too.
          if (grown > 0 && k > 0) {
            const batch = padded(hosts[i] as HostTensor, dims, sizes, ctx)
            hosts[i] = batch
            batches[i] = bytesOf(batch.data)
            copies[i] = rowCopy(batch.shape, ctx.batchAxis, dtypeByteSize(batch.dtype))
          }
        }
      }
      if (k === 0) {
        for (let i = 0; i < rows.length; i++) {
          const t = rows[i] as HostTensor
          const axis = (contexts[i] as LeafContext).batchAxis
          const shape = t.shape.map((d, a) => (a === axis ? n : d))
          const batch = new HostTensor(t.dtype, shape)
          hosts.push(batch)
          batches.push(bytesOf(batch.data))
          copies.push(rowCopy(shape, axis, dtypeByteSize(t.dtype)))
        }
      }
      for (let i = 0; i < rows.length; i++) {
        const data = bytesOf((rows[i] as HostTensor).data)
        writeRow(copies[i] as RowCopy, data, 0, batches[i] as Uint8Array, n, k)
      }
      metadata[k] = decoded.right.metadata ?? {}
      known = undefined
      if (given instanceof Uint8Array) {
        // A template only when its header is the one this store writes (leaves in spec order).
        const mine = encodeState(this.spec, 1, rows, metadata[k])
        const start = dataStartOf(mine)
        if (mine.byteLength === given.byteLength && samePrefix(given, mine, start)) {
          const offsets: number[] = []
          for (let i = 0, at = 0; i < rows.length; i++) {
            offsets.push(at)
            at += (rows[i] as HostTensor).data.byteLength
          }
          known = { bytes: given, start, offsets }
        }
      }
    }
    return E.right({ hosts, metadata, sizes })
  }

  /** Whether the data of bool leaves in `bytes` (laid out at `offsets` from `start`) is 0 or 1. */
  #boolsOk(bytes: Uint8Array, start: number, offsets: readonly number[]): boolean {
    for (let i = 0; i < this.#contexts.length; i++) {
      if (this.spec.leaves[i]?.dtype !== "bool") continue
      const from = start + (offsets[i] as number)
      const end = i + 1 < offsets.length ? start + (offsets[i + 1] as number) : bytes.byteLength
      for (let b = from; b < end; b++) if ((bytes[b] as number) > 1) return false
    }
    return true
  }

  async flush(): Promise<void> {
    while (this.#pending.size > 0) await Promise.allSettled([...this.#pending])
    const failures = this.#errors
    this.#errors = []
    if (failures.length === 0) return
    const which = failures
      .map(
        ({ key, error }) =>
          `${showValue(key)}: ${error instanceof Error ? error.message : showValue(error)}`,
      )
      .join("; ")
    throw new AggregateError(
      failures.map((f) => f.error),
      `StateStore: ${failures.length} eviction${failures.length === 1 ? "" : "s"} failed (${which})`,
    )
  }

  dispose(): void {
    if (this.#disposed) return
    this.#disposed = true
    this.#entries.clear()
    this.#head = this.#tail = undefined
    this.#free.length = 0
    this.#cache = undefined
    this.#version++
    this.#dropSpare()
    disposeQuietly(this.backend, this.#slabs)
    this.#slabs = []
  }

  [Symbol.dispose](): void {
    this.dispose()
  }
}

const ZERO: E.Either<never, number> = E.right(0)

function clockError(actual: unknown, detail: string, cause?: unknown): OptionError {
  return new OptionError({
    path: "clock",
    expected: "a clock returning finite milliseconds",
    actual,
    detail,
    ...(cause === undefined ? {} : { cause }),
  })
}

function duplicate(keys: readonly unknown[], k: StreamKey, i: number): KeyError {
  return new KeyError({
    expected: "distinct keys",
    actual: k,
    detail: `keys[${keys.indexOf(k)}] and keys[${i}] are the same key`,
  })
}

function beingEvicted(k: StreamKey, i: number | undefined): KeyError {
  return new KeyError({
    expected: "a key that is not being evicted",
    actual: k,
    detail: `${i === undefined ? "" : `keys[${i}]: `}the stream was evicted and its onEvict callback is still running, so gathering it would start it at init; await store.flush() first (then restore it from the snapshot onEvict received)`,
  })
}

/** The same `KeyError` naming the call's argument: `to[2]` rather than `keys[2]`, `to` when it had no detail. */
function named(e: KeyError, name: string): KeyError {
  return new KeyError({
    expected: e.expected,
    actual: e.actual,
    detail: e.detail === undefined ? name : e.detail.replace(/\bkeys\[/g, `${name}[`),
  })
}

/** Whether snapshot bytes begin with the known template's header (and are as long). */
function sameHeader(given: Uint8Array, known: { bytes: Uint8Array; start: number }): boolean {
  return (
    given.byteLength === known.bytes.byteLength &&
    dataStartOf(given) === known.start &&
    samePrefix(given, known.bytes, known.start)
  )
}

/** The same error, saying which item of a `restoreMany` it concerns. */
function inItem<Err extends StateError>(e: Err, k: number, items: readonly StreamSnapshot[]): Err {
  const which = `snapshots[${k}], stream ${showValue((items[k] as StreamSnapshot).key)}`
  const Made = e.constructor as new (fields: ErrorFields) => Err
  return new Made({
    ...(e as unknown as ErrorFields),
    detail: e.detail === undefined ? which : `${which}: ${e.detail}`,
    ...(e.cause === undefined ? {} : { cause: e.cause }),
  })
}

/** The same `BackendError` with a sentence on what the store was doing. */
function withDetail(e: BackendError, detail: string): BackendError {
  return new BackendError({
    backend: e.backend,
    operation: e.operation,
    path: e.path,
    cause: e.cause,
    detail,
  })
}

/**
 * `t` (rows of one leaf on the host) with each named dim of `dims` at its size in `sizes` (or
 * the slab's), no shorter: the positions past its own hold the leaf's `init`. `t` when it fits.
 */
function padded(
  t: HostTensor,
  dims: readonly Named[],
  sizes: ReadonlyMap<string, number>,
  ctx: LeafContext,
): HostTensor {
  let out = t
  for (const { axis, name, size } of dims) {
    const want = sizes.get(name) ?? size
    if (out.shape[axis] === want) continue
    const shape = out.shape.map((d, a) => (a === axis ? want : d))
    const next = new HostTensor(out.dtype, shape)
    const rows = allRows(shape[ctx.batchAxis] as number)
    if (ctx.init.kind !== "zeros")
      fillRowsTyped(next.data, rowLayout(shape, ctx.batchAxis), rows, ctx.init, out.dtype)
    const offsets = rows.map(() => 0)
    writeBlockTyped(next.data, shape, axis, ctx.batchAxis, offsets, out.data, out.shape)
    out = next
  }
  return out
}

/**
 * Frees every tensor of a tree on `backend`: for batches from `StateStore.gather` that are not
 * passed to `scatter`.
 *
 * @example
 * const batch = orThrow(store.gather(keys))
 * disposeTree(backend, batch)
 * @category store
 * @since 0.1.0
 */
export function disposeTree<T, In = T>(backend: StateBackend<T, In>, tree: StateTree<T>): void {
  disposeQuietly(backend, flatten<T>(tree).leaves)
}
