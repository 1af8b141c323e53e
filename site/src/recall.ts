/**
 * Page 2: truncated-BPTT training on TensorFlow.js (WebGL or WebGPU), two GRUs side by side, one
 * trained with its state carried between windows and one with the state reset at every window.
 * The task is the one `packages/tfjs/test/recall.test.ts` asserts on.
 */
import * as tf from "@tensorflow/tfjs"
import "@tensorflow/tfjs-backend-webgpu"
import { createStateSaver, orThrow } from "@statesaver/core"
import {
  type StatefulRnn,
  type TbpttTrainer,
  createStatefulRnn,
  createTbpttTrainer,
  tfjsBackend,
} from "@statesaver/tfjs"
import { rng } from "./audio.js"
import { params, show, siteHeader } from "./nav.js"
import { livePlot } from "./plot.js"
import "./style.css"

siteHeader("recall.html")

/** Tokens. */
const K = 3
/** Steps per window: a query symbol, then W - 1 tokens. */
const W = 4
/** Rows per training batch. */
const B = 32
/** Training batches (one window each) between two accuracy measurements. */
const EVAL_EVERY = 20

/**
 * An endless stream of windows for `rows` rows: each window is a query symbol then W - 1 random
 * tokens; the answer at the query is the last token of the row's previous window.
 */
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

interface Model {
  readonly rnn: StatefulRnn
  readonly head: tf.layers.Layer
}

/** A GRU of 16 units and a dense head; the same seed gives the same initial weights. */
function makeModel(seed: number): Model {
  const rnn = orThrow(
    createStatefulRnn(
      tf.layers.rnn({
        cell: tf.layers.gruCell({
          units: 16,
          kernelInitializer: tf.initializers.glorotUniform({ seed }),
          recurrentInitializer: tf.initializers.orthogonal({ seed: seed + 1 }),
          biasInitializer: tf.initializers.randomUniform({
            minval: -0.1,
            maxval: 0.1,
            seed: seed + 2,
          }),
        }),
        returnSequences: true,
        returnState: true,
      }) as tf.RNN,
    ),
  )
  const head = tf.layers.dense({
    units: K,
    kernelInitializer: tf.initializers.glorotUniform({ seed: seed + 5 }),
  })
  return { rnn, head }
}

/** `[b, W, f]` → the query step `[b, f]`. */
const atQuery = (t: tf.Tensor): tf.Tensor =>
  tf.squeeze(tf.slice(t, [0, 0, 0], [t.shape[0] as number, 1, t.shape[2] as number]), [1])

/**
 * A trainer for `model`: the state carried between windows, or reset at every window. Each
 * window's loss is kept and handed to `onLoss` (a promise of its value): it is read back
 * asynchronously, since a synchronous read stalls the GPU (and on tfjs-webgpu reads through a
 * canvas).
 */
function makeTrainer(
  model: Model,
  carry: boolean,
  onLoss: (loss: Promise<number>) => void,
): { trainer: TbpttTrainer; dispose: () => void } {
  const saver = orThrow(
    createStateSaver({ spec: model.rnn.spec, backend: tfjsBackend(), batchSize: B }),
  )
  const trainer = orThrow(
    createTbpttTrainer({
      saver,
      optimizer: tf.train.adam(0.01),
      windowSize: W,
      // The whole comparison is this flag.
      resetEveryWindow: !carry,
      step: ({ inputs, targets, state, training }) => {
        const r = orThrow(model.rnn.run(inputs, state, { training }))
        const logits = model.head.apply(atQuery(r.output)) as tf.Tensor
        const loss = tf.losses.softmaxCrossEntropy(atQuery(targets), logits) as tf.Scalar
        const copy = tf.keep(tf.clone(loss))
        onLoss(copy.data().then((v) => (copy.dispose(), v[0] as number)))
        return { loss, state: r.state }
      },
    }),
  )
  return { trainer, dispose: () => saver.dispose() }
}

/**
 * Accuracy at the queries of 64 fresh streams over `windows` windows, the state carried from
 * window to window (the first window, whose answer came before the stream, is not counted).
 */
