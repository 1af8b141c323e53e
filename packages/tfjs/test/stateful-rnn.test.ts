import * as tf from "@tensorflow/tfjs"
import {
  type StateSaver,
  type StateTree,
  createStateSaver,
  flatten,
  init,
  hostTensor,
  orThrow,
  resolveSpec,
} from "@statesaver/core"
import { beforeAll, describe, expect, it } from "vitest"
import {
  type StatefulRnn,
  resetWhere,
  selectRows,
  createStatefulRnn,
  tfjsBackend,
} from "../src/index.js"
import { type CellKind, makeCell } from "./models.js"
import { maxDiff, randomInputs, randomWindows, useBackend } from "./setup.js"

beforeAll(() => useBackend("wasm"))

const cell = makeCell
const stack = (kind: CellKind, widths: number[], seed = 1): StatefulRnn =>
  orThrow(
    createStatefulRnn(
      tf.layers.rnn({
        cell: widths.map((u, i) => cell(kind, u, seed + 10 * i)),
        returnSequences: true,
        returnState: true,
      }) as tf.RNN,
    ),
  )
const saverFor = (rnn: StatefulRnn, batchSize: number): StateSaver<tf.Variable> =>
  orThrow(createStateSaver({ spec: rnn.spec, backend: tfjsBackend(), batchSize }))
const leaves = (t: StateTree<tf.Tensor>): tf.Tensor[] => flatten<tf.Tensor>(t).leaves
const sliceT = (x: tf.Tensor, begin: number, size: number): tf.Tensor =>
  tf.slice(x, [0, begin, 0], [x.shape[0] as number, size, x.shape[2] as number])
const rows = (x: tf.Tensor, r: number[]): tf.Tensor => tf.gather(x, r, 0)

describe("chunked equals whole", () => {
  const stacks: [CellKind, number[]][] = [
    ["lstm", [7, 4, 5]],
    ["gru", [6, 3]],
    ["rnn", [5, 8, 2]],
  ]
  for (const [kind, widths] of stacks) {
    for (const seed of [1, 2, 3]) {
      it(`${kind} stack ${widths.join("-")}, random windowing ${seed}: same outputs and final state as one run`, () => {
        const T = 13
        const windows = randomWindows(T, seed * 31 + widths.length)
        const rnn = stack(kind, widths, seed)
        const x = randomInputs([3, T, 2], seed)
        const whole = saverFor(rnn, 3)
        const { output: expected, state: finalWhole } = orThrow(
          rnn.run(x, whole.state() as StateTree<tf.Tensor>),
        )
        const chunked = saverFor(rnn, 3)
        const outs: tf.Tensor[] = []
        let at = 0
        for (const w of windows) {
          outs.push(orThrow(rnn.apply(sliceT(x, at, w), chunked)))
          at += w
        }
        expect(windows.length).toBeGreaterThan(1)
        const got = tf.concat(outs, 1)
        expect(got.shape).toEqual([3, T, widths.at(-1)])
        expect(maxDiff(got, expected)).toBeLessThan(1e-5)
        const a = leaves(chunked.state() as StateTree<tf.Tensor>)
        const b = leaves(finalWhole)
        expect(a.map((t) => t.shape)).toEqual(b.map((t) => t.shape))
        a.forEach((t, i) => expect(maxDiff(t, b[i] as tf.Tensor), `leaf ${i}`).toBeLessThan(1e-5))
        whole.dispose()
        chunked.dispose()
      })
    }
  }
})

describe("per-row reset and select between steps", () => {
  it("reset row r then step equals a fresh run of r; other rows equal the run without reset", () => {
    const rnn = stack("lstm", [6, 3])
    const x1 = randomInputs([4, 5, 2], 11)
    const x2 = randomInputs([4, 4, 2], 12)
    const reset = saverFor(rnn, 4)
    const carried = saverFor(rnn, 4)
    orThrow(rnn.apply(x1, reset))
    orThrow(rnn.apply(x1, carried))
    orThrow(reset.reset([2]))
    const y = orThrow(rnn.apply(x2, reset))
    const yCarried = orThrow(rnn.apply(x2, carried))
    const fresh = saverFor(rnn, 1)
    const yFresh = orThrow(rnn.apply(rows(x2, [2]), fresh))
    expect(maxDiff(rows(y, [2]), yFresh)).toBeLessThan(1e-6)
    expect(maxDiff(rows(y, [0, 1, 3]), rows(yCarried, [0, 1, 3]))).toBe(0)
    // Row 2 really differs from carrying on (the reset did something).
    expect(maxDiff(rows(y, [2]), rows(yCarried, [2]))).toBeGreaterThan(1e-3)
    const s = leaves(reset.state() as StateTree<tf.Tensor>)
    const f = leaves(fresh.state() as StateTree<tf.Tensor>)
    s.forEach((t, i) => expect(maxDiff(rows(t, [2]), f[i] as tf.Tensor)).toBeLessThan(1e-6))
    reset.dispose()
    carried.dispose()
    fresh.dispose()
  })

  it("select then step equals stepping the selected rows; a null row steps from init", () => {
    const rnn = stack("gru", [5, 4])
    const x1 = randomInputs([4, 3, 2], 21)
    const x2 = randomInputs([4, 3, 2], 22)
    const picked = saverFor(rnn, 4)
    const all = saverFor(rnn, 4)
    orThrow(rnn.apply(x1, picked))
    orThrow(rnn.apply(x1, all))
    orThrow(picked.select([3, 0, 0, null]))
    expect(picked.batchSize).toBe(4)
    const xPicked = rows(x2, [3, 0, 0, 1])
    const y = orThrow(rnn.apply(xPicked, picked))
    const yAll = orThrow(rnn.apply(x2, all))
    expect(maxDiff(rows(y, [0, 1, 2]), rows(yAll, [3, 0, 0]))).toBeLessThan(1e-6)
    const fresh = saverFor(rnn, 1)
    expect(maxDiff(rows(y, [3]), orThrow(rnn.apply(rows(x2, [1]), fresh)))).toBeLessThan(1e-6)
    orThrow(picked.select([1]))
    expect(picked.batchSize).toBe(1)
    const err = rnn.apply(x2, picked)
    expect(err._tag === "Left" && err.left._tag).toBe("BatchSizeMismatchError")
    picked.dispose()
    all.dispose()
    fresh.dispose()
  })
})

