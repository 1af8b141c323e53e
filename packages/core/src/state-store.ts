import * as E from "fp-ts/lib/Either.js"
import type { LeafContext, StateBackend, TensorInfo } from "./backend.js"
import {
  DTypeMismatchError,
  DisposedError,
  KeyError,
  RowIndexError,
  ShapeMismatchError,
  type StateError,
} from "./errors.js"
import type { HostTensor } from "./host-tensor.js"
import {
  allocateLeaves,
  attempt,
  buildPerLeaf,
  checkTensors,
  contextOf,
  disposeQuietly,
  eachLeaf,
} from "./internal/checks.js"
import { encodeState } from "./internal/encode.js"
import { type Snapshot, decodeSnapshot } from "./snapshot.js"
import { checkSnapshot } from "./state-saver.js"
import { type ResolvedSpec, type SpecOptions, type StateSpec, resolveSpec } from "./state-spec.js"
import { type StateTree, flatten, unflatten } from "./state-tree.js"

/**
 * A stream key: any string or number (numbers and their strings are different keys).
 *
 * @category store
 * @since 0.1.0
 */
export type StreamKey = string | number

/**
 * Options of `createStateStore`.
 *
 * @category store
 * @since 0.1.0
 */
export interface StateStoreOptions<T, In = T> extends SpecOptions {
  readonly spec: StateSpec
  readonly backend: StateBackend<T, In>
  /** Most streams kept at once; past it the least recently used stream is evicted. Default: no limit. */
  readonly capacity?: number
  /** Slots allocated up front; the slab doubles from there (capped by `capacity`). Default 8. */
  readonly initialSlots?: number
  /** A stream unused for longer than this is evicted (checked on every store call and by `sweep`). */
  readonly idleTtlMs?: number
  /**
   * Called after a stream was evicted (by capacity or idle TTL, not by `delete`) with a snapshot
   * of its state, restorable with `restore(key, snapshot)` here or in another process. The rows
   * are copied synchronously at eviction; the snapshot is read to the host afterwards.
   */
  readonly onEvict?: (
    key: StreamKey,
    snapshot: Uint8Array,
    reason: "capacity" | "idle",
  ) => void | Promise<void>
  /** Milliseconds now; inject a fake clock in tests. Default `Date.now`. */
  readonly clock?: () => number
}

/**
 * Many independent streams, each with its own state rows, batched on demand. Storage is a slab
 * of rows (slots) per leaf on the backend: a stream's state never moves except into and out of
 * a batch. Fallible calls return an `Either` and change nothing on `Left`.
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
  has(key: StreamKey): boolean
  /** Keys, least recently used first. */
  keys(): StreamKey[]
  /**
   * Stacks the keys' rows into a new batch, in key order; a new key starts at `init`. The returned
   * tensors are the caller's: pass them to `scatter`, or free them (`disposeTree`).
   */
  gather(keys: readonly StreamKey[]): E.Either<StateError, StateTree<T>>
  /**
   * Writes row `i` of `next` back to `keys[i]`, which must be held. On `Right` the store took
   * ownership of `next` and freed it; on `Left` it is still the caller's.
   */
  scatter(keys: readonly StreamKey[], next: StateTree<T | In>): E.Either<StateError, void>
  /** Sets the keys' rows back to `init` (the keys stay held). */
  reset(keys: readonly StreamKey[]): E.Either<StateError, void>
  /** Forgets a stream and frees its slot. Returns whether it was held. */
  delete(key: StreamKey): boolean
  /** One stream's state as safetensors bytes with batch size 1 (a `StateSaver` of 1 row restores it too). */
  snapshot(key: StreamKey): Promise<E.Either<StateError, Uint8Array>>
  /** Sets a stream's state from a snapshot of batch size 1, adding the key if it is new. */
  restore(key: StreamKey, snapshot: Uint8Array | Snapshot): E.Either<StateError, void>
  /** Evicts streams idle past `idleTtlMs` now. Returns how many. */
  sweep(): number
  /** Waits until every `onEvict` call has settled; rejects with the first error one raised. */
  flush(): Promise<void>
  dispose(): void
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
}

