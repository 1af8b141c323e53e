/**
 * Should an RNN's state be carried between training windows (truncated BPTT, as in Zaremba et
 * al.'s language model) or reset at every window? A character-level LSTM language model is
 * trained both ways on the same text, from the same initial weights, on the same batches, for the
 * same number of optimizer steps; each trained model is then evaluated on held-out text with its
 * state carried and with its state reset at every window. Repeated over several seeds, the table
 * gives the mean validation perplexity and its spread.
 *
 *   pnpm --filter @statesaver/examples run seed-question [--seeds=5] [--steps=400] [--hidden=64]
 *     [--batch=32] [--window=25] [--jobs=2]
 *
 * Each run is a child process (tfjs wasm runs on one thread), `--jobs` of them at a time.
 *
 * Text: license texts from Debian's base-files (/usr/share/common-licenses), the first 90% of
 * each file for training, the last 10% for validation. Takes minutes: not part of `pnpm demo`.
 */
import { spawn } from "node:child_process"
import { readFileSync } from "node:fs"
import { createRequire } from "node:module"
import { availableParallelism } from "node:os"
import { dirname } from "node:path"
import { fileURLToPath } from "node:url"
import * as tf from "@tensorflow/tfjs"
import { setWasmPaths } from "@tensorflow/tfjs-backend-wasm"
import { createStateSaver, orThrow } from "@statesaver/core"
import {
  type StatefulRnn,
  type TbpttBatch,
  type TbpttStepResult,
  type TbpttWindow,
  createStatefulRnn,
  createTbpttTrainer,
  evaluateTbptt,
  tfjsBackend,
} from "@statesaver/tfjs"
import { rng } from "./random.js"

const LICENSES = ["GPL-3", "GPL-2", "LGPL-2.1", "MPL-2.0", "Apache-2.0"]
const LICENSE_DIR = "/usr/share/common-licenses"
const VALIDATION_SHARE = 0.1

/** `--name=value` flags, numbers only. */
function flag(name: string, fallback: number): number {
  const given = process.argv.find((a) => a.startsWith(`--${name}=`))
  if (given === undefined) return fallback
  const value = Number(given.slice(name.length + 3))
  if (!Number.isSafeInteger(value) || value < 1)
    throw new Error(`--${name} must be a positive integer, got ${given}`)
  return value
}

const SEEDS = flag("seeds", 5)
const HIDDEN = flag("hidden", 64) // one LSTM layer
const STEPS = flag("steps", 400) // optimizer steps (windows) per training run
const WINDOW = flag("window", 25) // time steps per window
const WINDOWS_PER_BATCH = 4
const BATCH = flag("batch", 32) // training rows
const VALIDATION_ROWS = 16
const LEARNING_RATE = 0.005
const JOBS = flag("jobs", Math.min(2, availableParallelism()))

/** Character ids of a stretch of text, and where each document begins. */
interface Corpus {
  readonly ids: Int32Array
  readonly docStart: Uint8Array
}

interface Data {
  readonly vocab: string[]
  readonly train: Corpus
  readonly validation: Corpus
  readonly bytes: number
}

function loadData(): Data {
  const texts = LICENSES.map((name) => readFileSync(`${LICENSE_DIR}/${name}`, "utf8"))
  const vocab = [...new Set(texts.join(""))].sort()
  const index = new Map(vocab.map((c, i) => [c, i]))
  const corpus = (docs: string[]): Corpus => {
    const chars = docs.flatMap((d) => [...d])
    const docStart = new Uint8Array(chars.length)
    let at = 0
    for (const d of docs) {
      docStart[at] = 1
      at += [...d].length
    }
    return { ids: Int32Array.from(chars, (c) => index.get(c) as number), docStart }
  }
  const cut = texts.map((t) => Math.round(t.length * (1 - VALIDATION_SHARE)))
  return {
    vocab,
    train: corpus(texts.map((t, i) => t.slice(0, cut[i]))),
    validation: corpus(texts.map((t, i) => t.slice(cut[i]))),
    bytes: texts.reduce((n, t) => n + Buffer.byteLength(t), 0),
  }
}