async function accuracy(model: Model, windows: number): Promise<number> {
  const saver = orThrow(
    createStateSaver({ spec: model.rnn.spec, backend: tfjsBackend(), batchSize: 64 }),
  )
  const next = stream(777, 64)
  let right = 0
  let total = 0
  for (let i = 0; i < windows; i++) {
    const { inputs, targets, answers } = next()
    const argmax = tf.tidy(() =>
      tf.argMax(
        model.head.apply(atQuery(orThrow(model.rnn.apply(inputs, saver)))) as tf.Tensor,
        -1,
      ),
    )
    const predicted = await argmax.data()
    argmax.dispose()
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

const backendSelect = document.getElementById("backend") as HTMLSelectElement
const batchesInput = document.getElementById("batches") as HTMLInputElement
const startButton = document.getElementById("start") as HTMLButtonElement

function setStatus(state: string, text: string): void {
  const el = document.getElementById("status") as HTMLElement
  el.dataset["state"] = state
  el.textContent = text
}

const hasWebGpu = "gpu" in navigator && (await navigator.gpu.requestAdapter()) !== null
if (!hasWebGpu) {
  const option = backendSelect.querySelector('option[value="webgpu"]') as HTMLOptionElement
  option.disabled = true
  option.textContent = "WebGPU (not available in this browser)"
}
backendSelect.value = params.get("backend") === "webgpu" && hasWebGpu ? "webgpu" : "webgl"
batchesInput.value = params.get("batches") ?? batchesInput.value

const colors = { carried: "#1f6feb", reset: "#d1242f" }

async function train(backend: string, batches: number): Promise<void> {
  setStatus("loading", `starting tfjs on ${backend}…`)
  if (!(await tf.setBackend(backend))) throw new Error(`tfjs could not start ${backend}`)
  await tf.ready()
  const lossEl = document.getElementById("loss-plot") as HTMLElement
  const accEl = document.getElementById("acc-plot") as HTMLElement
  lossEl.replaceChildren()
  accEl.replaceChildren()
  const lossPlot = livePlot(lossEl, {
    series: [
      { label: "carried", stroke: colors.carried },
      { label: "reset", stroke: colors.reset },
    ],
    x: { label: "batch", min: 0, max: batches },
    y: { label: "loss (smoothed)", min: 0 },
    height: 240,
  })
  const accPlot = livePlot(accEl, {
    series: [
      { label: "carried", stroke: colors.carried },
      { label: "reset", stroke: colors.reset },
      { label: "chance", stroke: "#8c959f", dash: [4, 4] },
    ],
    x: { label: "batch", min: 0, max: batches },
    y: { label: "accuracy", min: 0, max: 1 },
    height: 240,
  })
  const carried = makeModel(3)
  const reset = makeModel(3)
  const losses = { carried: [] as Promise<number>[], reset: [] as Promise<number>[] }
  const smooth = { carried: NaN, reset: NaN }
  const onLoss = (which: "carried" | "reset") => (l: Promise<number>) => losses[which].push(l)
  /** Plots batch i's losses when they have arrived. */
  const plotLoss = async (i: number) => {
    const [lc, lr] = await Promise.all([losses.carried[i - 1], losses.reset[i - 1]])
    if (lc === undefined || lr === undefined) return
    smooth.carried = Number.isNaN(smooth.carried) ? lc : 0.9 * smooth.carried + 0.1 * lc
    smooth.reset = Number.isNaN(smooth.reset) ? lr : 0.9 * smooth.reset + 0.1 * lr
    lossPlot.push(i, smooth.carried, smooth.reset)
    show("carried-loss", lc.toFixed(3))
    show("reset-loss", lr.toFixed(3))
  }
  const a = makeTrainer(carried, true, onLoss("carried"))
  const b = makeTrainer(reset, false, onLoss("reset"))
  // Both models see the same batches.
  const nextA = stream(11, B)
  const nextB = stream(11, B)
  const measure = async (i: number) => {
    const accCarried = await accuracy(carried, 10)
    const accReset = await accuracy(reset, 10)
    accPlot.push(i, accCarried, accReset, 1 / K)
    show("carried-acc", `${(100 * accCarried).toFixed(1)}%`)
    show("reset-acc", `${(100 * accReset).toFixed(1)}%`)
  }
  const t0 = performance.now()
  setStatus("running", `training on ${backend}`)
  await measure(0)
  let plotted = Promise.resolve()
  for (let i = 1; i <= batches; i++) {
    for (const [next, t] of [
      [nextA, a.trainer],
      [nextB, b.trainer],
    ] as const) {
      const { inputs, targets } = next()
      orThrow(t.trainBatch({ inputs, targets }))
      tf.dispose([inputs, targets])
    }
    // In order, without waiting: the next batch is queued while this one's losses come back.
    plotted = plotted.then(() => plotLoss(i))
    if (i % EVAL_EVERY === 0 || i === batches) {
      await plotted
      await measure(i)
    }
  }
  await plotted
  // The final figures: 20 windows of 64 fresh streams, as the package's recall test measures them.
  const accCarried = await accuracy(carried, 20)
  const accReset = await accuracy(reset, 20)
  a.dispose()
  b.dispose()
  const seconds = (performance.now() - t0) / 1000
  show("carried-acc", `${(100 * accCarried).toFixed(1)}%`)
  show("reset-acc", `${(100 * accReset).toFixed(1)}%`)
  const result = document.getElementById("result") as HTMLElement
  result.dataset["carried"] = accCarried.toFixed(3)
  result.dataset["reset"] = accReset.toFixed(3)
  result.textContent =
    `After ${batches} batches per model on ${backend} (${seconds.toFixed(1)} s): the model trained ` +
    `with carried state answers ${(100 * accCarried).toFixed(1)}% of the queries, the one trained ` +
    `with resets ${(100 * accReset).toFixed(1)}% (chance ${(100 / K).toFixed(1)}%).` +
    (accCarried > accReset + 0.3
      ? " Trained with resets, the model never saw the answer arrive through its state."
      : "")
  for (const m of [carried, reset]) {
    m.rnn.layer.dispose()
    m.head.dispose()
  }
  setStatus("done", `done in ${seconds.toFixed(1)} s`)
}

startButton.addEventListener("click", () => {
  startButton.disabled = true
  train(backendSelect.value, Math.max(10, Math.floor(Number(batchesInput.value) || 100)))
    .catch((e: unknown) => {
      console.error(e)
      setStatus("error", `error: ${e instanceof Error ? e.message : String(e)}`)
    })
    .finally(() => {
      startButton.disabled = false
    })
})

setStatus("idle", "ready")
if (params.get("autostart") === "1") startButton.click()
