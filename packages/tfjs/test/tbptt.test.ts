import * as tf from "@tensorflow/tfjs"
import { type StateTree, flatten, orThrow } from "@statesaver/core"
import { beforeAll, describe, expect, it } from "vitest"
import { createTbpttTrainer } from "../src/index.js"
import { RecordingSGD, makeModel } from "./models.js"
import { maxDiff, randomInputs, useBackend } from "./setup.js"

beforeAll(() => useBackend("wasm"))

const leaves = (t: StateTree<tf.Tensor>): tf.Tensor[] => flatten<tf.Tensor>(t).leaves
const sliceT = (x: tf.Tensor, begin: number, size: number): tf.Tensor =>
  tf.slice(x, [0, begin, 0], [x.shape[0] as number, size, x.shape[2] as number])
const constantCopy = (tree: StateTree<tf.Tensor>): tf.Tensor[] =>
  leaves(tree).map((t) => tf.tensor(t.dataSync().slice(), t.shape, t.dtype))
const gradDiff = (a: Map<string, tf.Tensor>, b: tf.NamedTensorMap): number =>
  Math.max(...[...a].map(([k, g]) => maxDiff(g, b[k] as tf.Tensor)))

describe("truncated-BPTT trainer", () => {
  it("stops the gradient at the window boundary: equals gradients from a constant copy of the state, differs from full BPTT", () => {
    const m = makeModel("lstm", [5, 3], 2, 3)
    const x = randomInputs([3, 8, 2], 5)
    const y = randomInputs([3, 8, 2], 6)
    m.forward(sliceT(x, 0, 1), m.saver.state() as StateTree<tf.Tensor>) // builds the weights
    const optimizer = new RecordingSGD(0)
    const carried: tf.Tensor[][] = []
    const trainer = orThrow(
      createTbpttTrainer({
        saver: m.saver,
        optimizer,
        windowSize: 4,
        step: m.mseStep,
        onWindow: () => carried.push(constantCopy(m.saver.state() as StateTree<tf.Tensor>)),
      }),
    )
    const losses = orThrow(trainer.trainBatch({ inputs: x, targets: y }))
    expect(losses).toHaveLength(2)
    expect(optimizer.recorded).toHaveLength(2)
    const x0 = sliceT(x, 0, 4)
    const x1 = sliceT(x, 4, 4)
    const y1 = sliceT(y, 4, 4)
    const zeros = (carried[0] ?? []).map((t) => tf.zerosLike(t))
    const layoutTree = (flat: tf.Tensor[]) =>
      [
        [flat[0], flat[1]],
        [flat[2], flat[3]],
      ] as StateTree<tf.Tensor>
    // Window 1 from a constant copy of the state window 0 ended with.
    const truncated = tf.variableGrads(() => {
      const r = m.forward(x1, layoutTree(carried[0] as tf.Tensor[]))
      return tf.losses.meanSquaredError(y1, r.logits) as tf.Scalar
    })
    expect(truncated.value.dataSync()[0]).toBeCloseTo(losses[1] as number, 5)
    expect(gradDiff(optimizer.recorded[1] as Map<string, tf.Tensor>, truncated.grads)).toBeLessThan(
      1e-5,
    )
    // Full BPTT: the same loss, differentiated through window 0 as well.
    const full = tf.variableGrads(() => {
      const r0 = m.forward(x0, layoutTree(zeros))
      const r1 = m.forward(x1, r0.state)
      return tf.losses.meanSquaredError(y1, r1.logits) as tf.Scalar
    })
    expect(full.value.dataSync()[0]).toBeCloseTo(losses[1] as number, 5)
    expect(gradDiff(optimizer.recorded[1] as Map<string, tf.Tensor>, full.grads)).toBeGreaterThan(
      1e-4,
    )
    optimizer.release()
    m.saver.dispose()
  })

  it("resets the rows flagged as sequence starts before the first window; other rows carry on", () => {
    const m = makeModel("gru", [4, 3], 1, 3)
    const a = randomInputs([3, 5, 2], 1)
    const b = randomInputs([3, 5, 2], 2)
    const targets = tf.zeros([3, 5, 1])
    const trainer = orThrow(
      createTbpttTrainer({
        saver: m.saver,
        optimizer: new RecordingSGD(0),
        windowSize: 2,
        step: m.mseStep,
      }),
    )
    orThrow(trainer.trainBatch({ inputs: a, targets }))
    const before = constantCopy(m.saver.state() as StateTree<tf.Tensor>)
    orThrow(
      trainer.trainBatch({ inputs: b, targets, starts: tf.tensor1d([false, true, false], "bool") }),
    )
    expect(trainer.batches).toBe(2)
    const after = leaves(m.saver.state() as StateTree<tf.Tensor>)
    const zeros = before.map((t) => tf.zerosLike(t))
    const tree = (f: tf.Tensor[]) => [f[0], f[1]] as StateTree<tf.Tensor>
    const fromStart = leaves(m.forward(b, tree(zeros)).state)
    const carriedOn = leaves(m.forward(b, tree(before)).state)
    after.forEach((t, i) => {
      expect(maxDiff(tf.gather(t, [1]), tf.gather(fromStart[i] as tf.Tensor, [1]))).toBeLessThan(
        1e-5,
      )
      expect(
        maxDiff(tf.gather(t, [0, 2]), tf.gather(carriedOn[i] as tf.Tensor, [0, 2])),
      ).toBeLessThan(1e-5)
    })
    m.saver.dispose()
  })

  it("takes a smaller last batch through select (first rows carry on), then grows back with fresh rows", () => {
    const m = makeModel("rnn", [4, 2, 3], 1, 4)
    const trainer = orThrow(
      createTbpttTrainer({
        saver: m.saver,
        optimizer: new RecordingSGD(0),
        windowSize: 3,
        step: m.mseStep,
      }),
    )
    const x = randomInputs([4, 6, 2], 3)
    orThrow(trainer.trainBatch({ inputs: x, targets: tf.zeros([4, 6, 1]) }))
    const before = constantCopy(m.saver.state() as StateTree<tf.Tensor>)
    const small = randomInputs([3, 4, 2], 4)
    const reports: number[] = []
    orThrow(
      trainer.trainBatch({
        inputs: small,
        targets: tf.zeros([3, 4, 1]),
        starts: [false, false, false],
      }),
    )
    expect(m.saver.batchSize).toBe(3)
    const tree = (f: tf.Tensor[]) => [f[0], f[1], f[2]] as StateTree<tf.Tensor>
    const expected = leaves(
      m.forward(small, tree(before.map((t) => tf.gather(t, [0, 1, 2])))).state,
    )
    leaves(m.saver.state() as StateTree<tf.Tensor>).forEach((t, i) => {
      expect(t.shape[0]).toBe(3)
      expect(maxDiff(t, expected[i] as tf.Tensor)).toBeLessThan(1e-5)
    })
    const trainerWithReports = orThrow(
      createTbpttTrainer({
        saver: m.saver,
        optimizer: new RecordingSGD(0),
        windowSize: 3,
        step: m.mseStep,
        onWindow: (r) => reports.push(r.rows),
      }),
    )
    const big = randomInputs([4, 3, 2], 5)
    const mid = constantCopy(m.saver.state() as StateTree<tf.Tensor>)
    orThrow(trainerWithReports.trainBatch({ inputs: big, targets: tf.zeros([4, 3, 1]) }))
    expect(m.saver.batchSize).toBe(4)
    expect(reports).toEqual([4])
    const grown = mid.map((t) => tf.concat([t, tf.zeros([1, t.shape[1] as number])], 0))
    const expected2 = leaves(m.forward(big, tree(grown)).state)
    leaves(m.saver.state() as StateTree<tf.Tensor>).forEach((t, i) =>
      expect(maxDiff(t, expected2[i] as tf.Tensor)).toBeLessThan(1e-5),
    )
    m.saver.dispose()
  })

  it("reports one finite loss per window, the last window shorter", () => {
    const m = makeModel("lstm", [3], 1, 2)
    const seen: { window: number; windows: number; loss: number }[] = []
    const trainer = orThrow(
      createTbpttTrainer({
        saver: m.saver,
        optimizer: tf.train.adam(0.01),
        windowSize: 4,
        step: m.mseStep,
        onWindow: (r) => seen.push({ window: r.window, windows: r.windows, loss: r.loss }),
      }),
    )
    const losses = orThrow(
      trainer.trainBatch({ inputs: randomInputs([2, 10, 2], 9), targets: tf.ones([2, 10, 1]) }),
    )
    expect(seen.map((s) => [s.window, s.windows])).toEqual([
      [0, 3],
      [1, 3],
      [2, 3],
    ])
    expect(losses).toEqual(seen.map((s) => s.loss))
    for (const l of losses) expect(Number.isFinite(l) && l > 0).toBe(true)
    m.saver.dispose()
  })

  it("refuses mismatched targets or starts with a typed error and leaves the state unchanged", () => {
    const m = makeModel("gru", [3], 1, 2)
    const trainer = orThrow(
      createTbpttTrainer({
        saver: m.saver,
        optimizer: tf.train.sgd(0.1),
        windowSize: 2,
        step: m.mseStep,
      }),
    )
    orThrow(
      trainer.trainBatch({ inputs: randomInputs([2, 4, 2], 1), targets: tf.zeros([2, 4, 1]) }),
    )
    const before = constantCopy(m.saver.state() as StateTree<tf.Tensor>)
    const x = randomInputs([2, 4, 2], 2)
    const [wrongRows, rightRows] = [tf.zeros([3, 4, 1]), tf.zeros([2, 4, 1])]
    const live = tf.memory().numTensors
    const badTargets = trainer.trainBatch({ inputs: x, targets: wrongRows })
    expect(badTargets._tag === "Left" && badTargets.left._tag).toBe("BatchSizeMismatchError")
    const badStarts = trainer.trainBatch({ inputs: x, targets: rightRows, starts: [true] })
    expect(badStarts._tag === "Left" && badStarts.left._tag).toBe("RowIndexError")
    expect(tf.memory().numTensors).toBe(live)
    leaves(m.saver.state() as StateTree<tf.Tensor>).forEach((t, i) =>
      expect(maxDiff(t, before[i] as tf.Tensor)).toBe(0),
    )
    m.saver.dispose()
  })

  it("a step failing in the second window returns its error; weights and state are those the first window left, nothing leaks", () => {
    const bad = makeModel("lstm", [3], 1, 2)
    const ref = makeModel("lstm", [3], 1, 2)
    const x = randomInputs([2, 4, 2], 8)
    const y = tf.ones([2, 4, 1])
    const boom = new Error("window 1 failed")
    const failing = orThrow(
      createTbpttTrainer({
        saver: bad.saver,
        optimizer: tf.train.sgd(0.5),
        windowSize: 2,
        step: (w) => {
          if (w.window === 1) {
            bad.mseStep(w) // runs the model, so the tape holds tensors when the step throws
            throw boom
          }
          return bad.mseStep(w)
        },
      }),
    )
    const reference = orThrow(
      createTbpttTrainer({
        saver: ref.saver,
        optimizer: tf.train.sgd(0.5),
        windowSize: 2,
        step: ref.mseStep,
      }),
    )
    // Build both models' weights first, so the live count below is the steady one.
    const x0 = sliceT(x, 0, 2)
    const y0 = sliceT(y, 0, 2)
    bad.forward(x0, bad.saver.state() as StateTree<tf.Tensor>)
    ref.forward(x0, ref.saver.state() as StateTree<tf.Tensor>)
    const live = tf.memory().numTensors
    const r = failing.trainBatch({ inputs: x, targets: y })
    expect(r._tag === "Left" && r.left).toMatchObject({ _tag: "BackendError", cause: boom })
    expect(tf.memory().numTensors).toBe(live)
    expect(failing.batches).toBe(0)
    orThrow(reference.trainBatch({ inputs: x0, targets: y0 }))
    const weights = (m: typeof bad) =>
      [m.rnn.layer, m.head].flatMap((l) => l.getWeights().map((w) => Array.from(w.dataSync())))
    expect(weights(bad)).toEqual(weights(ref))
    expect(weights(bad)).not.toEqual(weights(makeModel("lstm", [3], 1, 2)))
    leaves(bad.saver.state() as StateTree<tf.Tensor>).forEach((t, i) =>
      expect(maxDiff(t, leaves(ref.saver.state() as StateTree<tf.Tensor>)[i] as tf.Tensor)).toBe(0),
    )
    bad.saver.dispose()
    ref.saver.dispose()
  })
})
