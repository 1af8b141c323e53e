// Views of a session's saver and store that refuse every state change while a run of the session
// is in flight: the session's own methods check its busy flag, and these views make the objects
// it exposes (`StatefulSession.saver`, `StreamingSession.store`) check the same flag.
import {
  BusyError,
  DisposedError,
  type Snapshot,
  type SnapshotOptions,
  type StateSaver,
  type StateStore,
  type StateTree,
  type GatherOptions,
  type ScatterOptions,
  type StreamKey,
  type StreamSnapshot,
} from "@statesaver/core"
import type { OrtTensor } from "../ort-backend.js"
import type { BusyGuarded } from "../session-types.js"
import * as E from "./either.js"

/** The session a view belongs to: its busy and disposed flags, and its dispose. */
export interface GuardOwner {
  /** Name in errors: `StatefulSession`, `StreamingSession`. */
  readonly kind: string
  /** True while a run is in flight. */
  busy(): boolean
  /** True once the session's dispose was called. */
  disposed(): boolean
  dispose(): void
}

/** The error of `operation` when `owner` refuses it now (disposed, or a run in flight). */
function refusal(
  owner: GuardOwner,
  what: string,
  operation: string,
): BusyError | DisposedError | undefined {
  if (owner.disposed()) return new DisposedError({ what })
  if (owner.busy()) return new BusyError({ operation, inFlight: `a ${owner.kind} run` })
  return undefined
}

/** `Left` of the refusal, if any. */
function refused(
  owner: GuardOwner,
  what: string,
  operation: string,
): E.Either<BusyError | DisposedError, never> | undefined {
  const error = refusal(owner, what, operation)
  return error === undefined ? undefined : E.left(error)
}

/** Throws the refusal, if any: for calls whose result is a plain value. */
function refuseOrThrow(owner: GuardOwner, what: string, operation: string): void {
  const error = refusal(owner, what, operation)
  if (error !== undefined) throw error
}

type SessionSaverType = BusyGuarded<StateSaver<OrtTensor>>

/** A session's saver as its users see it: reads pass through, changes wait for the run. */
export class GuardedSaver implements SessionSaverType {
  readonly #saver: StateSaver<OrtTensor>
  readonly #owner: GuardOwner

  constructor(saver: StateSaver<OrtTensor>, owner: GuardOwner) {
    this.#saver = saver
    this.#owner = owner
  }

  get backend(): SessionSaverType["backend"] {
    return this.#saver.backend
  }

  get spec(): SessionSaverType["spec"] {
    return this.#saver.spec
  }

  get batchSize(): number {
    return this.#saver.batchSize
  }

  get disposed(): boolean {
    return this.#owner.disposed()
  }

  #live(): void {
    if (this.#owner.disposed()) throw new DisposedError({ what: "StateSaver" })
  }

  state(): StateTree<OrtTensor> {
    this.#live()
    return this.#saver.state()
  }

  dims(): Readonly<Record<string, number>> {
    this.#live()
    return this.#saver.dims()
  }

  leaves(): readonly OrtTensor[] {
    this.#live()
    return this.#saver.leaves()
  }