/** Keys of one call, checked: the held entries in key order (undefined for new keys). */
interface Resolved {
  readonly entries: (Entry | undefined)[]
  readonly fresh: StreamKey[]
}

/**
 * Creates a `StateStore` on `backend`.
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
): E.Either<StateError, StateStore<T, In>> {
  const resolved = resolveSpec(options.spec, options)
  if (resolved._tag === "Left") return resolved
  const { backend } = options
  for (const leaf of resolved.right.leaves) {
    if (!backend.capabilities.dtypes.includes(leaf.dtype)) {
      return E.left(
        new DTypeMismatchError(leaf.pathString, backend.capabilities.dtypes, leaf.dtype),
      )
    }
  }
  const capacity = options.capacity ?? Number.POSITIVE_INFINITY
  if (!(capacity >= 1) || (Number.isFinite(capacity) && !Number.isSafeInteger(capacity))) {
    return E.left(new RowIndexError("a capacity that is a positive integer", capacity))
  }
  const initial = Math.min(options.initialSlots ?? 8, capacity)
  if (!Number.isSafeInteger(initial) || initial < 1) {
    return E.left(
      new RowIndexError("initialSlots that is a positive integer", options.initialSlots),
    )
  }
  const slabs = allocateLeaves(backend, resolved.right.leaves, initial)
  if (slabs._tag === "Left") return slabs
  return E.right(new Store(options, resolved.right, slabs.right, initial, capacity))
}

const keyOk = (k: unknown): k is StreamKey =>
  typeof k === "string" || (typeof k === "number" && Number.isFinite(k))

class Store<T, In> implements StateStore<T, In> {
  readonly backend: StateBackend<T, In>
  readonly #entries = new Map<StreamKey, Entry>()
  #head: Entry | undefined
  #tail: Entry | undefined
  readonly #free: number[] = []
  readonly #contexts: LeafContext[]
  readonly #clock: () => number
  readonly #pending = new Set<Promise<void>>()
  #errors: unknown[] = []
  #slabs: T[]
  #slots: number
  #stamp = 0
  #disposed = false

  constructor(
    readonly options: StateStoreOptions<T, In>,
    readonly spec: ResolvedSpec,
    slabs: T[],
    slots: number,
    readonly capacity: number,
  ) {
    this.backend = options.backend
    this.#slabs = slabs
    this.#slots = slots
    this.#contexts = spec.leaves.map(contextOf)
    this.#clock = options.clock ?? Date.now
    for (let s = slots - 1; s >= 0; s--) this.#free.push(s)
  }

  get size(): number {
    return this.#entries.size
  }

  get slots(): number {
    return this.#slots
  }

  get disposed(): boolean {
    return this.#disposed
  }

  has(key: StreamKey): boolean {
    this.sweep()
    return this.#entries.has(key)
  }

  keys(): StreamKey[] {
    this.sweep()
    const out: StreamKey[] = []
    for (let e = this.#head; e !== undefined; e = e.next) out.push(e.key)
    return out
  }

  #live(): E.Either<DisposedError, void> {
    return this.#disposed ? E.left(new DisposedError("StateStore")) : E.right(undefined)
  }

  /** Distinct, well-formed keys; `held` requires every key to be held already. */
  #checkKeys(keys: readonly StreamKey[], held: boolean): E.Either<StateError, Resolved> {
    if (!Array.isArray(keys)) return E.left(new KeyError("an array of keys", typeof keys))
    if (keys.length === 0) return E.left(new KeyError("at least one key", "[]"))
    if (keys.length > this.capacity) {
      return E.left(
        new KeyError(`at most ${this.capacity} keys in one call (the capacity)`, keys.length),
      )
    }
    const stamp = ++this.#stamp
    const entries: (Entry | undefined)[] = new Array(keys.length)
    const fresh: StreamKey[] = []
    let freshSet: Set<StreamKey> | undefined
    for (let i = 0; i < keys.length; i++) {
      const k: unknown = keys[i]
      if (!keyOk(k)) return E.left(new KeyError("string or finite number keys", k))
      const e = this.#entries.get(k)
      if (e !== undefined) {
        if (e.stamp === stamp)
          return E.left(new KeyError("distinct keys", `${JSON.stringify(k)} twice`))
        e.stamp = stamp
        entries[i] = e
        continue
      }
      if (held) return E.left(new KeyError("a key held by the store", k))
      freshSet ??= new Set()
      if (freshSet.has(k))
        return E.left(new KeyError("distinct keys", `${JSON.stringify(k)} twice`))
      freshSet.add(k)
      fresh.push(k)
    }
    return E.right({ entries, fresh })
  }

  /** Marks entries used now and moves them to the most recent end of the map. */
  #touch(entries: readonly (Entry | undefined)[]): void {
    const now = this.#clock()
    for (const e of entries) {
      if (e === undefined) continue
      e.used = now
      if (e !== this.#tail) {
        this.#unlink(e)
        this.#append(e)
      }
    }
  }

  sweep(): number {
    return this.#sweep([])
  }

  /**
   * Evicts streams idle past the TTL, oldest first, stopping at the first one still fresh; the
   * keys of the current call are never evicted by their own call.
   */
  #sweep(except: readonly StreamKey[]): number {
    const ttl = this.options.idleTtlMs
    if (ttl === undefined || this.#disposed) return 0
    const now = this.#clock()
    const idle: StreamKey[] = []
    for (let e = this.#head; e !== undefined; e = e.next) {
      if (now - e.used <= ttl) break
      if (!except.includes(e.key)) idle.push(e.key)
    }
    for (const k of idle) this.#evict(k, "idle")
    return idle.length
  }

  /** Frees a stream's slot; with `onEvict`, its rows are copied first and reported asynchronously. */
  #evict(key: StreamKey, reason: "capacity" | "idle"): void {
    const entry = this.#entries.get(key) as Entry
    const onEvict = this.options.onEvict
    if (onEvict !== undefined) {
      const rows = this.#copyRows([entry.slot])
      if (rows._tag === "Left") {
        this.#errors.push(rows.left)
      } else {
        const p = this.#encode(rows.right, 1)
          .then((bytes) => onEvict(key, bytes, reason))
          .catch((e: unknown) => {
            this.#errors.push(e)
          })
          .finally(() => this.#pending.delete(p))
        this.#pending.add(p)
      }
    }
    this.#forget(entry)
  }

  #append(e: Entry): void {
    e.prev = this.#tail
    e.next = undefined
    if (this.#tail === undefined) this.#head = e
    else this.#tail.next = e
    this.#tail = e
  }

  #unlink(e: Entry): void {
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
  }

  /** New tensors holding the given slots' rows, one per leaf. */
  #copyRows(slots: readonly (number | null)[]): E.Either<StateError, T[]> {
    const slabs = this.#slabs
    return buildPerLeaf(this.backend, "gather", this.#contexts, (i, ctx) =>
      this.backend.gather(slabs[i] as T, slots, ctx),
    )
  }

  /** Writes row `i` of each leaf of `src` into slot `slots[i]`. */
  #writeRows(slots: readonly number[], src: readonly (T | In)[]): E.Either<StateError, void> {
    const slabs = this.#slabs
    return eachLeaf(this.backend, "scatter", this.#contexts, (i, ctx) =>
      this.backend.scatter(slabs[i] as T, slots, src[i] as T | In, ctx),
    )
  }

  /** Sets the given slots (sorted) of every leaf back to init. */
  #fillRows(slots: readonly number[]): E.Either<StateError, void> {
    const slabs = this.#slabs
    return eachLeaf(this.backend, "fill", this.#contexts, (i, ctx) =>
      this.backend.fill(slabs[i] as T, slots, ctx),
    )
  }

  /** A `ShapeMismatchError` when rows of `shape` do not fit leaf `i`'s slab beside the batch axis. */
  #misfit(i: number, shape: readonly number[], batchLabel: string | number): StateError | null {
    const slab = this.backend.describe(this.#slabs[i])
    const leaf = this.spec.leaves[i]
    if (slab === undefined || leaf === undefined) return null
    if (!shape.some((d, axis) => axis !== leaf.batchAxis && d !== slab.shape[axis])) return null
    const expected = slab.shape.map((d, axis) => (axis === leaf.batchAxis ? batchLabel : d))
    return new ShapeMismatchError(leaf.pathString, expected, shape)
  }

  /** Reads tensors to the host (copies start now), frees them, and encodes a snapshot. */
  #encode(tensors: T[], batchSize: number): Promise<Uint8Array> {
    const reads = tensors.map((t) => this.backend.toHost(t))
    return Promise.all(reads)
      .finally(() => disposeQuietly(this.backend, tensors))
      .then((hosts) => encodeState(this.spec, batchSize, hosts))
  }

  /** Gives every new key a slot set to init, growing the slab or evicting as needed. */
  #admit(keys: readonly StreamKey[], fresh: readonly StreamKey[]): E.Either<StateError, Entry[]> {
    if (fresh.length === 0) return E.right([])
    const needed = fresh.length - this.#free.length
    if (needed > 0 && this.#slots < this.capacity) {
      let target = this.#slots
      while (target - this.#slots < needed && target < this.capacity)
        target = Math.min(target * 2, this.capacity)
      const grown = this.#grow(target)
      if (grown._tag === "Left") return grown
    }
    const short = fresh.length - this.#free.length
    if (short > 0) {
      // At capacity: evict the least recently used streams that this call does not use.
      const inCall = new Set(keys)
      const victims: StreamKey[] = []
      for (let e = this.#head; e !== undefined && victims.length < short; e = e.next) {
        if (!inCall.has(e.key)) victims.push(e.key)
      }
      for (const k of victims) this.#evict(k, "capacity")
    }
    const slots = fresh.map(() => this.#free.pop() as number)
    const filled = this.#fillRows([...slots].sort((a, b) => a - b))
    if (filled._tag === "Left") {
      for (let j = slots.length - 1; j >= 0; j--) this.#free.push(slots[j] as number)
      return filled
    }
    const now = this.#clock()
    const added = fresh.map((k, i) => {
      const e: Entry = {
        key: k,
        slot: slots[i] as number,
        used: now,
        stamp: 0,
        prev: undefined,
        next: undefined,
      }
      this.#entries.set(k, e)
      this.#append(e)
      return e
    })
    return E.right(added)
  }

  #grow(target: number): E.Either<StateError, void> {
    const rows: (number | null)[] = Array.from({ length: target }, (_, r) =>
      r < this.#slots ? r : null,
    )
    const next = this.#copyRows(rows)
    if (next._tag === "Left") return next
    const old = this.#slabs
    this.#slabs = next.right
    disposeQuietly(this.backend, old)
    for (let s = target - 1; s >= this.#slots; s--) this.#free.push(s)
    this.#slots = target
    return E.right(undefined)
  }

  gather(keys: readonly StreamKey[]): E.Either<StateError, StateTree<T>> {
    const live = this.#live()
    if (live._tag === "Left") return live
    this.#sweep(keys)
    const checked = this.#checkKeys(keys, false)
    if (checked._tag === "Left") return checked
    const { entries, fresh } = checked.right
    const admitted = this.#admit(keys, fresh)
    if (admitted._tag === "Left") return admitted
    let added = 0
    for (let i = 0; i < entries.length; i++) entries[i] ??= admitted.right[added++]
    const rows = this.#copyRows(entries.map((e) => (e as Entry).slot))
    if (rows._tag === "Left") {
      for (const k of fresh) this.delete(k)
      return rows
    }
    this.#touch(entries)
    return E.right(unflatten(this.spec.def, rows.right))
  }

  scatter(keys: readonly StreamKey[], next: StateTree<T | In>): E.Either<StateError, void> {
    const live = this.#live()
    if (live._tag === "Left") return live
    this.#sweep(keys)
    const checked = this.#checkKeys(keys, true)
    if (checked._tag === "Left") return checked
    const tensors = checkTensors(this.spec, this.backend, next, keys.length)
    if (tensors._tag === "Left") return tensors
    // Every non-batch dim must match the slab: streams share one slab shape.
    for (let i = 0; i < tensors.right.infos.length; i++) {
      const misfit = this.#misfit(
        i,
        (tensors.right.infos[i] as TensorInfo).shape,
        this.spec.batchDim,
      )
      if (misfit) return E.left(misfit)
    }
    const written = this.#writeRows(
      checked.right.entries.map((e) => (e as Entry).slot),
      tensors.right.leaves,
    )
    if (written._tag === "Left") return written
    disposeQuietly(this.backend, tensors.right.leaves)
    this.#touch(checked.right.entries)
    return E.right(undefined)
  }

  reset(keys: readonly StreamKey[]): E.Either<StateError, void> {
    const live = this.#live()
    if (live._tag === "Left") return live
    const checked = this.#checkKeys(keys, true)
    if (checked._tag === "Left") return checked
    return this.#fillRows(checked.right.entries.map((e) => (e as Entry).slot).sort((a, b) => a - b))
  }

  delete(key: StreamKey): boolean {
    const entry = this.#entries.get(key)
    if (entry === undefined || this.#disposed) return false
    this.#forget(entry)
    return true
  }

  async snapshot(key: StreamKey): Promise<E.Either<StateError, Uint8Array>> {
    const live = this.#live()
    if (live._tag === "Left") return live
    const entry = this.#entries.get(key)
    if (entry === undefined) return E.left(new KeyError("a key held by the store", key))
    const rows = this.#copyRows([entry.slot])
    if (rows._tag === "Left") return rows
    try {
      return E.right(await this.#encode(rows.right, 1))
    } catch (e) {
      return attempt(this.backend, "toHost", "", () => {
        throw e
      })
    }
  }

  restore(key: StreamKey, snapshot: Uint8Array | Snapshot): E.Either<StateError, void> {
    const live = this.#live()
    if (live._tag === "Left") return live
    if (!keyOk(key)) return E.left(new KeyError("a string or finite number key", key))
    const decoded = snapshot instanceof Uint8Array ? decodeSnapshot(snapshot) : E.right(snapshot)
    if (decoded._tag === "Left") return decoded
    const hosts = checkSnapshot(this.spec, decoded.right, 1)
    if (hosts._tag === "Left") return hosts
    for (let i = 0; i < hosts.right.length; i++) {
      const misfit = this.#misfit(i, (hosts.right[i] as HostTensor).shape, 1)
      if (misfit) return E.left(misfit)
    }
    const built = buildPerLeaf(this.backend, "fromHost", this.#contexts, (i, ctx) =>
      this.backend.fromHost(hosts.right[i] as HostTensor, ctx),
    )
    if (built._tag === "Left") return built
    const made = built.right
    const admitted = this.#admit([key], this.#entries.has(key) ? [] : [key])
    if (admitted._tag === "Left") {
      disposeQuietly(this.backend, made)
      return admitted
    }
    const entry = this.#entries.get(key) as Entry
    const written = this.#writeRows([entry.slot], made)
    disposeQuietly(this.backend, made)
    if (written._tag === "Left") return written
    this.#touch([entry])
    return E.right(undefined)
  }

  async flush(): Promise<void> {
    while (this.#pending.size > 0) await Promise.allSettled([...this.#pending])
    const errors = this.#errors
    this.#errors = []
    if (errors.length > 0) throw errors[0]
  }

  dispose(): void {
    if (this.#disposed) return
    this.#disposed = true
    this.#entries.clear()
    this.#head = this.#tail = undefined
    disposeQuietly(this.backend, this.#slabs)
    this.#slabs = []
  }

  [Symbol.dispose](): void {
    this.dispose()
  }
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
