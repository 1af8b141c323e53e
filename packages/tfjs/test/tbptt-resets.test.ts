// Sequence starts inside windows, resetEveryWindow, the rows a resized batch keeps, and evaluation.
// Every reference here is a plain tfjs loop over the model's own layers (`layer.apply` with an
// `initialState`, a sequence split by hand where it restarts), never the trainer.
import * as tf from "@tensorflow/tfjs"
import { type StateTree, createStateSaver, flatten, orThrow } from "@statesaver/core"
import { beforeAll, describe, expect, it } from "vitest"
import {
  type TbpttStepResult,
  type TbpttWindow,
  createTbpttTrainer,
  evaluateTbptt,
  tfjsBackend,
} from "../src/index.js"
import { type Model, RecordingSGD, makeModel } from "./models.js"
import { maxDiff, randomInputs, useBackend } from "./setup.js"

beforeAll(() => useBackend("wasm"))

const H = 4 // GRU units of every model here: one layer, state [h]

const leaves = (t: StateTree<tf.Tensor>): tf.Tensor[] => flatten<tf.Tensor>(t).leaves
const savedH = (m: Model): tf.Tensor =>
  leaves(m.saver.state() as StateTree<tf.Tensor>)[0] as tf.Tensor
const copy = (t: tf.Tensor): tf.Tensor => tf.tensor(t.dataSync().slice(), t.shape, t.dtype)
const rowOf = (t: tf.Tensor, r: number): tf.Tensor =>
  tf.slice(t, [r, ...t.shape.slice(1).map(() => 0)], [1, ...t.shape.slice(1)])
const steps = (t: tf.Tensor, a: number, b: number): tf.Tensor =>
  tf.slice(t, [0, a, 0], [t.shape[0] as number, b - a, t.shape[2] as number])
const gradDiff = (a: Map<string, tf.Tensor>, b: tf.NamedTensorMap): number =>
  Math.max(...[...a].map(([k, g]) => maxDiff(g, b[k] as tf.Tensor)))

/** Plain tfjs: the layer from `h`, then the head. */
function plain(m: Model, x: tf.Tensor, h: tf.Tensor): { y: tf.Tensor; h: tf.Tensor } {
  const [out, next] = m.rnn.layer.apply(x, { initialState: [h] }) as tf.Tensor[]
  return { y: m.head.apply(out as tf.Tensor) as tf.Tensor, h: next as tf.Tensor }
}

/**
 * One row over steps `[a, b)` of `x` (`[1, T, f]`) from `h`, restarting from zeros right before
 * each step of `cuts` in `[a, b)` (a cut at `a` too): outputs `[1, b - a, out]` and final state.
 */
function plainRow(
  m: Model,
  x: tf.Tensor,
  h: tf.Tensor,
  cuts: readonly number[],
  a: number,
  b: number,
): { y: tf.Tensor; h: tf.Tensor } {
  if (a === b) return { y: tf.zeros([1, 0, 1]), h }
  const bounds = [a, ...cuts.filter((c) => c > a && c < b), b]
  let state = cuts.includes(a) ? tf.zeros([1, H]) : h
  const ys: tf.Tensor[] = []
  for (let i = 0; i + 1 < bounds.length; i++) {
    const from = bounds[i] as number
    if (i > 0) state = tf.zeros([1, H])
    const r = plain(m, steps(x, from, bounds[i + 1] as number), state)
    ys.push(r.y)
    state = r.h
  }
  return { y: tf.concat(ys, 1), h: state }
}

