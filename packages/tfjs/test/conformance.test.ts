import * as tf from "@tensorflow/tfjs"
import { describeBackendConformance } from "@statesaver/core/testing"
import { tfjsBackend } from "../src/index.js"
import { useBackend } from "./setup.js"

for (const name of ["cpu", "wasm"] as const) {
  describeBackendConformance({
    name: `tfjs ${name}`,
    backend: async () => {
      await useBackend(name)
      return tfjsBackend()
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
  })
}
