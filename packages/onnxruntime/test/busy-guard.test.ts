// Nothing reachable from a session changes its state while a run is in flight: not the session's
// own calls, not its `saver` or `store`, not a read of the store that would evict by idle TTL.
// Oracle: a second session fed the same inputs without interference.
import { type StateError, type StreamKey, orThrow } from "@statesaver/core"
import * as ortNode from "onnxruntime-node"
import * as ortWeb from "onnxruntime-web"
import { describe, expect, it } from "vitest"
import {
  type OrtTensor,
  type StatefulSession,
  createStatefulSession,
  createStreamingSession,
  ortBackend,
} from "../src/index.js"
import type { Runtime } from "./helpers/harness.js"
import { lstm2 } from "./helpers/models.js"
import { seededFloats } from "./helpers/onnx-builder.js"

ortWeb.env.wasm.numThreads = 1

const INPUT = 3
const HIDDEN = 8
const B = 2
const model = lstm2(INPUT, HIDDEN)

const runtimes: [string, Runtime][] = [
  ["onnxruntime-web (wasm)", ortWeb as unknown as Runtime],
  ["onnxruntime-node", ortNode as unknown as Runtime],
]

const values = (t: OrtTensor | undefined): number[] => Array.from(t?.data as Float32Array)

/** Asserts a result is `Left(BusyError)` naming `operation`. */
function expectBusy(r: unknown, operation: string): void {
  expect(r, operation).toMatchObject({ _tag: "Left", left: { _tag: "BusyError" } })
  expect((r as { left: StateError & { operation: string } }).left.operation, operation).toBe(
    operation,
  )
}

/** Asserts `f` throws a BusyError (calls whose result is a plain value). */
function expectThrowsBusy(f: () => unknown, operation: string): void {
  let thrown: unknown
  try {
    f()
  } catch (e) {
    thrown = e
  }
  expect(thrown, operation).toMatchObject({ _tag: "BusyError", operation })
}

const stateValues = (s: StatefulSession) =>
  Object.fromEntries(Object.entries(s.state()).map(([k, t]) => [k, values(t)]))