describe("sequence starts inside a window", () => {
  it("resets a row right before its start step: final state and every window's gradients equal plain tfjs runs of the sequence split by hand there", () => {
    const m = makeModel("gru", [H], 1, 3)
    const optimizer = new RecordingSGD(0)
    const trainer = orThrow(
      createTbpttTrainer({ saver: m.saver, optimizer, windowSize: 4, step: m.mseStep }),
    )
    // A first batch, so the carried state is not zero.
    orThrow(
      trainer.trainBatch({
        inputs: randomInputs([3, 4, 2], 1),
        targets: randomInputs([3, 4, 1], 2),
      }),
    )
    const carried = copy(savedH(m))
    optimizer.release()
    const x = randomInputs([3, 8, 2], 3)
    const y = randomInputs([3, 8, 1], 4)
    // Row 0 restarts at step 4 (window 1's first step, given per window), row 1 at step 6 (inside
    // window 1), row 2 at step 1 (inside window 0).
    const cuts = [[4], [6], [1]]
    const starts = [0, 1, 2].map((r) =>
      Array.from({ length: 8 }, (_, t) => (r > 0 && (cuts[r] as number[]).includes(t) ? 1 : 0)),
    )
    orThrow(
      trainer.trainBatch({
        inputs: x,
        targets: y,
        starts: tf.tensor2d(starts, [3, 8], "int32"),
        windowStarts: [
          [false, true],
          [false, false],
          [false, false],
        ],
      }),
    )
    expect(optimizer.recorded).toHaveLength(2)

    // Final state: each row from its last start, from zeros, to the end of the batch.
    const h = savedH(m)
    for (let r = 0; r < 3; r++) {
      const last = Math.max(...(cuts[r] as number[]))
      const fromScratch = plain(m, steps(rowOf(x, r), last, 8), tf.zeros([1, H])).h
      expect(maxDiff(rowOf(h, r), fromScratch)).toBeLessThan(1e-5)
    }

    // Each window's gradients: rows run by hand, the state at the window's start a constant.
    for (const [w, a, b] of [
      [0, 0, 4],
      [1, 4, 8],
    ] as const) {
      const atStart = [0, 1, 2].map((r) =>
        copy(plainRow(m, rowOf(x, r), rowOf(carried, r), cuts[r] as number[], 0, a).h),
      )
      const hand = tf.variableGrads(() => {
        const ys = [0, 1, 2].map(
          (r) => plainRow(m, rowOf(x, r), atStart[r] as tf.Tensor, cuts[r] as number[], a, b).y,
        )
        return tf.losses.meanSquaredError(steps(y, a, b), tf.concat(ys, 0)) as tf.Scalar
      })
      expect(gradDiff(optimizer.recorded[w] as Map<string, tf.Tensor>, hand.grads)).toBeLessThan(
        1e-5,
      )
      // The same window without the cuts inside it has other gradients: the check can fail.
      const uncut = tf.variableGrads(() => {
        const ys = [0, 1, 2].map(
          (r) => plainRow(m, rowOf(x, r), atStart[r] as tf.Tensor, [], a, b).y,
        )
        return tf.losses.meanSquaredError(steps(y, a, b), tf.concat(ys, 0)) as tf.Scalar
      })
      expect(
        gradDiff(optimizer.recorded[w] as Map<string, tf.Tensor>, uncut.grads),
      ).toBeGreaterThan(1e-5)
    }
    optimizer.release()
    m.saver.dispose()
  })

  it("tells the step where each part of a split window begins, and trains without live-tensor growth", () => {
    const m = makeModel("gru", [H], 1, 2)
    const seen: [number, number, number][] = []
    const trainer = orThrow(
      createTbpttTrainer({
        saver: m.saver,
        optimizer: tf.train.sgd(0.05),
        windowSize: 5,
        step: (w: TbpttWindow): TbpttStepResult => {
          seen.push([w.window, w.offset, w.inputs.shape[1] as number])
          expect(w.training).toBe(true)
          return m.mseStep(w)
        },
      }),
    )
    const x = randomInputs([2, 10, 2], 5)
    const y = randomInputs([2, 10, 1], 6)
    const starts = [Array.from({ length: 10 }, (_, t) => t === 2 || t === 7), Array(10).fill(false)]
    orThrow(trainer.trainBatch({ inputs: x, targets: y, starts }))
    // Warm-up call (builds the weights), then window 0 in [0, 2) [2, 5), window 1 in [5, 7) [7, 10).
    expect(seen.slice(1)).toEqual([
      [0, 0, 2],
      [0, 2, 3],
      [1, 0, 2],
      [1, 2, 3],
    ])
    const live = tf.memory().numTensors
    for (let i = 0; i < 5; i++) orThrow(trainer.trainBatch({ inputs: x, targets: y, starts }))
    expect(tf.memory().numTensors).toBe(live)
    m.saver.dispose()
  })
})