  save(next: StateTree<OrtTensor>): ReturnType<SessionSaverType["save"]> {
    return refused(this.#owner, "StateSaver", "save") ?? this.#saver.save(next)
  }

  saveLeaves(next: readonly OrtTensor[]): ReturnType<SessionSaverType["saveLeaves"]> {
    return refused(this.#owner, "StateSaver", "saveLeaves") ?? this.#saver.saveLeaves(next)
  }

  reset(...rows: Parameters<SessionSaverType["reset"]>): ReturnType<SessionSaverType["reset"]> {
    return refused(this.#owner, "StateSaver", "reset") ?? this.#saver.reset(...rows)
  }

  select(rows: readonly (number | null)[]): ReturnType<SessionSaverType["select"]> {
    return refused(this.#owner, "StateSaver", "select") ?? this.#saver.select(rows)
  }

  snapshot(options?: SnapshotOptions): ReturnType<SessionSaverType["snapshot"]> {
    const no = refused(this.#owner, "StateSaver", "snapshot")
    return no === undefined ? this.#saver.snapshot(options) : Promise.resolve(no)
  }

  restore(bytes: Uint8Array | Snapshot): ReturnType<SessionSaverType["restore"]> {
    return refused(this.#owner, "StateSaver", "restore") ?? this.#saver.restore(bytes)
  }

  dispose(): void {
    this.#owner.dispose()
  }

  [Symbol.dispose](): void {
    this.#owner.dispose()
  }
}

type SessionStoreType = BusyGuarded<StateStore<OrtTensor>>

/** A session's store as its users see it: reads pass through, changes wait for the run. */
export class GuardedStore implements SessionStoreType {
  readonly #store: StateStore<OrtTensor>
  readonly #owner: GuardOwner

  constructor(store: StateStore<OrtTensor>, owner: GuardOwner) {
    this.#store = store
    this.#owner = owner
  }

  get backend(): SessionStoreType["backend"] {
    return this.#store.backend
  }

  get spec(): SessionStoreType["spec"] {
    return this.#store.spec
  }

  get size(): number {
    return this.#owner.disposed() ? 0 : this.#store.size
  }

  get slots(): number {
    return this.#store.slots
  }

  get disposed(): boolean {
    return this.#owner.disposed()
  }

  has(key: StreamKey): boolean {
    return !this.#owner.disposed() && this.#store.has(key)
  }

  holds(key: StreamKey): boolean {
    return !this.#owner.disposed() && this.#store.holds(key)
  }

  keys(): StreamKey[] {
    return this.#owner.disposed() ? [] : this.#store.keys()
  }

  gather(
    keys: readonly StreamKey[],
    options?: GatherOptions,
  ): ReturnType<SessionStoreType["gather"]> {
    return refused(this.#owner, "StateStore", "gather") ?? this.#store.gather(keys, options)
  }

  scatter(
    keys: readonly StreamKey[],
    next: StateTree<OrtTensor>,
    options?: ScatterOptions,
  ): ReturnType<SessionStoreType["scatter"]> {
    return refused(this.#owner, "StateStore", "scatter") ?? this.#store.scatter(keys, next, options)
  }

  dims(): Readonly<Record<string, number>> {
    return this.#store.dims()
  }

  resizeDim(name: string, size: number): ReturnType<SessionStoreType["resizeDim"]> {
    return refused(this.#owner, "StateStore", "resizeDim") ?? this.#store.resizeDim(name, size)
  }

  reset(keys: readonly StreamKey[]): ReturnType<SessionStoreType["reset"]> {
    return refused(this.#owner, "StateStore", "reset") ?? this.#store.reset(keys)
  }

  /** Throws `BusyError` while a run is in flight (the result is a plain boolean). */
  delete(key: StreamKey): boolean {
    if (this.#owner.disposed()) return false
    refuseOrThrow(this.#owner, "StateStore", "delete")
    return this.#store.delete(key)
  }

  snapshot(key: StreamKey, options?: SnapshotOptions): ReturnType<SessionStoreType["snapshot"]> {
    const no = refused(this.#owner, "StateStore", "snapshot")
    return no === undefined ? this.#store.snapshot(key, options) : Promise.resolve(no)
  }

  restore(
    key: StreamKey,
    snapshot: Uint8Array | Snapshot,
  ): ReturnType<SessionStoreType["restore"]> {
    return refused(this.#owner, "StateStore", "restore") ?? this.#store.restore(key, snapshot)
  }

  snapshotMany(
    keys: readonly StreamKey[],
    options?: SnapshotOptions,
  ): ReturnType<SessionStoreType["snapshotMany"]> {
    const no = refused(this.#owner, "StateStore", "snapshotMany")
    return no === undefined ? this.#store.snapshotMany(keys, options) : Promise.resolve(no)
  }

  restoreMany(items: readonly StreamSnapshot[]): ReturnType<SessionStoreType["restoreMany"]> {
    return refused(this.#owner, "StateStore", "restoreMany") ?? this.#store.restoreMany(items)
  }

  fork(from: StreamKey, to: readonly StreamKey[]): ReturnType<SessionStoreType["fork"]> {
    return refused(this.#owner, "StateStore", "fork") ?? this.#store.fork(from, to)
  }

  peek(keys: readonly StreamKey[]): ReturnType<SessionStoreType["peek"]> {
    return refused(this.#owner, "StateStore", "peek") ?? this.#store.peek(keys)
  }

  /** Throws `BusyError` while a run is in flight (the result is a plain count). */
  sweep(): number {
    if (this.#owner.disposed()) return 0
    refuseOrThrow(this.#owner, "StateStore", "sweep")
    return this.#store.sweep()
  }

  flush(): Promise<void> {
    return this.#store.flush()
  }

  dispose(): void {
    this.#owner.dispose()
  }

  [Symbol.dispose](): void {
    this.#owner.dispose()
  }
}
