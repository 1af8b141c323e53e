/**
 * Truncated-BPTT training with TensorFlow.js (wasm backend): a GRU learns to answer, at the start
 * of each window, with the last token of the previous window. Trained with its state carried
 * between windows it learns the task; the same model trained with the state reset at every window
 * cannot, since the answer never reaches it.
 */
import { createRequire } from "node:module"
import { dirname } from "node:path"
import * as tf from "@tensorflow/tfjs"
import { setWasmPaths } from "@tensorflow/tfjs-backend-wasm"
import { createStateSaver, orThrow } from "@statesaver/core"
import {
  type StatefulRnn,
  createStatefulRnn,
  createTbpttTrainer,
  tfjsBackend,
} from "@statesaver/tfjs"
import { rng } from "./random.js"

const K = 3 // tokens
const W = 4 // steps per window: a query symbol, then W - 1 tokens
const WINDOWS_PER_BATCH = 5
const STREAMS = 40 // trained in groups of 32 and 8: the last batch is smaller
const BATCH = 32
const WINDOWS_PER_STREAM = 30
const EPOCHS = 6

/** Token streams: `tokens[s][w][t]` for t in 1..W-1 (t = 0 is the query). */
function makeStreams(count: number, windows: number, seed: number): number[][][] {
  const next = rng(seed)
  return Array.from({ length: count }, () =>
    Array.from({ length: windows }, () =>
      Array.from({ length: W }, (_, t) => (t === 0 ? -1 : Math.floor(next() * K))),
    ),
  )
}

/** One-hot inputs `[rows, windows * W, K + 1]` and targets `[rows, windows * W, K]` for windows [from, to). */
function encode(
  streams: number[][][],
  from: number,
  to: number,
): { inputs: tf.Tensor3D; targets: tf.Tensor3D; answers: number[][] } {
  const rows = streams.length
  const T = (to - from) * W
  const x = new Float32Array(rows * T * (K + 1))
  const y = new Float32Array(rows * T * K)
  const answers: number[][] = []
  streams.forEach((s, r) => {
    const rowAnswers: number[] = []
    for (let w = from; w < to; w++) {
      const t0 = (w - from) * W
      // The answer at the query: the last token of the previous window (none in a stream's first window).
      const answer = w === 0 ? -1 : (s[w - 1]?.[W - 1] as number)
      rowAnswers.push(answer)
      x[(r * T + t0) * (K + 1) + K] = 1
      if (answer >= 0) y[(r * T + t0) * K + answer] = 1
      for (let t = 1; t < W; t++) x[(r * T + t0 + t) * (K + 1) + (s[w]?.[t] as number)] = 1
    }
    answers.push(rowAnswers)
  })
  return {
    inputs: tf.tensor3d(x, [rows, T, K + 1]),
    targets: tf.tensor3d(y, [rows, T, K]),
    answers,
  }
}

interface Model {
  readonly rnn: StatefulRnn
  readonly head: tf.layers.Layer
}

function makeModel(seed: number): Model {
  const cell = tf.layers.gruCell({
    units: 16,
    kernelInitializer: tf.initializers.glorotUniform({ seed }),
    recurrentInitializer: tf.initializers.orthogonal({ seed: seed + 1 }),
  })
  const rnn = orThrow(
    createStatefulRnn(tf.layers.rnn({ cell, returnSequences: true, returnState: true }) as tf.RNN),
  )
  return {
    rnn,
    head: tf.layers.dense({
      units: K,
      kernelInitializer: tf.initializers.glorotUniform({ seed: seed + 2 }),
    }),
  }
}

/** Rows `[b, W * n, f]` → the query steps `[b, n, f]` (time steps 0, W, 2W, ...). */
const queries = (t: tf.Tensor): tf.Tensor => {
  const [b, T, f] = t.shape as [number, number, number]
  return tf.squeeze(tf.slice(tf.reshape(t, [b, T / W, W, f]), [0, 0, 0, 0], [b, T / W, 1, f]), [2])
}

/** A progress bar redrawn in place on a terminal; a line per quarter otherwise. */
function progressBar(label: string, total: number): (done: number, loss: number) => void {
  const width = 30
  let shown = -1
  return (done, loss) => {
    const filled = Math.round((done / total) * width)
    const step = process.stdout.isTTY ? filled : Math.floor((4 * done) / total)
    if (step === shown) return
    shown = step
    const bar = "█".repeat(filled) + "░".repeat(width - filled)
    const line = `  ${label.padEnd(8)} ${bar} ${String(Math.round((100 * done) / total)).padStart(3)}%  loss ${loss.toFixed(3)}`
    if (process.stdout.isTTY) process.stdout.write(`\r${line}${done === total ? "\n" : ""}`)
    else console.log(line)
  }
}