for (const [runtimeName, ort] of runtimes) {
  const x = (steps: number, batch: number, seed: number): OrtTensor =>
    new ort.Tensor("float32", seededFloats(steps * batch * INPUT, seed), [steps, batch, INPUT])

  describe(`busy guard on ${runtimeName}`, () => {
    it("StatefulSession: every changing call through the session and its saver is refused while a run is in flight; the run equals an undisturbed one; the calls work afterwards", async () => {
      const session = await ort.InferenceSession.create(model)
      const open = () =>
        orThrow(createStatefulSession({ session, backend: ortBackend({ ort }), batchSize: B }))
      const s = open()
      const oracle = open()
      const warm = x(3, B, 1)
      for (const t of [s, oracle])
        for (const o of Object.values(orThrow(await t.run({ X: warm })))) o.dispose()
      const bytes = orThrow(await s.snapshot())
      const replacement = Object.fromEntries(
        Object.entries(s.state()).map(([k, t]) => [
          k,
          new ort.Tensor("float32", new Float32Array(t.data.length), t.dims),
        ]),
      )
      const feed = x(2, B, 2)

      const pending = s.run({ X: feed })
      expect(s.busy).toBe(true)
      expect(s.saver.disposed).toBe(false)
      const saver = s.saver
      expectBusy(saver.reset(), "reset")
      expectBusy(saver.reset([0]), "reset")
      expectBusy(saver.select([1, 0]), "select")
      expectBusy(saver.select([0, 0, null]), "select")
      expectBusy(saver.save(replacement), "save")
      expectBusy(saver.saveLeaves(Object.values(replacement)), "saveLeaves")
      expectBusy(saver.restore(bytes), "restore")
      expectBusy(await saver.snapshot(), "snapshot")
      expectBusy(s.reset(), "reset")
      expectBusy(s.select([1]), "select")
      expectBusy(s.save(replacement), "save")
      expectBusy(s.restore(bytes), "restore")
      expectBusy(await s.snapshot(), "snapshot")
      expectBusy(await s.run({ X: feed }), "run")
      // Reads of borrowed tensors are answered.
      expect(Object.keys(saver.state())).toHaveLength(4)
      expect(saver.leaves()).toHaveLength(4)
      expect(saver.batchSize).toBe(B)
      for (const t of Object.values(replacement)) expect(t.location).toBe("cpu")

      const out = orThrow(await pending)
      const ref = orThrow(await oracle.run({ X: feed }))
      expect(s.busy).toBe(false)
      expect(values(out["Y"])).toEqual(values(ref["Y"]))
      expect(stateValues(s)).toEqual(stateValues(oracle))
      expect(s.batchSize).toBe(B)

      // After the run resolved, the same calls through the saver are accepted.
      orThrow(saver.reset([0]))
      orThrow(saver.select([1, 0, null]))
      expect(s.batchSize).toBe(3)
      orThrow(saver.select([1, 0]))
      orThrow(saver.restore(bytes))
      expect(orThrow(await saver.snapshot())).toEqual(bytes)
      orThrow(saver.save(replacement))
      expect(
        Object.values(stateValues(s))
          .flat()
          .every((v) => v === 0),
      ).toBe(true)
      for (const t of [...Object.values(out), ...Object.values(ref)]) t.dispose()
      s.dispose()
      oracle.dispose()
    })

    it("StreamingSession: every changing call through the session and its store is refused while a run is in flight; the run equals an undisturbed one; the calls work afterwards", async () => {
      const session = await ort.InferenceSession.create(model)
      const open = () =>
        orThrow(createStreamingSession({ session, ort, backend: ortBackend({ ort }) }))
      const s = open()
      const oracle = open()
      const keys: StreamKey[] = ["a", "b"]
      const warm = keys.map((key, i) => ({ key, feeds: { X: x(2, 1, 10 + i) } }))
      for (const t of [s, oracle])
        for (const o of orThrow(await t.run(warm)).values())
          for (const v of Object.values(o)) v.dispose()
      const bytes = orThrow(await s.snapshot("a"))
      const feeds = keys.map((key, i) => ({ key, feeds: { X: x(1, 1, 20 + i) } }))

      const pending = s.run(feeds)
      expect(s.busy).toBe(true)
      const store = s.store
      expectBusy(store.gather(["a"]), "gather")
      expectBusy(store.gather(["new"]), "gather")
      expectBusy(store.scatter(["a"], {}), "scatter")
      expectBusy(store.reset(["a"]), "reset")
      expectBusy(store.restore("a", bytes), "restore")
      expectBusy(store.restore("new", bytes), "restore")
      expectBusy(await store.snapshot("a"), "snapshot")
      expectBusy(await store.snapshotMany(["a", "b"]), "snapshotMany")
      expectBusy(store.restoreMany([{ key: "new", snapshot: bytes }]), "restoreMany")
      expectThrowsBusy(() => store.delete("a"), "delete")
      expectThrowsBusy(() => store.sweep(), "sweep")
      expectBusy(s.reset(["a"]), "reset")
      expectBusy(s.delete("a"), "delete")
      expectBusy(s.restore("a", bytes), "restore")
      expectBusy(await s.snapshot("a"), "snapshot")
      expectBusy(await s.run([{ key: "c", feeds: { X: x(1, 1, 3) } }]), "run")
      // Reads are answered.
      expect(store.has("a")).toBe(true)
      expect(store.has("new")).toBe(false)
      expect(store.keys()).toEqual(["a", "b"])
      expect(store.size).toBe(2)

      const outs = orThrow(await pending)
      const refs = orThrow(await oracle.run(feeds))
      expect(s.busy).toBe(false)
      for (const k of keys) {
        expect(values(outs.get(k)?.["Y"]), String(k)).toEqual(values(refs.get(k)?.["Y"]))
        expect(orThrow(await s.snapshot(k))).toEqual(orThrow(await oracle.snapshot(k)))
      }
      expect(s.keys()).toEqual(["a", "b"])

      // After the run resolved, the same calls through the store are accepted.
      const batch = orThrow(store.gather(["a", "new"]))
      orThrow(store.scatter(["a", "new"], batch))
      expect(orThrow(await store.snapshot("a"))).toEqual(orThrow(await oracle.snapshot("a")))
      orThrow(store.reset(["a"]))
      orThrow(store.restore("a", bytes))
      expect(orThrow(await store.snapshot("a"))).toEqual(bytes)
      orThrow(store.restoreMany([{ key: "new", snapshot: bytes }]))
      expect(orThrow(await store.snapshotMany(["a", "new"]))).toEqual([bytes, bytes])
      expect(store.delete("new")).toBe(true)
      expect(store.sweep()).toBe(0)
      expect(store.keys()).toEqual(["b", "a"])
      for (const o of [...outs.values(), ...refs.values()])
        for (const t of Object.values(o)) t.dispose()
      s.dispose()
      oracle.dispose()
    })
  })
}