/**
 * The text cut into `rows` streams read side by side (row `r` holds the `r`-th stretch), from
 * `offset` on (the text wraps around), as batches of `steps` time steps: inputs are characters
 * `p`, targets characters `p + 1`. A row's state is reset where a document begins and at the
 * row's first step.
 */
function* batches(
  corpus: Corpus,
  vocab: number,
  rows: number,
  steps: number,
  offset: number,
): Generator<TbpttBatch> {
  const pairs = corpus.ids.length - 1
  const rowLength = Math.floor(pairs / rows)
  for (let t0 = 0; t0 < rowLength; t0 += steps) {
    const T = Math.min(steps, rowLength - t0)
    const x = new Int32Array(rows * T)
    const y = new Int32Array(rows * T)
    const starts = Array.from({ length: rows }, () => new Uint8Array(T))
    for (let r = 0; r < rows; r++) {
      for (let t = 0; t < T; t++) {
        const p = (offset + r * rowLength + t0 + t) % pairs
        x[r * T + t] = corpus.ids[p] as number
        y[r * T + t] = corpus.ids[p + 1] as number
        ;(starts[r] as Uint8Array)[t] = t0 + t === 0 || corpus.docStart[p] === 1 ? 1 : 0
      }
    }
    const [inputs, targets] = tf.tidy(() => [
      tf.oneHot(tf.tensor2d(x, [rows, T], "int32"), vocab).toFloat(),
      tf.oneHot(tf.tensor2d(y, [rows, T], "int32"), vocab).toFloat(),
    ]) as [tf.Tensor, tf.Tensor]
    try {
      yield { inputs, targets, starts }
    } finally {
      tf.dispose([inputs, targets])
    }
  }
}

interface Model {
  readonly rnn: StatefulRnn
  readonly head: tf.layers.Layer
  readonly step: (window: TbpttWindow) => TbpttStepResult
  dispose(): void
}

/** A 1-layer LSTM over one-hot characters (tfjs wasm cannot train `tf.layers.embedding`). */
function makeModel(vocab: number, seed: number): Model {
  const rnn = orThrow(
    createStatefulRnn(
      tf.layers.rnn({
        cell: tf.layers.lstmCell({
          units: HIDDEN,
          kernelInitializer: tf.initializers.glorotUniform({ seed: 1000 * seed + 1 }),
          recurrentInitializer: tf.initializers.glorotUniform({ seed: 1000 * seed + 2 }),
        }),
        returnSequences: true,
        returnState: true,
      }) as tf.RNN,
    ),
  )
  const head = tf.layers.dense({
    units: vocab,
    kernelInitializer: tf.initializers.glorotUniform({ seed: 1000 * seed + 3 }),
  })
  return {
    rnn,
    head,
    step: ({ inputs, targets, state, training }) => {
      const { output, state: next } = orThrow(rnn.run(inputs, state, { training }))
      const logits = head.apply(output) as tf.Tensor
      return { loss: tf.losses.softmaxCrossEntropy(targets, logits) as tf.Scalar, state: next }
    },
    dispose: () => {
      rnn.layer.dispose()
      head.dispose()
    },
  }
}

type Mode = "carried" | "reset"
const MODES: Mode[] = ["carried", "reset"]

interface Run {
  readonly seed: number
  readonly train: Mode
  /** Validation perplexity by evaluation mode. */
  readonly perplexity: Record<Mode, number>
  readonly trainLoss: number
  readonly seconds: number
}

