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
  })
}
