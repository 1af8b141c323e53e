/** Shared by the store-*.test.ts files: a fault-injecting host backend and state probes. */
import { expect } from "vitest"
import {
  type HostBackend,
  HostTensor,
  type StateStore,
  type StreamKey,
  createStateStore,
  hostBackend,
  lstmSpec,
  orThrow,
} from "@statesaver/core"

export const H = 3
/** Time-major LSTM state: four leaves [1, batch, H | 2], batch axis 1. */
export const spec = lstmSpec([H, 2], { layout: "time-major" })
export const PATHS = ["[0][0]", "[0][1]", "[1][0]", "[1][1]"]

export type Primitive = "allocate" | "gather" | "scatter" | "fill" | "toHost" | "fromHost"

/**
 * The real host backend with a fault switch: after `arm(op, skip)`, the call of `op` that
 * follows `skip` successful ones throws (synchronously; `toHost` may reject instead), once.
 * Every other behaviour, and the live-tensor count, is the host backend's own.
 */
export interface FaultyHost extends HostBackend {
  arm(op: Primitive, skip?: number, how?: "throw" | "reject"): void
  /** Calls of each primitive since creation. */
  readonly calls: Record<Primitive, number>
  /** Whether the armed fault has fired. */
  fired(): boolean
}

export function faultyHost(): FaultyHost {
  const inner = hostBackend()
  const calls: Record<Primitive, number> = {
    allocate: 0,
    gather: 0,
    scatter: 0,
    fill: 0,
    toHost: 0,
    fromHost: 0,
  }
  let armed: { op: Primitive; skip: number; how: "throw" | "reject" } | undefined
  let fired = false
  const trip = (op: Primitive): "throw" | "reject" | undefined => {
    calls[op]++
    if (armed === undefined || armed.op !== op) return undefined
    if (armed.skip > 0) {
      armed.skip--
      return undefined
    }
    const how = armed.how
    armed = undefined
    fired = true
    return how
  }
  const fault = (op: Primitive) => new Error(`injected fault in ${op}`)
  return {
    ...inner,
    allocate(shape, dtype, leaf) {
      if (trip("allocate")) throw fault("allocate")
      return inner.allocate(shape, dtype, leaf)
    },
    gather(src, rows, leaf) {
      if (trip("gather")) throw fault("gather")
      return inner.gather(src, rows, leaf)
    },
    scatter(dst, rows, src, leaf) {
      if (trip("scatter")) throw fault("scatter")
      inner.scatter(dst, rows, src, leaf)
    },
    fill(t, rows, leaf) {
      if (trip("fill")) throw fault("fill")
      inner.fill(t, rows, leaf)
    },
    toHost(t) {
      const how = trip("toHost")
      if (how === "throw") throw fault("toHost")
      if (how === "reject") return Promise.reject(fault("toHost"))
      return inner.toHost(t)
    },
    fromHost(host, leaf) {
      if (trip("fromHost")) throw fault("fromHost")
      return inner.fromHost(host, leaf)
    },
    arm(op, skip = 0, how = "throw") {
      armed = { op, skip, how }
      fired = false
    },
    calls,
    fired: () => fired,
  }
}

/** A batch of `n` rows whose every value is `value + row / 10` (distinct per stream and step). */
export function rowsOf(n: number, value: number): HostTensor[][] {
  const leaf = (w: number) =>
    new HostTensor(
      "float32",
      [1, n, w],
      Float32Array.from(
        { length: n * w },
        (_, i) => value + Math.floor(i / w) / 10 + (i % w) / 1000,
      ),
    )
  return [
    [leaf(H), leaf(H)],
    [leaf(2), leaf(2)],
  ]
}

/** Gathers `keys` and scatters distinct values back: every stream leaves init. */
export function step<T>(store: StateStore<T>, keys: StreamKey[], value: number): void {
  const batch = orThrow(store.gather(keys)) as unknown as HostTensor[][]
  for (const t of batch.flat()) store.backend.dispose(t as never)
  orThrow(store.scatter(keys, rowsOf(keys.length, value) as never))
}

/** Snapshot bytes of every held key, in key order, without touching recency. */
export async function bytesOf<T>(store: StateStore<T>): Promise<Map<StreamKey, Uint8Array>> {
  const out = new Map<StreamKey, Uint8Array>()
  for (const k of store.keys()) out.set(k, orThrow(await store.snapshot(k)))
  return out
}

/** What a failed call must leave as it was. */
export interface Probe {
  readonly keys: StreamKey[]
  readonly bytes: Map<StreamKey, Uint8Array>
  readonly live: number
  readonly slots: number
}

export async function probe(store: StateStore<HostTensor>, backend: HostBackend): Promise<Probe> {
  return {
    keys: store.keys(),
    bytes: await bytesOf(store),
    live: backend.liveTensors(),
    slots: store.slots,
  }
}

export async function expectUnchanged(
  store: StateStore<HostTensor>,
  backend: HostBackend,
  before: Probe,
): Promise<void> {
  expect(store.keys()).toEqual(before.keys)
  expect(backend.liveTensors()).toBe(before.live)
  expect(store.slots).toBe(before.slots)
  expect(await bytesOf(store)).toEqual(before.bytes)
}

/** The error held by a `Left`, failing the test on a `Right`. */
export function leftOf<
  R extends { readonly _tag: "Left"; readonly left: unknown } | { readonly _tag: "Right" },
>(r: R): Extract<R, { _tag: "Left" }>["left"] {
  if (r._tag === "Right") throw new Error("expected a Left, got a Right")
  return (r as Extract<R, { _tag: "Left" }>).left
}

/**
 * A full store (capacity 3) on a fault-injecting host backend, with onEvict recording its calls
 * (unless `onEvict: false`) and a fake clock (with `ttl`, idle after 50 ms). `fill` makes a, b
 * and c held off init; by default a and b together, then c 10 ms later.
 */
export function fullStore(
  opts: { onEvict?: boolean; ttl?: boolean } = {},
  fill: (store: StateStore<HostTensor>, advance: (ms: number) => void) => void = (
    store,
    advance,
  ) => {
    step(store, ["a", "b"], 1)
    advance(10)
    step(store, ["c"], 2)
  },
) {
  const backend = faultyHost()
  const evicted: StreamKey[] = []
  let now = 1_000
  const store = orThrow(
    createStateStore({
      spec,
      backend,
      capacity: 3,
      initialSlots: 1,
      ...(opts.onEvict === false ? {} : { onEvict: (k: StreamKey) => void evicted.push(k) }),
      ...(opts.ttl ? { idleTtlMs: 50, clock: () => now } : {}),
    }),
  )
  const advance = (ms: number) => (now += ms)
  fill(store, advance)
  return { backend, store, evicted, advance }
}
