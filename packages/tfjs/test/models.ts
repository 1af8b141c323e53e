import * as tf from "@tensorflow/tfjs"
import { type StateSaver, createStateSaver, orThrow } from "@statesaver/core"
import {
  type StatefulRnn,
  type TbpttStepResult,
  type TbpttWindow,
  createStatefulRnn,
  tfjsBackend,
} from "../src/index.js"
import { seeded } from "./setup.js"

export type CellKind = "lstm" | "gru" | "rnn"

export const makeCell = (kind: CellKind, units: number, seed: number) => {
  const args = { units, ...seeded(seed) }
  return kind === "lstm"
    ? tf.layers.lstmCell(args)
    : kind === "gru"
      ? tf.layers.gruCell(args)
      : tf.layers.simpleRNNCell(args)
}

/** An RNN stack returning sequences and state, plus a dense head. */
export interface Model {
  readonly rnn: StatefulRnn
  readonly head: tf.layers.Layer
  readonly saver: StateSaver<tf.Variable>
  /** Head outputs for a window, `[b, t, out]`, and the final state. */
  forward(
    inputs: tf.Tensor,
    state: TbpttWindow["state"],
    training?: boolean,
  ): { logits: tf.Tensor; state: TbpttWindow["state"] }
  /** Mean squared error between head outputs and targets: a `step` for the trainer. */
  mseStep(window: TbpttWindow): TbpttStepResult
}

export function makeModel(
  kind: CellKind,
  widths: number[],
  out: number,
  batchSize: number,
  seed = 1,
): Model {
  const rnn = orThrow(
    createStatefulRnn(
      tf.layers.rnn({
        cell: widths.map((u, i) => makeCell(kind, u, seed + 10 * i)),
        returnSequences: true,
        returnState: true,
      }) as tf.RNN,
    ),
  )
  const head = tf.layers.dense({
    units: out,
    kernelInitializer: tf.initializers.glorotUniform({ seed: seed + 99 }),
  })
  const saver = orThrow(createStateSaver({ spec: rnn.spec, backend: tfjsBackend(), batchSize }))
  const forward: Model["forward"] = (inputs, state, training = false) => {
    const r = orThrow(rnn.run(inputs, state, { training }))
    return { logits: head.apply(r.output) as tf.Tensor, state: r.state }
  }
  return {
    rnn,
    head,
    saver,
    forward,
    mseStep: ({ inputs, targets, state }) => {
      const r = forward(inputs, state, true)
      return { loss: tf.losses.meanSquaredError(targets, r.logits) as tf.Scalar, state: r.state }
    },
  }
}

/** SGD that keeps a copy of every gradient it applies (learning rate 0 keeps the weights fixed). */
export class RecordingSGD extends tf.SGDOptimizer {
  readonly recorded: Map<string, tf.Tensor>[] = []
  override applyGradients(grads: Parameters<tf.SGDOptimizer["applyGradients"]>[0]): void {
    const entries = Array.isArray(grads)
      ? grads.map((g) => [g.name, g.tensor] as const)
      : Object.entries(grads)
    this.recorded.push(new Map(entries.map(([k, g]) => [k, tf.keep(g.clone())])))
    super.applyGradients(grads)
  }
  release(): void {
    for (const m of this.recorded) tf.dispose([...m.values()])
    this.recorded.length = 0
  }
}