describe("busy guard and idle eviction (onnxruntime-node, fake clock)", () => {
  const ort = ortNode as unknown as Runtime
  const x = (steps: number, seed: number): OrtTensor =>
    new ort.Tensor("float32", seededFloats(steps * INPUT, seed), [steps, 1, INPUT])

  it("a read of the store while a run is in flight evicts nothing, even past the TTL: the run's streams are scattered", async () => {
    const session = await ort.InferenceSession.create(model)
    let now = 0
    const evicted: StreamKey[] = []
    const s = orThrow(
      createStreamingSession({
        session,
        ort,
        backend: ortBackend({ ort }),
        idleTtlMs: 100,
        clock: () => now,
        onEvict: (key) => {
          evicted.push(key)
        },
      }),
    )
    const alone = orThrow(
      createStatefulSession({ session, backend: ortBackend({ ort }), batchSize: 1 }),
    )
    const feed = x(2, 1)
    const pending = s.run([{ key: "a", feeds: { X: feed } }])
    now = 1000 // the run takes "long": past the TTL
    expect(s.has("a")).toBe(true)
    expect(s.keys()).toEqual(["a"])
    expect(s.store.has("a")).toBe(true)
    const out = orThrow(await pending)
    const ref = orThrow(await alone.run({ X: feed }))
    expect(values(out.get("a")?.["Y"])).toEqual(values(ref["Y"]))
    expect(evicted).toEqual([])
    expect(s.has("a")).toBe(true)
    s.dispose()
    alone.dispose()
  })

  it("a stream that returns after its idle TTL continues from its state, as StateStore.gather keeps a call's own keys", async () => {
    const session = await ort.InferenceSession.create(model)
    let now = 0
    const s = orThrow(
      createStreamingSession({
        session,
        ort,
        backend: ortBackend({ ort }),
        idleTtlMs: 100,
        clock: () => now,
      }),
    )
    const alone = orThrow(
      createStatefulSession({ session, backend: ortBackend({ ort }), batchSize: 1 }),
    )
    for (const [t, seed] of [
      [0, 1],
      [500, 2],
    ] as const) {
      now = t
      const feed = x(2, seed)
      const out = orThrow(await s.run([{ key: "a", feeds: { X: feed } }]))
      const ref = orThrow(await alone.run({ X: feed }))
      expect(values(out.get("a")?.["Y"]), `at ${t} ms`).toEqual(values(ref["Y"]))
    }
    s.dispose()
    alone.dispose()
  })
})

describe("dispose while a run is in flight (onnxruntime-node)", () => {
  const ort = ortNode as unknown as Runtime

  it("StatefulSession: the run resolves to DisposedError, its state is freed when it settles, every later call is refused", async () => {
    const session = await ort.InferenceSession.create(model)
    const backend = ortBackend({ ort })
    const s = orThrow(createStatefulSession({ session, backend, batchSize: B }))
    const pending = s.run({
      X: new ort.Tensor("float32", seededFloats(B * INPUT, 1), [1, B, INPUT]),
    })
    s.saver.dispose()
    expect(s.disposed).toBe(true)
    expect(s.saver.disposed).toBe(true)
    expect(s.reset()).toMatchObject({ _tag: "Left", left: { _tag: "DisposedError" } })
    expect(s.saver.reset()).toMatchObject({ _tag: "Left", left: { _tag: "DisposedError" } })
    expect(() => s.state()).toThrow(expect.objectContaining({ _tag: "DisposedError" }))
    expect(await pending).toMatchObject({ _tag: "Left", left: { _tag: "DisposedError" } })
    expect(backend.liveTensors()).toBe(0)
  })

  it("StreamingSession: the run resolves to DisposedError and the slabs are freed when it settles", async () => {
    const session = await ort.InferenceSession.create(model)
    const backend = ortBackend({ ort })
    const s = orThrow(createStreamingSession({ session, ort, backend }))
    const X = new ort.Tensor("float32", seededFloats(INPUT, 1), [1, 1, INPUT])
    const pending = s.run([{ key: "a", feeds: { X } }])
    s.store.dispose()
    expect(s.disposed).toBe(true)
    expect(s.size).toBe(0)
    expect(s.has("a")).toBe(false)
    expect(s.reset(["a"])).toMatchObject({ _tag: "Left", left: { _tag: "DisposedError" } })
    expect(await pending).toMatchObject({ _tag: "Left", left: { _tag: "DisposedError" } })
    expect(backend.liveTensors()).toBe(0)
    expect(X.location).toBe("cpu")
  })
})