describe("resetEveryWindow", () => {
  it("equals feeding each window from zero state by hand: same losses, gradients and final state", () => {
    const m = makeModel("gru", [H], 1, 3, 7)
    const optimizer = new RecordingSGD(0)
    const losses: number[] = []
    const trainer = orThrow(
      createTbpttTrainer({
        saver: m.saver,
        optimizer,
        windowSize: 3,
        step: m.mseStep,
        resetEveryWindow: true,
        onWindow: (r) => losses.push(r.loss),
      }),
    )
    orThrow(
      trainer.trainBatch({
        inputs: randomInputs([3, 4, 2], 8),
        targets: randomInputs([3, 4, 1], 9),
      }),
    )
    optimizer.release()
    losses.length = 0
    const x = randomInputs([3, 7, 2], 10)
    const y = randomInputs([3, 7, 1], 11)
    orThrow(trainer.trainBatch({ inputs: x, targets: y }))
    const windows = [
      [0, 3],
      [3, 6],
      [6, 7],
    ] as const
    expect(losses).toHaveLength(3)
    windows.forEach(([a, b], w) => {
      const hand = tf.variableGrads(
        () =>
          tf.losses.meanSquaredError(
            steps(y, a, b),
            plain(m, steps(x, a, b), tf.zeros([3, H])).y,
          ) as tf.Scalar,
      )
      expect(hand.value.dataSync()[0]).toBeCloseTo(losses[w] as number, 5)
      expect(gradDiff(optimizer.recorded[w] as Map<string, tf.Tensor>, hand.grads)).toBeLessThan(
        1e-5,
      )
    })
    const last = plain(m, steps(x, 6, 7), tf.zeros([3, H])).h
    expect(maxDiff(savedH(m), last)).toBeLessThan(1e-5)
    // Carried state gives another window 1: the flag is what made the difference.
    const carriedWindow1 = tf.variableGrads(() => {
      const h3 = copy(plain(m, steps(x, 0, 3), tf.zeros([3, H])).h)
      return tf.losses.meanSquaredError(steps(y, 3, 6), plain(m, steps(x, 3, 6), h3).y) as tf.Scalar
    })
    expect(
      gradDiff(optimizer.recorded[1] as Map<string, tf.Tensor>, carriedWindow1.grads),
    ).toBeGreaterThan(1e-5)
    optimizer.release()
    m.saver.dispose()
  })
})

describe("rows a resized batch keeps", () => {
  it("continues the held rows `rows` names (reordered, dropped, fresh), in a smaller and a same-size batch", () => {
    const m = makeModel("gru", [H], 1, 3, 3)
    const trainer = orThrow(
      createTbpttTrainer({
        saver: m.saver,
        optimizer: new RecordingSGD(0),
        windowSize: 2,
        step: m.mseStep,
      }),
    )
    orThrow(
      trainer.trainBatch({ inputs: randomInputs([3, 4, 2], 12), targets: tf.zeros([3, 4, 1]) }),
    )
    const held = copy(savedH(m))
    const x = randomInputs([2, 3, 2], 13)
    orThrow(trainer.trainBatch({ inputs: x, targets: tf.zeros([2, 3, 1]), rows: [2, 0] }))
    expect(m.saver.batchSize).toBe(2)
    const expected = plain(m, x, tf.concat([rowOf(held, 2), rowOf(held, 0)], 0)).h
    expect(maxDiff(savedH(m), expected)).toBeLessThan(1e-5)

    const held2 = copy(savedH(m))
    const x2 = randomInputs([2, 3, 2], 14)
    orThrow(trainer.trainBatch({ inputs: x2, targets: tf.zeros([2, 3, 1]), rows: [null, 0] }))
    const expected2 = plain(m, x2, tf.concat([tf.zeros([1, H]), rowOf(held2, 0)], 0)).h
    expect(maxDiff(savedH(m), expected2)).toBeLessThan(1e-5)
    // rows [0, 1] on 2 held rows is the default: no resize, same result as without it.
    const held3 = copy(savedH(m))
    orThrow(trainer.trainBatch({ inputs: x2, targets: tf.zeros([2, 3, 1]), rows: [0, 1] }))
    expect(maxDiff(savedH(m), plain(m, x2, held3).h)).toBeLessThan(1e-5)
    m.saver.dispose()
  })
})

