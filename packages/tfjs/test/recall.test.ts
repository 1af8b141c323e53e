import * as tf from "@tensorflow/tfjs"
import { createStateSaver, orThrow } from "@statesaver/core"
import { beforeAll, describe, expect, it } from "vitest"
import {
  type StatefulRnn,
  createTbpttTrainer,
  createStatefulRnn,
  tfjsBackend,
} from "../src/index.js"
import { rng, seeded, useBackend } from "./setup.js"

beforeAll(() => useBackend("wasm"))

// Each window: a query symbol, then W - 1 random tokens. The answer at the query is the last
// token of the previous window: it is reachable only through the state carried across the
// boundary, and the loss is taken at the query alone.
const K = 3
const W = 4
const B = 32

function stream(seed: number, rows: number) {
  const next = rng(seed)
  const last = Array.from({ length: rows }, () => Math.floor(next() * K))
  return () => {
    const x = new Float32Array(rows * W * (K + 1))
    const y = new Float32Array(rows * W * K)
    const answers: number[] = []
    for (let r = 0; r < rows; r++) {
      const answer = last[r] as number
      answers.push(answer)
      x[r * W * (K + 1) + K] = 1
      y[r * W * K + answer] = 1
      for (let t = 1; t < W; t++) {
        const token = Math.floor(next() * K)
        x[(r * W + t) * (K + 1) + token] = 1
        if (t === W - 1) last[r] = token
      }
    }
    return {
      inputs: tf.tensor3d(x, [rows, W, K + 1]),
      targets: tf.tensor3d(y, [rows, W, K]),
      answers,
    }
  }
}

function model(seed: number): { rnn: StatefulRnn; head: tf.layers.Layer } {
  const rnn = orThrow(
    createStatefulRnn(
      tf.layers.rnn({
        cell: tf.layers.gruCell({ units: 16, ...seeded(seed) }),
        returnSequences: true,
        returnState: true,
      }) as tf.RNN,
    ),
  )
  return {
    rnn,
    head: tf.layers.dense({
      units: K,
      kernelInitializer: tf.initializers.glorotUniform({ seed: seed + 5 }),
    }),
  }
}

const atQuery = (t: tf.Tensor): tf.Tensor =>
  tf.squeeze(tf.slice(t, [0, 0, 0], [t.shape[0] as number, 1, t.shape[2] as number]), [1])

function train(resetEveryWindow: boolean): { rnn: StatefulRnn; head: tf.layers.Layer } {
  const m = model(3)
  const saver = orThrow(
    createStateSaver({ spec: m.rnn.spec, backend: tfjsBackend(), batchSize: B }),
  )
  const trainer = orThrow(
    createTbpttTrainer({
      saver,
      optimizer: tf.train.adam(0.01),
      windowSize: W,
      step: ({ inputs, targets, state }) => {
        const r = orThrow(m.rnn.run(inputs, state, { training: true }))
        const logits = m.head.apply(atQuery(r.output)) as tf.Tensor
        return {
          loss: tf.losses.softmaxCrossEntropy(atQuery(targets), logits) as tf.Scalar,
          state: r.state,
        }
      },
    }),
  )
  const next = stream(11, B)
  const starts = new Array<boolean>(B).fill(true)
  for (let i = 0; i < 400; i++) {
    const { inputs, targets } = next()
    orThrow(trainer.trainBatch({ inputs, targets, ...(resetEveryWindow ? { starts } : {}) }))
    tf.dispose([inputs, targets])
  }
  saver.dispose()
  return m
}

/** Accuracy at the queries of a fresh stream, state carried (or reset) between windows. */
function accuracy(m: { rnn: StatefulRnn; head: tf.layers.Layer }, carry: boolean): number {
  const saver = orThrow(
    createStateSaver({ spec: m.rnn.spec, backend: tfjsBackend(), batchSize: 64 }),
  )
  const next = stream(777, 64)
  let right = 0
  let total = 0
  for (let i = 0; i < 20; i++) {
    const { inputs, targets, answers } = next()
    if (!carry) orThrow(saver.reset())
    const predicted = tf.tidy(() =>
      tf
        .argMax(m.head.apply(atQuery(orThrow(m.rnn.apply(inputs, saver)))) as tf.Tensor, -1)
        .dataSync(),
    )
    if (i > 0) {
      answers.forEach((a, r) => {
        right += predicted[r] === a ? 1 : 0
      })
      total += answers.length
    }
    tf.dispose([inputs, targets])
  }
  saver.dispose()
  return right / total
}

describe("recall across the window boundary (the reason to carry state)", () => {
  it("trained with carried state, the model recalls the previous window's token; trained with resets, it cannot", () => {
    const carried = train(false)
    const reset = train(true)
    const accCarried = accuracy(carried, true)
    const accReset = accuracy(reset, true)
    const accResetAsTrained = accuracy(reset, false)
    console.info(
      `recall accuracy: carried ${accCarried.toFixed(3)}, reset ${accReset.toFixed(3)} (as trained ${accResetAsTrained.toFixed(3)}), chance ${(1 / K).toFixed(3)}`,
    )
    expect(accCarried).toBeGreaterThan(0.9)
    expect(accReset).toBeLessThan(0.5)
    expect(accResetAsTrained).toBeLessThan(0.5)
    expect(accCarried - accReset).toBeGreaterThan(0.4)
  })
})
