import * as tf from "@tensorflow/tfjs"
import { describeBackendConformance } from "@statesaver/core/testing"
import { describe, expect, it } from "vitest"
import { type StateTree, createStateSaver, orThrow } from "@statesaver/core"
import { createStatefulRnn, tfjsBackend } from "../src/index.js"

for (const name of ["webgl", "webgpu"] as const) {
  describeBackendConformance({
    name: `tfjs ${name}`,
    backend: async () => {
      if (name === "webgpu") await import("@tensorflow/tfjs-backend-webgpu")
      if (tf.getBackend() !== name) {
        if (!(await tf.setBackend(name)))
          throw new Error(`tfjs backend ${name} failed to initialize`)
      }
      const backend = tfjsBackend()
      expect(backend.capabilities.onDevice).toBe(true)
      return backend
    },
    liveTensors: () => tf.memory().numTensors,
    // What a model step returns: a plain tf.Tensor, which the backend assigns into its variables.
    makeInput: (host) => {
      const { data } = host
      if (data instanceof BigInt64Array || data instanceof Uint16Array)
        throw new Error(`tfjs has no ${host.dtype} tensors`)
      return tf.tensor(
        data.slice(),
        [...host.shape],
        host.dtype === "int32" ? "int32" : host.dtype === "float32" ? "float32" : "bool",
      )
    },
    iterations: 200,
  })

  describe(`createStatefulRnn on tfjs ${name}`, () => {
    it("chunked equals whole for a 2-layer LSTM, and 200 calls with resets and selects leak nothing", async () => {
      if (name === "webgpu") await import("@tensorflow/tfjs-backend-webgpu")
      if (tf.getBackend() !== name) expect(await tf.setBackend(name)).toBe(true)
      const rnn = orThrow(
        createStatefulRnn(
          tf.layers.rnn({
            cell: [tf.layers.lstmCell({ units: 6 }), tf.layers.lstmCell({ units: 4 })],
            returnSequences: true,
            returnState: true,
          }) as tf.RNN,
        ),
      )
      const backend = tfjsBackend()
      const x = tf.randomUniform([3, 9, 2], -1, 1, "float32", 7)
      const whole = orThrow(createStateSaver({ spec: rnn.spec, backend, batchSize: 3 }))
      const expected = orThrow(rnn.run(x, whole.state() as StateTree<tf.Tensor>))
      const chunked = orThrow(createStateSaver({ spec: rnn.spec, backend, batchSize: 3 }))
      const outs = [
        [0, 4],
        [4, 1],
        [5, 4],
      ].map(([at, n]) => orThrow(rnn.apply(tf.slice(x, [0, at ?? 0, 0], [3, n ?? 0, 2]), chunked)))
      const diff = (await tf.max(tf.abs(tf.sub(tf.concat(outs, 1), expected.output))).data())[0]
      expect(diff).toBeLessThan(1e-4)
      const x1 = tf.slice(x, [0, 0, 0], [3, 1, 2])
      const start = tf.memory().numTensors
      for (let i = 0; i < 200; i++) {
        orThrow(rnn.apply(x1, chunked)).dispose()
        if (i % 20 === 0) orThrow(chunked.reset([i % 3]))
        if (i % 50 === 25) orThrow(chunked.select([2, null, 0]))
      }
      expect(tf.memory().numTensors).toBe(start)
      whole.dispose()
      chunked.dispose()
    })
  })
}