describe("evaluation", () => {
  const V = 3 // classes of the cross-entropy head

  /** Softmax cross-entropy per token, computed on the host from logits and integer labels. */
  const crossEntropies = (logits: tf.Tensor, labels: number[][]): number[] => {
    const z = logits.arraySync() as number[][][]
    const out: number[] = []
    z.forEach((row, r) =>
      row.forEach((l, t) => {
        const max = Math.max(...l)
        const lse = max + Math.log(l.reduce((s, v) => s + Math.exp(v - max), 0))
        out.push(lse - (l[labels[r]?.[t] as number] as number))
      }),
    )
    return out
  }

  const labelsOf = (rows: number, time: number, seed: number): number[][] =>
    Array.from({ length: rows }, (_, r) =>
      Array.from({ length: time }, (_, t) => (r * 7 + t * 3 + seed) % V),
    )

  const ceStep =
    (m: Model) =>
    ({ inputs, targets, state, training }: TbpttWindow): TbpttStepResult => {
      const r = m.forward(inputs, state, training)
      return { loss: tf.losses.softmaxCrossEntropy(targets, r.logits) as tf.Scalar, state: r.state }
    }

  it("equals a hand-written no-gradient loop over the same windows (resets inside windows, a short batch through rows); perplexity is exp of it; training state, weights and live tensors untouched", async () => {
    const m = makeModel("gru", [H], V, 3, 5)
    const trainer = orThrow(
      createTbpttTrainer({
        saver: m.saver,
        optimizer: tf.train.sgd(0.1),
        windowSize: 2,
        step: ceStep(m),
      }),
    )
    const labels1 = labelsOf(3, 5, 1)
    const labels2 = labelsOf(2, 3, 2)
    const batch1 = {
      inputs: randomInputs([3, 5, 2], 20),
      targets: tf.oneHot(tf.tensor2d(labels1, [3, 5], "int32"), V),
      starts: [
        [0, 0, 0, 0, 0],
        [0, 0, 0, 1, 0],
        [0, 1, 0, 0, 0],
      ],
    }
    const batch2 = {
      inputs: randomInputs([2, 3, 2], 21),
      targets: tf.oneHot(tf.tensor2d(labels2, [2, 3], "int32"), V),
      rows: [2, 0],
    }
    orThrow(trainer.trainBatch(batch1)) // trained weights and a carried training state
    const stateBefore = Array.from(orThrow(await m.saver.snapshot()))
    const weights = () =>
      [m.rnn.layer, m.head].flatMap((l) => l.getWeights().map((w) => Array.from(w.dataSync())))
    const weightsBefore = weights()
    const evalSaver = orThrow(
      createStateSaver({ spec: m.rnn.spec, backend: tfjsBackend(), batchSize: 3 }),
    )

    const live = tf.memory().numTensors
    const got = orThrow(
      trainer.evaluate([batch1, batch2], { saver: evalSaver, crossEntropy: true }),
    )
    expect(tf.memory().numTensors).toBe(live)
    const fresh = orThrow(trainer.evaluate([batch1, batch2], { crossEntropy: true }))
    expect(tf.memory().numTensors).toBe(live)
    const standalone = orThrow(
      evaluateTbptt(
        {
          saver: orThrow(
            createStateSaver({ spec: m.rnn.spec, backend: tfjsBackend(), batchSize: 3 }),
          ),
          step: ceStep(m),
          windowSize: 2,
        },
        [batch1, batch2],
      ),
    )

    // By hand: per window, per row, the state carried (restarted at each start), no gradients.
    const cuts = [[], [3], [1]] as number[][]
    let h = [0, 1, 2].map(() => tf.zeros([1, H]))
    const ces: number[] = []
    for (const [a, b] of [
      [0, 2],
      [2, 4],
      [4, 5],
    ] as const) {
      const runs = [0, 1, 2].map((r) =>
        plainRow(m, rowOf(batch1.inputs, r), h[r] as tf.Tensor, cuts[r] as number[], a, b),
      )
      ces.push(
        ...crossEntropies(
          tf.concat(
            runs.map((x) => x.y),
            0,
          ),
          labels1.map((l) => l.slice(a, b)),
        ),
      )
      h = runs.map((x) => x.h)
    }
    h = [h[2] as tf.Tensor, h[0] as tf.Tensor] // rows: [2, 0]
    for (const [a, b] of [
      [0, 2],
      [2, 3],
    ] as const) {
      const runs = [0, 1].map((r) =>
        plainRow(m, rowOf(batch2.inputs, r), h[r] as tf.Tensor, [], a, b),
      )
      ces.push(
        ...crossEntropies(
          tf.concat(
            runs.map((x) => x.y),
            0,
          ),
          labels2.map((l) => l.slice(a, b)),
        ),
      )
      h = runs.map((x) => x.h)
    }
    const mean = ces.reduce((s, v) => s + v, 0) / ces.length
    expect(ces).toHaveLength(15 + 6)
    expect(got.tokens).toBe(21)
    expect(got.windows).toBe(5)
    expect(got.batches).toBe(2)
    expect(got.loss).toBeCloseTo(mean, 5)
    expect(got.perplexity).toBeCloseTo(Math.exp(mean), 4)
    expect(fresh.loss).toBeCloseTo(mean, 5)
    expect(standalone.loss).toBeCloseTo(mean, 5)
    expect(standalone.perplexity).toBeUndefined()
    // The evaluation saver holds the final state of the hand loop; the training state is untouched.
    expect(evalSaver.batchSize).toBe(2)
    expect(
      maxDiff(leaves(evalSaver.state() as StateTree<tf.Tensor>)[0] as tf.Tensor, tf.concat(h, 0)),
    ).toBeLessThan(1e-5)
    expect(Array.from(orThrow(await m.saver.snapshot()))).toEqual(stateBefore)
    expect(weights()).toEqual(weightsBefore)
    expect(trainer.batches).toBe(1)
    evalSaver.dispose()
    m.saver.dispose()
  })

  it("with resetEveryWindow equals each window evaluated from zero state by hand, and the step sees training false", () => {
    const m = makeModel("gru", [H], V, 2, 9)
    const flags: boolean[] = []
    const step = ceStep(m)
    const labels = labelsOf(2, 5, 3)
    const batch = {
      inputs: randomInputs([2, 5, 2], 30),
      targets: tf.oneHot(tf.tensor2d(labels, [2, 5], "int32"), V),
    }
    const saver = orThrow(
      createStateSaver({ spec: m.rnn.spec, backend: tfjsBackend(), batchSize: 2 }),
    )
    const got = orThrow(
      evaluateTbptt(
        {
          saver,
          windowSize: 2,
          resetEveryWindow: true,
          crossEntropy: true,
          step: (w) => {
            flags.push(w.training)
            return step(w)
          },
        },
        [batch],
      ),
    )
    expect(flags).toEqual([false, false, false])
    const ces: number[] = []
    for (const [a, b] of [
      [0, 2],
      [2, 4],
      [4, 5],
    ] as const) {
      const y = plain(m, steps(batch.inputs, a, b), tf.zeros([2, H])).y
      ces.push(
        ...crossEntropies(
          y,
          labels.map((l) => l.slice(a, b)),
        ),
      )
    }
    const mean = ces.reduce((s, v) => s + v, 0) / ces.length
    expect(got.loss).toBeCloseTo(mean, 5)
    expect(got.perplexity).toBeCloseTo(Math.exp(mean), 4)
    // Carried state (from init) gives another loss: the flag made the difference.
    orThrow(saver.reset())
    const carried = orThrow(
      evaluateTbptt({ saver, windowSize: 2, step, crossEntropy: true }, [batch]),
    )
    expect(Math.abs(carried.loss - got.loss)).toBeGreaterThan(1e-4)
    saver.dispose()
    m.saver.dispose()
  })
})
