import fc from "fast-check"
import { describe, expect, it } from "vitest"
import {
  HostTensor,
  type StateTree,
  createStateSaver,
  createStateStore,
  disposeTree,
  hostBackend,
  lstmSpec,
  orThrow,
} from "@statesaver/core"

const H = 3
/** Time-major LSTM state: leaves [1, batch, H], batch axis 1. */
const spec = lstmSpec([H, 2], { layout: "time-major" })
const widths = [H, H, 2, 2]

/** A deterministic per-row step on every leaf: x -> tanh(0.9 x + input + leaf). */
function stepBatch(batch: StateTree<HostTensor>, inputs: number[]): StateTree<HostTensor> {
  const [[h0, c0], [h1, c1]] = batch as [[HostTensor, HostTensor], [HostTensor, HostTensor]]
  const leaves = [h0, c0, h1, c1] as HostTensor[]
  const next = leaves.map((t, leaf) => {
    const w = widths[leaf] as number
    const out = new Float32Array(t.data.length)
    inputs.forEach((x, r) => {
      for (let j = 0; j < w; j++)
        out[r * w + j] = Math.tanh(0.9 * (t.data[r * w + j] as number) + x + leaf * 0.1)
    })
    return new HostTensor("float32", t.shape, out)
  })
  return [
    [next[0], next[1]],
    [next[2], next[3]],
  ] as StateTree<HostTensor>
}

const op = fc.oneof(
  fc.record({
    kind: fc.constant("step" as const),
    keys: fc.uniqueArray(fc.integer({ min: 0, max: 9 }), { minLength: 1, maxLength: 6 }),
    input: fc.double({ min: -1, max: 1, noNaN: true }),
  }),
  fc.record({ kind: fc.constant("reset" as const), key: fc.integer({ min: 0, max: 9 }) }),
  fc.record({ kind: fc.constant("delete" as const), key: fc.integer({ min: 0, max: 9 }) }),
  // The previous step's keys again, in the same array object rewritten in place: a store that
  // remembers the last call's keys must compare contents, not the array.
  fc.record({
    kind: fc.constant("again" as const),
    swap: fc.boolean(),
    input: fc.double({ min: -1, max: 1, noNaN: true }),
  }),
)

describe("StateStore on the host backend", () => {
  it("any interleaving of keys gives every stream the outputs it gets alone (fast-check)", () => {
    fc.assert(
      fc.property(
        fc.array(op, { maxLength: 30 }),
        fc.integer({ min: 1, max: 4 }),
        (ops, initialSlots) => {
          const backend = hostBackend()
          const store = orThrow(createStateStore({ spec, backend, initialSlots }))
          // Reference: one StateSaver of batch 1 per stream, stepped alone.
          const alone = new Map<number, ReturnType<typeof makeSaver>>()
          const solo = hostBackend()
          const makeSaver = () => orThrow(createStateSaver({ spec, backend: solo, batchSize: 1 }))
          const shared: number[] = []
          for (const o of ops) {
            if (o.kind === "step" || (o.kind === "again" && shared.length > 0)) {
              if (o.kind === "step") shared.splice(0, shared.length, ...o.keys)
              else if (o.swap && shared.length > 1) shared.push(shared.shift() as number)
              const keys = shared
              const inputs = keys.map((k) => o.input + k * 0.01)
              const batch = orThrow(store.gather(keys))
              const next = stepBatch(batch, inputs)
              disposeTree(backend, batch)
              orThrow(store.scatter(keys, next))
              keys.forEach((k, i) => {
                const s = alone.get(k) ?? makeSaver()
                alone.set(k, s)
                orThrow(
                  s.save(stepBatch(s.state() as StateTree<HostTensor>, [inputs[i] as number])),
                )
              })
            } else if (o.kind === "again") {
              continue
            } else if (o.kind === "reset") {
              if (store.has(o.key)) orThrow(store.reset([o.key]))
              alone.get(o.key)?.reset()
            } else {
              expect(store.delete(o.key)).toBe(alone.has(o.key))
              alone.get(o.key)?.dispose()
              alone.delete(o.key)
            }
          }
          const keys = [...alone.keys()]
          expect(store.size).toBe(keys.length)
          if (keys.length > 0) {
            const batch = orThrow(store.gather(keys)) as HostTensor[][]
            keys.forEach((k, r) => {
              const mine = (alone.get(k) as ReturnType<typeof makeSaver>).state() as HostTensor[][]
              batch.flat().forEach((t, leaf) => {
                const w = widths[leaf] as number
                expect(Array.from((t.data as Float32Array).subarray(r * w, (r + 1) * w))).toEqual(
                  Array.from((mine.flat()[leaf] as HostTensor).data as Float32Array),
                )
              })
            })
            disposeTree(backend, batch)
          }
          store.dispose()
          expect(backend.liveTensors()).toBe(0)
        },
      ),
      { seed: 5, numRuns: 200 },
    )
  })

  it("keeps the slab at the capacity and evicts in least-recently-used order", () => {
    const evicted: (string | number)[] = []
    const store = orThrow(
      createStateStore({
        spec,
        backend: hostBackend(),
        capacity: 5,
        initialSlots: 2,
        onEvict: (k) => void evicted.push(k),
      }),
    )
    for (const k of ["a", "b", "c", "d", "e"])
      disposeTree(store.backend, orThrow(store.gather([k])))
    expect(store.slots).toBe(5)
    disposeTree(store.backend, orThrow(store.gather(["a"])))
    disposeTree(store.backend, orThrow(store.gather(["f", "g"])))
    expect(store.keys()).toEqual(["d", "e", "a", "f", "g"])
    expect(store.slots).toBe(5)
    const tooMany = store.gather(["1", "2", "3", "4", "5", "6"])
    expect(tooMany._tag === "Left" && tooMany.left._tag).toBe("KeyError")
    return store.flush().then(() => expect(evicted).toEqual(["b", "c"]))
  })

  it("refuses a scatter whose rows do not match the slab's dims, naming the leaf", () => {
    const backend = hostBackend()
    const store = orThrow(
      createStateStore({
        spec: { k: { shape: ["batch", "seq", 2], dtype: "float32" } },
        backend,
        dims: { seq: 3 },
      }),
    )
    disposeTree(backend, orThrow(store.gather(["a"])))
    const r = store.scatter(["a"], { k: new HostTensor("float32", [1, 4, 2]) })
    expect(r._tag === "Left" && r.left).toMatchObject({
      _tag: "ShapeMismatchError",
      path: "k",
      actual: [1, 4, 2],
    })
  })
})
