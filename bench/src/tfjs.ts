/**
 * @statesaver/tfjs against the hand-written pattern (non-trainable variables + assign) on the
 * tfjs wasm backend, same model and process: a truncated-BPTT training step of a 2-layer
 * LSTM(128), batch 32, window 20, and a one-step inference call. Time ratio = statesaver time /
 * hand-written time (target: at most 1.03).
 */
import { createRequire } from "node:module"
import { dirname } from "node:path"
import * as tf from "@tensorflow/tfjs"
import { setWasmPaths } from "@tensorflow/tfjs-backend-wasm"
import { createStateSaver, orThrow } from "@statesaver/core"
import { createStatefulRnn, createTbpttTrainer, tfjsBackend } from "@statesaver/tfjs"
import { type Comparison, compareSync, median, report } from "./harness.js"

const B = 32
const H = 128
const F = 32
const T = 20

/** Median ns per call of each side, in alternating rounds of `calls` calls, after `warmup` calls each. */
function compareSlow(
  name: string,
  baseline: () => void,
  subject: () => void,
  rounds = 9,
  calls = 3,
  warmup = 4,
): Comparison {
  for (let i = 0; i < warmup; i++) {
    baseline()
    subject()
  }
  const time = (fn: () => void): number => {
    const t0 = process.hrtime.bigint()
    for (let i = 0; i < calls; i++) fn()
    return Number(process.hrtime.bigint() - t0) / calls
  }
  const b: number[] = []
  const s: number[] = []
  for (let r = 0; r < rounds; r++) {
    // Alternate which side goes first, so neither always runs on a warmer cache.
    if (r % 2 === 0) {
      b.push(time(baseline))
      s.push(time(subject))
    } else {
      s.push(time(subject))
      b.push(time(baseline))
    }
  }
  const baselineNs = median(b)
  const subjectNs = median(s)
  return { name, baselineNs, subjectNs, throughputRatio: baselineNs / subjectNs }
}

export async function main(): Promise<void> {
  const require = createRequire(import.meta.url)
  setWasmPaths(`${dirname(require.resolve("@tensorflow/tfjs-backend-wasm"))}/`)
  if (!(await tf.setBackend("wasm"))) throw new Error("the tfjs wasm backend failed to initialize")
  console.log(
    "\n== tfjs (wasm): statesaver vs hand-written variables + assign; time ratio = statesaver / hand-written (target ≤ 1.03) ==",
  )

  const layer = tf.layers.rnn({
    cell: [0, 1].map(() => tf.layers.lstmCell({ units: H, recurrentInitializer: "glorotUniform" })),
    returnSequences: true,
    returnState: true,
  }) as tf.RNN
  const head = tf.layers.dense({ units: 16 })
  const rnn = orThrow(createStatefulRnn(layer))
  const x = tf.randomNormal([B, T, F])
  const y = tf.randomNormal([B, T, 16])
  const x1 = tf.randomNormal([B, 1, F])
  tf.tidy(() => head.apply((layer.apply(x) as tf.Tensor[])[0] as tf.Tensor) as tf.Tensor)

  // Hand-written: one non-trainable variable per state tensor, in tfjs's own order (last layer first).
  const hand = Array.from({ length: 4 }, () => tf.variable(tf.zeros([B, H]), false))
  const handOptimizer = tf.train.sgd(1e-4)
  const handTrain = (): void => {
    const cost = handOptimizer.minimize(() => {
      const [out, ...states] = layer.apply(x, { initialState: hand }) as tf.Tensor[]
      const loss = tf.losses.meanSquaredError(
        y,
        head.apply(out as tf.Tensor) as tf.Tensor,
      ) as tf.Scalar
      states.forEach((s, i) => hand[i]?.assign(s))
      return loss
    }, true)
    cost?.dispose()
  }
  const handInfer = (): void => {
    tf.tidy(() => {
      const [out, ...states] = layer.apply(x1, { initialState: hand }) as tf.Tensor[]
      states.forEach((s, i) => hand[i]?.assign(s))
      return out as tf.Tensor
    }).dispose()
  }

  // statesaver: the saver's variables, the trainer and StatefulRnn.apply.
  const saver = orThrow(createStateSaver({ spec: rnn.spec, backend: tfjsBackend(), batchSize: B }))
  const trainer = orThrow(
    createTbpttTrainer({
      saver,
      optimizer: tf.train.sgd(1e-4),
      windowSize: T,
      step: ({ inputs, targets, state }) => {
        const r = orThrow(rnn.run(inputs, state, { training: true }))
        return {
          loss: tf.losses.meanSquaredError(targets, head.apply(r.output) as tf.Tensor) as tf.Scalar,
          state: r.state,
        }
      },
    }),
  )
  const helperTrain = (): void => {
    orThrow(trainer.trainBatch({ inputs: x, targets: y }))
  }
  const helperInfer = (): void => {
    orThrow(rnn.apply(x1, saver)).dispose()
  }

  const start = tf.memory().numTensors
  const train = compareSlow(
    `training step: 2-layer LSTM(${H}), batch ${B}, window ${T}`,
    handTrain,
    helperTrain,
  )
  report(train, `  time ratio ${(train.subjectNs / train.baselineNs).toFixed(3)}`)
  const infer = compareSync(
    `inference step: 2-layer LSTM(${H}), batch ${B}, 1 step`,
    handInfer,
    helperInfer,
    { rounds: 15, batchMs: 100 },
  )
  report(infer, `  time ratio ${(infer.subjectNs / infer.baselineNs).toFixed(3)}`)
  console.log(`  live tensors after both loops: ${tf.memory().numTensors - start} more than before`)
  saver.dispose()
  tf.dispose([...hand, x, y, x1])
}
