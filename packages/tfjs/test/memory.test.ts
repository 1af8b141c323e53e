import * as tf from "@tensorflow/tfjs"
import { orThrow } from "@statesaver/core"
import { beforeAll, describe, expect, it } from "vitest"
import { createTbpttTrainer } from "../src/index.js"
import { makeModel } from "./models.js"
import { randomInputs, useBackend } from "./setup.js"

beforeAll(() => useBackend("wasm"))

describe("no live tensor growth", () => {
  it("tf.memory().numTensors is flat over 5,000 training windows (resets and a smaller batch included)", () => {
    const m = makeModel("lstm", [3, 2], 1, 2)
    const trainer = orThrow(
      createTbpttTrainer({
        saver: m.saver,
        optimizer: tf.train.adam(0.01),
        windowSize: 1,
        step: m.mseStep,
      }),
    )
    const x = randomInputs([2, 5, 2], 1)
    const y = tf.ones([2, 5, 1])
    const xSmall = randomInputs([1, 5, 2], 2)
    const ySmall = tf.ones([1, 5, 1])
    const startsOnDevice = tf.tensor1d([1, 0], "bool")
    const batch = (i: number) =>
      i % 50 === 49
        ? { inputs: xSmall, targets: ySmall }
        : i % 7 === 0
          ? { inputs: x, targets: y, starts: [false, true] }
          : i % 11 === 0
            ? { inputs: x, targets: y, starts: startsOnDevice }
            : { inputs: x, targets: y }
    for (let i = 0; i < 50; i++) orThrow(trainer.trainBatch(batch(i)))
    const start = tf.memory().numTensors
    // 1,000 batches of 5 steps, one window per step.
    for (let i = 50; i < 1050; i++) orThrow(trainer.trainBatch(batch(i)))
    expect(trainer.batches).toBe(1050)
    expect(tf.memory().numTensors).toBe(start)
    m.saver.dispose()
  })

  it("tf.memory().numTensors is flat over 5,000 inference steps (resets and selects included)", () => {
    const m = makeModel("gru", [4, 3], 1, 3)
    const x = randomInputs([3, 1, 2], 3)
    const xOne = randomInputs([1, 1, 2], 4)
    const step = () => tf.dispose(orThrow(m.rnn.apply(m.saver.batchSize === 3 ? x : xOne, m.saver)))
    step()
    const start = tf.memory().numTensors
    for (let i = 0; i < 5000; i++) {
      step()
      if (i % 100 === 0) orThrow(m.saver.reset([i % 3]))
      if (i % 500 === 250) orThrow(m.saver.select([2]))
      if (i % 500 === 251) orThrow(m.saver.select([0, null, 0]))
    }
    expect(m.saver.batchSize).toBe(3)
    expect(tf.memory().numTensors).toBe(start)
    m.saver.dispose()
  })
})
