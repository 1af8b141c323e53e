import * as tf from "@tensorflow/tfjs"
import fc from "fast-check"
import { beforeAll, describe, expect, it } from "vitest"
import { type StateSaver, createStateSaver, createStateStore, orThrow } from "@statesaver/core"
import { createStatefulRnn, tfjsBackend } from "../src/index.js"
import { makeCell } from "./models.js"
import { useBackend } from "./setup.js"

const F = 3

/** A 2-layer stack with unequal widths, returning sequences and state. */
function makeRnn() {
  const cell = [makeCell("lstm", 5, 1), makeCell("gru", 3, 2)]
  return orThrow(
    createStatefulRnn(tf.layers.rnn({ cell, returnSequences: true, returnState: true }) as tf.RNN),
  )
}

/** Input of stream `key` at call `t`: two time steps of F features. */
const input = (key: number, t: number): number[] =>
  Array.from({ length: 2 * F }, (_, i) => Math.sin(key * 1.7 + t * 0.9 + i * 0.3))

describe("tfjs: many streams through one layer (StateStore)", () => {
  beforeAll(() => useBackend("cpu"))

  it("any interleaving of streams gives each stream the outputs it gets alone (fast-check)", () => {
    const rnn = makeRnn()
    const backend = tfjsBackend()
    // The first call builds the layer's weights: do it before counting tensors.
    const warm = orThrow(createStateSaver({ spec: rnn.spec, backend, batchSize: 1 }))
    const x0 = tf.zeros([1, 2, F])
    tf.dispose([orThrow(rnn.apply(x0, warm)), x0])
    warm.dispose()
    fc.assert(
      fc.property(
        fc.array(fc.uniqueArray(fc.integer({ min: 0, max: 5 }), { minLength: 1, maxLength: 4 }), {
          minLength: 1,
          maxLength: 6,
        }),
        (calls) => {
          const before = tf.memory().numTensors
          const store = orThrow(createStateStore({ spec: rnn.spec, backend, initialSlots: 2 }))
          const alone = new Map<number, StateSaver<tf.Variable>>()
          calls.forEach((keys, t) => {
            const x = tf.tensor3d(
              keys.flatMap((k) => input(k, t)),
              [keys.length, 2, F],
            )
            const batched = orThrow(rnn.applyStreams(x, store, keys))
            keys.forEach((k, row) => {
              const saver =
                alone.get(k) ?? orThrow(createStateSaver({ spec: rnn.spec, backend, batchSize: 1 }))
              alone.set(k, saver)
              const xs = tf.tensor3d(input(k, t), [1, 2, F])
              const single = orThrow(rnn.apply(xs, saver))
              const mine = tf.tidy(() => batched.slice([row, 0, 0], [1, 2, 3]))
              expect(Array.from(mine.dataSync())).toEqual(
                Array.from(single.dataSync()).map((v) => expect.closeTo(v, 5)),
              )
              tf.dispose([xs, single, mine])
            })
            tf.dispose([x, batched])
          })
          store.dispose()
          for (const s of alone.values()) s.dispose()
          expect(tf.memory().numTensors).toBe(before)
        },
      ),
      { seed: 11, numRuns: 25 },
    )
  })

  it("a batch whose rows do not match the keys is refused and changes nothing", () => {
    const rnn = makeRnn()
    const backend = tfjsBackend()
    const store = orThrow(createStateStore({ spec: rnn.spec, backend }))
    const x = tf.zeros([2, 2, F])
    tf.dispose(orThrow(rnn.applyStreams(x, store, ["a", "b"])))
    const before = tf.memory().numTensors
    const r = rnn.applyStreams(x, store, ["a"])
    expect(r._tag === "Left" && r.left).toMatchObject({
      _tag: "BatchSizeMismatchError",
      expected: 1,
      actual: 2,
    })
    const dup = rnn.applyStreams(x, store, ["a", "a"])
    expect(dup._tag === "Left" && dup.left._tag).toBe("KeyError")
    expect(tf.memory().numTensors).toBe(before)
    expect(store.keys()).toEqual(["a", "b"])
    x.dispose()
    store.dispose()
  })
})