function train(model: Model, carry: boolean): void {
  const streams = makeStreams(STREAMS, WINDOWS_PER_STREAM, 11)
  const groups = [streams.slice(0, BATCH), streams.slice(BATCH)]
  const saver = orThrow(
    createStateSaver({ spec: model.rnn.spec, backend: tfjsBackend(), batchSize: BATCH }),
  )
  const total = EPOCHS * STREAMS * WINDOWS_PER_STREAM
  let done = 0
  const progress = progressBar(carry ? "carried" : "reset", total)
  const trainer = orThrow(
    createTbpttTrainer({
      saver,
      optimizer: tf.train.adam(0.01),
      windowSize: W,
      // The comparison is this one flag: every window from init, or the state carried.
      resetEveryWindow: !carry,
      step: ({ inputs, targets, state, training }) => {
        const r = orThrow(model.rnn.run(inputs, state, { training }))
        const logits = model.head.apply(queries(r.output)) as tf.Tensor
        // A stream's first query has no answer: its weight is 0 (and the sum is averaged over all queries).
        const answered = tf.sum(queries(targets), -1)
        const summed = tf.losses.softmaxCrossEntropy(
          queries(targets),
          logits,
          answered,
          0,
          tf.Reduction.SUM,
        )
        return { loss: tf.div(summed, answered.size) as tf.Scalar, state: r.state }
      },
      onWindow: (report) => {
        done += report.rows
        progress(done, report.loss)
      },
    }),
  )
  for (let epoch = 0; epoch < EPOCHS; epoch++) {
    for (const group of groups) {
      // A group's rows start their sequences together; a smaller group shrinks the batch (select).
      for (let w = 0; w < WINDOWS_PER_STREAM; w += WINDOWS_PER_BATCH) {
        const batch = encode(group, w, Math.min(w + WINDOWS_PER_BATCH, WINDOWS_PER_STREAM))
        const starts = w > 0 ? undefined : new Array<boolean>(group.length).fill(true)
        orThrow(
          trainer.trainBatch({
            inputs: batch.inputs,
            targets: batch.targets,
            ...(starts ? { starts } : {}),
          }),
        )
        tf.dispose([batch.inputs, batch.targets])
      }
    }
  }
  saver.dispose()
}

/** Accuracy at the queries of fresh streams, run window by window with the state carried. */
function accuracy(model: Model): number {
  const streams = makeStreams(64, 20, 777)
  const saver = orThrow(
    createStateSaver({ spec: model.rnn.spec, backend: tfjsBackend(), batchSize: 64 }),
  )
  let right = 0
  let total = 0
  for (let w = 0; w < 20; w++) {
    const { inputs, targets, answers } = encode(streams, w, w + 1)
    const predicted = tf.tidy(() =>
      tf
        .argMax(model.head.apply(queries(orThrow(model.rnn.apply(inputs, saver)))) as tf.Tensor, -1)
        .dataSync(),
    )
    answers.forEach((a, r) => {
      if ((a[0] as number) < 0) return
      right += predicted[r] === a[0] ? 1 : 0
      total++
    })
    tf.dispose([inputs, targets])
  }
  saver.dispose()
  return right / total
}

export async function main(): Promise<void> {
  const require = createRequire(import.meta.url)
  setWasmPaths(`${dirname(require.resolve("@tensorflow/tfjs-backend-wasm"))}/`)
  if (!(await tf.setBackend("wasm"))) throw new Error("the tfjs wasm backend failed to initialize")
  console.log(
    "\n== tfjs: truncated BPTT, state carried between windows vs reset at every window ==",
  )
  console.log(
    `  task: answer at each window's query with the last token of the previous window (${K} tokens, chance ${(1 / K).toFixed(2)})`,
  )
  const carried = makeModel(3)
  const reset = makeModel(3)
  const before = tf.memory().numTensors
  train(carried, true)
  train(reset, false)
  const accCarried = accuracy(carried)
  const accReset = accuracy(reset)
  console.log(`  accuracy at the queries, state carried at inference:`)
  console.log(`    trained with carried state : ${(100 * accCarried).toFixed(1)}%`)
  console.log(`    trained with reset state   : ${(100 * accReset).toFixed(1)}%`)
  console.log(
    `  live tensors: ${tf.memory().numTensors - before} more than before training (the models' weights and optimizer slots)`,
  )
}