describe("failed calls", () => {
  it("inputs with features the layer was not built for are a ShapeMismatchError; the state is unchanged and nothing leaks", () => {
    const rnn = stack("lstm", [4, 3])
    const saver = saverFor(rnn, 2)
    orThrow(rnn.apply(randomInputs([2, 3, 2], 1), saver))
    const before = leaves(saver.state() as StateTree<tf.Tensor>).map((t) => t.dataSync().slice())
    const bad = randomInputs([2, 3, 5], 2) // 5 features where the layer was built for 2
    const live = tf.memory().numTensors
    const r = rnn.apply(bad, saver)
    expect(r._tag === "Left" && r.left).toMatchObject({
      _tag: "ShapeMismatchError",
      path: "inputs",
      expected: ["batch", "time", 2],
      actual: [2, 3, 5],
    })
    expect(tf.memory().numTensors).toBe(live)
    const after = leaves(saver.state() as StateTree<tf.Tensor>).map((t) => t.dataSync())
    after.forEach((a, i) => expect(Array.from(a)).toEqual(Array.from(before[i] ?? [])))
    const wrongRows = rnn.apply(randomInputs([3, 1, 2], 3), saver)
    expect(wrongRows._tag === "Left" && wrongRows.left._tag).toBe("BatchSizeMismatchError")
    saver.dispose()
  })
})

describe("functional state ops for training steps", () => {
  const spec = orThrow(
    resolveSpec([
      {
        shape: ["batch", 2],
        dtype: "float32",
        init: init.tensor(hostTensor("float32", [2], [5, 6])),
      },
      { shape: [2, "batch"], dtype: "float32", init: init.constant(-1) },
    ]),
  )
  const state = (): tf.Tensor[] => [
    tf.tensor2d([1, 2, 3, 4, 7, 8], [3, 2]),
    tf.tensor2d([1, 2, 3, 4, 5, 6], [2, 3]),
  ]

  it("resetWhere sets masked rows to init along each leaf's batch axis and leaves the input intact", () => {
    const s = state()
    const out = orThrow(resetWhere(spec, s, [false, true, false])) as tf.Tensor[]
    expect(Array.from(out[0]?.dataSync() ?? [])).toEqual([1, 2, 5, 6, 7, 8])
    expect(Array.from(out[1]?.dataSync() ?? [])).toEqual([1, -1, 3, 4, -1, 6])
    expect(Array.from(s[0]?.dataSync() ?? [])).toEqual([1, 2, 3, 4, 7, 8])
    const viaTensor = orThrow(resetWhere(spec, s, tf.tensor1d([0, 1, 0], "int32"))) as tf.Tensor[]
    expect(maxDiff(viaTensor[1] as tf.Tensor, out[1] as tf.Tensor)).toBe(0)
  })

  it("resetWhere cuts the gradient for reset rows only", () => {
    const [a, b] = state() as [tf.Tensor, tf.Tensor]
    const [ga, gb] = tf.grads((x: tf.Tensor, y: tf.Tensor) => {
      const [p, q] = orThrow(resetWhere(spec, [x, y], [true, false, true])) as tf.Tensor[]
      return tf.add(tf.sum(tf.mul(p as tf.Tensor, 3)), tf.sum(tf.mul(q as tf.Tensor, 2)))
    })([a, b])
    expect(Array.from(ga?.dataSync() ?? [])).toEqual([0, 0, 3, 3, 0, 0])
    expect(Array.from(gb?.dataSync() ?? [])).toEqual([0, 2, 0, 0, 2, 0])
  })

  it("resetWhere refuses a mask of the wrong length (RowIndexError)", () => {
    const r = resetWhere(spec, state(), [true])
    expect(r._tag === "Left" && r.left._tag).toBe("RowIndexError")
  })

  it("selectRows gathers rows (null is init) and routes gradients to the rows picked", async () => {
    // The gradient of tf.gather needs UnsortedSegmentSum, which tfjs-backend-wasm lacks.
    await useBackend("cpu")
    const s = state()
    const out = orThrow(selectRows(spec, s, [2, null, 2])) as tf.Tensor[]
    expect(Array.from(out[0]?.dataSync() ?? [])).toEqual([7, 8, 5, 6, 7, 8])
    expect(Array.from(out[1]?.dataSync() ?? [])).toEqual([3, -1, 3, 6, -1, 6])
    const [ga] = tf.grads((x: tf.Tensor) =>
      tf.sum(
        (
          orThrow(selectRows(spec, [x, s[1] as tf.Tensor], [2, null, 2])) as tf.Tensor[]
        )[0] as tf.Tensor,
      ),
    )([s[0] as tf.Tensor])
    expect(Array.from(ga?.dataSync() ?? [])).toEqual([0, 0, 0, 0, 2, 2])
    const bad = selectRows(spec, s, [3])
    expect(bad._tag === "Left" && bad.left._tag).toBe("RowIndexError")
    await useBackend("wasm")
  })
})