/** Trains one model for `STEPS` windows, then evaluates it both ways on the validation text. */
function run(data: Data, seed: number, mode: Mode): Run {
  const V = data.vocab.length
  const started = performance.now()
  const model = makeModel(V, seed)
  const saver = orThrow(
    createStateSaver({ spec: model.rnn.spec, backend: tfjsBackend(), batchSize: BATCH }),
  )
  const optimizer = tf.train.adam(LEARNING_RATE)
  const losses: number[] = []
  const trainer = orThrow(
    createTbpttTrainer({
      saver,
      optimizer,
      windowSize: WINDOW,
      step: model.step,
      // The whole comparison is this flag.
      resetEveryWindow: mode === "reset",
      onWindow: ({ loss }) => losses.push(loss),
    }),
  )
  // The batch order: each epoch reads the text from a random offset (the same for both modes).
  const next = rng(seed)
  let steps = 0
  while (steps < STEPS) {
    const offset = Math.floor(next() * data.train.ids.length)
    for (const batch of batches(data.train, V, BATCH, WINDOW * WINDOWS_PER_BATCH, offset)) {
      if (steps === STEPS) break
      const windows = Math.ceil((batch.inputs.shape[1] as number) / WINDOW)
      if (steps + windows > STEPS) {
        // The budget ends inside this batch: train its first windows only.
        const T = (STEPS - steps) * WINDOW
        const cut = (t: tf.Tensor) => t.slice([0, 0, 0], [BATCH, T, V])
        const [inputs, targets] = [cut(batch.inputs), cut(batch.targets)]
        const starts = (batch.starts as Uint8Array[]).map((row) => row.subarray(0, T))
        orThrow(trainer.trainBatch({ inputs, targets, starts }))
        tf.dispose([inputs, targets])
        steps = STEPS
        break
      }
      orThrow(trainer.trainBatch(batch))
      steps += windows
    }
  }
  saver.dispose()
  optimizer.dispose()

  const perplexity = {} as Record<Mode, number>
  for (const evalMode of MODES) {
    const validation = orThrow(
      createStateSaver({
        spec: model.rnn.spec,
        backend: tfjsBackend(),
        batchSize: VALIDATION_ROWS,
      }),
    )
    const result = orThrow(
      evaluateTbptt(
        {
          saver: validation,
          step: model.step,
          windowSize: WINDOW,
          resetEveryWindow: evalMode === "reset",
          crossEntropy: true,
        },
        batches(data.validation, V, VALIDATION_ROWS, WINDOW * WINDOWS_PER_BATCH, 0),
      ),
    )
    validation.dispose()
    perplexity[evalMode] = result.perplexity as number
  }
  model.dispose()
  const tail = losses.slice(-20)
  return {
    seed,
    train: mode,
    perplexity,
    trainLoss: tail.reduce((a, b) => a + b, 0) / tail.length,
    seconds: (performance.now() - started) / 1000,
  }
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length
const std = (xs: number[]) => {
  const m = mean(xs)
  return Math.sqrt(xs.reduce((a, b) => a + (b - m) ** 2, 0) / (xs.length - 1))
}

/** Runs one training run in a child process (wasm runs on one thread: two processes use two cores). */
function runInChild(seed: number, mode: Mode): Promise<Run> {
  const flags = process.argv.slice(2).filter((a) => !a.startsWith("--run="))
  const child = spawn(
    process.execPath,
    [...process.execArgv, fileURLToPath(import.meta.url), ...flags, `--run=${seed}:${mode}`],
    { stdio: ["ignore", "pipe", "inherit"] },
  )
  let out = ""
  child.stdout.setEncoding("utf8").on("data", (chunk: string) => (out += chunk))
  return new Promise((resolve, reject) => {
    child.on("error", reject)
    child.on("close", (code) => {
      const line = out.split("\n").find((l) => l.startsWith("RUN "))
      if (code !== 0 || line === undefined)
        reject(new Error(`run seed ${seed} ${mode} exited with ${code}:\n${out}`))
      else resolve(JSON.parse(line.slice(4)) as Run)
    })
  })
}

async function initWasm(): Promise<void> {
  const require = createRequire(import.meta.url)
  setWasmPaths(`${dirname(require.resolve("@tensorflow/tfjs-backend-wasm"))}/`)
  if (!(await tf.setBackend("wasm"))) throw new Error("the tfjs wasm backend failed to initialize")
}

export async function main(): Promise<void> {
  const data = loadData()
  const single = process.argv.find((a) => a.startsWith("--run="))
  if (single !== undefined) {
    const [seed, mode] = single.slice("--run=".length).split(":")
    await initWasm()
    const before = tf.memory().numTensors
    const r = run(data, Number(seed), mode === "reset" ? "reset" : "carried")
    if (tf.memory().numTensors !== before) throw new Error("the run leaked tensors")
    console.log(`RUN ${JSON.stringify(r)}`)
    return
  }
  const V = data.vocab.length
  const params = 4 * HIDDEN * (V + HIDDEN + 1) + V * (HIDDEN + 1)
  console.log("== Should the state be carried? Carried vs reset truncated BPTT ==")
  console.log(
    `  text: ${LICENSES.join(", ")} from ${LICENSE_DIR} (${data.bytes} bytes, ${V} symbols); ` +
      `train ${data.train.ids.length} chars, validation ${data.validation.ids.length} chars`,
  )
  console.log(
    `  model: one-hot(${V}) → LSTM(${HIDDEN}) → dense(${V}), ${params} weights; ` +
      `adam(${LEARNING_RATE}), batch ${BATCH}, window ${WINDOW}, ${STEPS} steps per run; ` +
      `seeds 1..${SEEDS}; tfjs wasm, ${JOBS} runs at a time`,
  )
  const started = performance.now()
  const queue = Array.from({ length: SEEDS }, (_, i) =>
    MODES.map((m) => [i + 1, m] as const),
  ).flat()
  const runs: Run[] = []
  const worker = async (): Promise<void> => {
    for (let job = queue.shift(); job !== undefined; job = queue.shift()) {
      const r = await runInChild(...job)
      runs.push(r)
      console.log(
        `  seed ${r.seed} trained ${r.train.padEnd(7)}: train loss ${r.trainLoss.toFixed(3)}, ` +
          `validation perplexity carried ${r.perplexity.carried.toFixed(3)}, ` +
          `reset ${r.perplexity.reset.toFixed(3)} (${r.seconds.toFixed(1)} s)`,
      )
    }
  }
  await Promise.all(Array.from({ length: JOBS }, worker))
  const seconds = (performance.now() - started) / 1000

  console.log(
    `\n  Validation perplexity, mean ± sample std over ${SEEDS} seeds [min–max] (lower is better):`,
  )
  console.log(`  | trained \\ evaluated | state carried             | state reset every window  |`)
  console.log(`  | ------------------- | ------------------------- | ------------------------- |`)
  for (const train of MODES) {
    const cells = MODES.map((evalMode) => {
      const xs = runs.filter((r) => r.train === train).map((r) => r.perplexity[evalMode])
      return `${mean(xs).toFixed(2)} ± ${std(xs).toFixed(2)} [${Math.min(...xs).toFixed(2)}–${Math.max(...xs).toFixed(2)}]`
    })
    console.log(
      `  | ${train.padEnd(19)} | ${(cells[0] as string).padEnd(25)} | ${(cells[1] as string).padEnd(25)} |`,
    )
  }
  // Same seed = same initial weights and batches: compare the two training modes seed by seed.
  for (const evalMode of MODES) {
    const diffs = Array.from({ length: SEEDS }, (_, i) => {
      const pick = (m: Mode) =>
        runs.find((r) => r.seed === i + 1 && r.train === m)?.perplexity[evalMode] as number
      return pick("reset") - pick("carried")
    })
    const wins = diffs.filter((d) => d > 0).length
    console.log(
      `  evaluated ${evalMode}: (trained reset) − (trained carried), per seed: ` +
        `${diffs.map((d) => d.toFixed(3)).join(", ")}; mean ${mean(diffs).toFixed(3)} ± ${std(diffs).toFixed(3)}, ` +
        `carried better in ${wins} of ${SEEDS}`,
    )
  }
  console.log(`  ${runs.length} runs in ${seconds.toFixed(0)} s`)
}

if (import.meta.url === `file://${process.argv[1]}`) await main()
