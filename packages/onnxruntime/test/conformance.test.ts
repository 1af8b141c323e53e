import { describeBackendConformance } from "@statesaver/core/testing"
import * as ortNode from "onnxruntime-node"
import * as ortWeb from "onnxruntime-web"
import { ortBackend } from "../src/index.js"

ortWeb.env.wasm.numThreads = 1

describeBackendConformance({
  name: "onnxruntime-web (wasm, CPU tensors)",
  backend: () => ortBackend({ ort: ortWeb }),
  liveTensors: (backend) => backend.liveTensors(),
})

describeBackendConformance({
  name: "onnxruntime-node (CPU tensors)",
  backend: () => ortBackend({ ort: ortNode }),
  liveTensors: (backend) => backend.liveTensors(),
})
