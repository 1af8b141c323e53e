import * as tf from "@tensorflow/tfjs"
import { type LeafSpec, type StateTree, flatten, isLeafSpec, orThrow } from "@statesaver/core"
import { beforeAll, describe, expect, it } from "vitest"
import {
  cellLayout,
  fromTfjsStates,
  specFromCells,
  createStatefulRnn,
  toTfjsStates,
} from "../src/index.js"
import { type CellKind, makeCell } from "./models.js"
import { maxDiff, randomInputs, rng, useBackend } from "./setup.js"

beforeAll(() => useBackend("wasm"))

/** Distinct random values for every leaf of a spec tree at batch `b`. */
function randomState(
  layout: ReturnType<typeof cellLayout>,
  b: number,
  seed: number,
): StateTree<tf.Tensor> {
  const { spec } = layout
  const next = rng(seed)
  const { leaves } = flatten<LeafSpec>(spec, isLeafSpec)
  const tensors = leaves.map((l) => {
    const units = l.shape[1] as number
    return tf.tensor2d(
      Float32Array.from({ length: b * units }, () => next() * 2 - 1),
      [b, units],
    )
  })
  return orThrow(fromTfjsStates({ spec, tfjsOrder: tensors.map((_, i) => i) }, tensors))
}

describe("spec from tfjs-layers cells", () => {
  it("reads [h, c] for an LSTM cell and h for GRU and SimpleRNN cells", () => {
    expect(specFromCells(tf.layers.lstmCell({ units: 5 }))).toEqual([
      { shape: ["batch", 5], dtype: "float32" },
      { shape: ["batch", 5], dtype: "float32" },
    ])
    expect(specFromCells(tf.layers.gruCell({ units: 3 }))).toEqual({
      shape: ["batch", 3],
      dtype: "float32",
    })
    expect(specFromCells(tf.layers.simpleRNNCell({ units: 2 }))).toEqual({
      shape: ["batch", 2],
      dtype: "float32",
    })
  })

  it("reads a stack first layer first, from a cell list, stackedRNNCells or an RNN layer", () => {
    const cells = () => [
      tf.layers.lstmCell({ units: 4 }),
      tf.layers.gruCell({ units: 3 }),
      tf.layers.simpleRNNCell({ units: 2 }),
    ]
    const expected = [
      [
        { shape: ["batch", 4], dtype: "float32" },
        { shape: ["batch", 4], dtype: "float32" },
      ],
      { shape: ["batch", 3], dtype: "float32" },
      { shape: ["batch", 2], dtype: "float32" },
    ]
    expect(specFromCells(cells())).toEqual(expected)
    expect(specFromCells(tf.layers.stackedRNNCells({ cells: cells() }))).toEqual(expected)
    expect(specFromCells(tf.layers.rnn({ cell: cells(), returnState: true }))).toEqual(expected)
    // tfjs order is last layer first: h2, h1, then h0 and c0 of the LSTM (flatten indices 3, 2, 0, 1).
    expect(cellLayout(cells()).tfjsOrder).toEqual([3, 2, 0, 1])
  })

  it("maps a state tree to tfjs order and back unchanged", () => {
    const layout = cellLayout([tf.layers.lstmCell({ units: 4 }), tf.layers.lstmCell({ units: 4 })])
    const tree = [
      ["h0", "c0"],
      ["h1", "c1"],
    ]
    const flat = orThrow(toTfjsStates(layout, tree))
    expect(flat).toEqual(["h1", "c1", "h0", "c0"])
    expect(orThrow(fromTfjsStates(layout, flat))).toEqual(tree)
  })

  it("refuses an RNN layer without returnState and a stateful one (SpecError)", () => {
    const plain = createStatefulRnn(
      tf.layers.rnn({ cell: tf.layers.gruCell({ units: 2 }) }) as tf.RNN,
    )
    expect(plain._tag === "Left" && plain.left._tag).toBe("SpecError")
    const stateful = createStatefulRnn(
      tf.layers.rnn({
        cell: tf.layers.gruCell({ units: 2 }),
        returnState: true,
        stateful: true,
      }) as tf.RNN,
    )
    expect(stateful._tag === "Left" && stateful.left._tag).toBe("SpecError")
  })
})

describe("stacked states are fed and saved first layer first, although tfjs orders them last layer first", () => {
  const cases: [string, [CellKind, number][]][] = [
    [
      "unequal widths LSTM(6) LSTM(3)",
      [
        ["lstm", 6],
        ["lstm", 3],
      ],
    ],
    [
      "equal widths LSTM(4) LSTM(4) LSTM(4)",
      [
        ["lstm", 4],
        ["lstm", 4],
        ["lstm", 4],
      ],
    ],
    [
      "equal widths GRU(5) GRU(5)",
      [
        ["gru", 5],
        ["gru", 5],
      ],
    ],
    [
      "equal widths SimpleRNN(3) LSTM(3) GRU(3)",
      [
        ["rnn", 3],
        ["lstm", 3],
        ["gru", 3],
      ],
    ],
  ]
  for (const [name, kinds] of cases) {
    it(`${name}: every layer starts from its own state and ends in its own leaf`, () => {
      const cells = kinds.map(([k, u], i) => makeCell(k, u, 10 * i + 1))
      const rnn = orThrow(
        createStatefulRnn(
          tf.layers.rnn({ cell: cells, returnSequences: true, returnState: true }) as tf.RNN,
        ),
      )
      const x = randomInputs([3, 5, 2], 7)
      const layout = cellLayout(cells)
      const start = randomState(layout, 3, 99)
      const { output, state } = orThrow(rnn.run(x, start))
      // Reference: the cells unrolled by hand, each fed its own state in its own [h, c] order.
      const own = (start as StateTree<tf.Tensor>[]).map((t) => flatten<tf.Tensor>(t).leaves)
      const outs: tf.Tensor[] = []
      for (let t = 0; t < 5; t++) {
        let input: tf.Tensor = tf.squeeze(tf.slice(x, [0, t, 0], [3, 1, 2]), [1])
        cells.forEach((cell, i) => {
          const [y, ...s] = cell.call([input, ...(own[i] as tf.Tensor[])], {}) as tf.Tensor[]
          own[i] = s
          input = y as tf.Tensor
        })
        outs.push(input)
      }
      const seq = tf.stack(outs, 1)
      const finals = state as StateTree<tf.Tensor>[]
      cells.forEach((_, i) => {
        const got = flatten<tf.Tensor>(finals[i] as StateTree<tf.Tensor>).leaves
        const want = own[i] as tf.Tensor[]
        expect(got.map((t) => t.shape)).toEqual(want.map((t) => t.shape))
        want.forEach((t, k) =>
          expect(maxDiff(got[k] as tf.Tensor, t), `layer ${i} leaf ${k}`).toBeLessThan(1e-5),
        )
      })
      expect(maxDiff(output, seq)).toBeLessThan(1e-5)
    })
  }
})
