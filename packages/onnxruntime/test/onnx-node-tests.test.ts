// ONNX's official LSTM, GRU and RNN node tests (Debian libonnx-testdata), rebuilt with their state
// as inputs and outputs, run through StatefulSession one time step per run.
import { readFileSync } from "node:fs"
import { join } from "node:path"
import { orThrow } from "@statesaver/core"
import * as ortWeb from "onnxruntime-web"
import { describe, expect, it } from "vitest"
import { type OrtTensor, createStatefulSession, ortBackend } from "../src/index.js"
import { type F32, concatAxis, expectClose, sliceAxis } from "./helpers/host.js"
import {
  type DecodedTensor,
  GraphBuilder,
  decodeTensor,
  readFirstNode,
} from "./helpers/onnx-builder.js"
import { requireSystemPath } from "./helpers/system.js"

ortWeb.env.wasm.numThreads = 1

const ROOT = "/usr/share/libonnx-testdata/data/node"
const available = requireSystemPath(
  ROOT,
  "libonnx-testdata",
  "ONNX's official LSTM/GRU/RNN node tests",
)

const TESTS = [
  "test_lstm_defaults",
  "test_lstm_with_initial_bias",
  "test_lstm_with_peepholes",
  "test_gru_defaults",
  "test_gru_with_initial_bias",
  "test_gru_seq_length",
  "test_rnn_seq_length",
  "test_simple_rnn_defaults",
  "test_simple_rnn_with_initial_bias",
]

const f32 = (t: DecodedTensor): F32 => ({ dims: t.dims, data: t.data as Float32Array })

describe.skipIf(!available)(
  "ONNX node tests through StatefulSession, one time step per run",
  () => {
    for (const name of TESTS) {
      it(`${name}: final Y_h matches ONNX's expected output`, async () => {
        const dir = join(ROOT, name)
        const node = readFirstNode(readFileSync(join(dir, "model.onnx")))
        const data = node.inputs.map((_, i) =>
          node.inputs[i] === ""
            ? undefined
            : decodeTensor(readFileSync(join(dir, "test_data_set_0", `input_${i}.pb`))),
        )
        const expectedYh = decodeTensor(readFileSync(join(dir, "test_data_set_0", "output_0.pb")))
        const x = data[0] as DecodedTensor
        const [steps, batch, inputSize] = x.dims as [number, number, number]
        const hidden = (data[2] as DecodedTensor).dims[2] as number
        const isLstm = node.opType === "LSTM"
        // A sequence_lens input shorter than the sequence would change the semantics: every test used here has full rows.
        const lens = data[4]
        if (lens !== undefined)
          expect(Array.from(lens.data as Int32Array, Number)).toEqual(new Array(batch).fill(steps))

        const g = new GraphBuilder()
        g.input("X", "float32", ["seq", "batch", inputSize])
        const state = [g.input("initial_h", "float32", [1, "batch", hidden])]
        if (isLstm) state.push(g.input("initial_c", "float32", [1, "batch", hidden]))
        const init = (i: number, n: string) => {
          const t = data[i]
          return t === undefined
            ? ""
            : g.init(n, { dtype: "float32", dims: t.dims, values: t.data as Float32Array })
        }
        const nodeInputs = ["X", init(1, "W"), init(2, "R"), init(3, "B"), "", ...state]
        if (isLstm && data[7] !== undefined) nodeInputs.push(init(7, "P"))
        g.node(node.opType, nodeInputs, ["Y", "Y_h", ...(isLstm ? ["Y_c"] : [])], node.attrs)
        g.output("Y", "float32", ["seq", 1, "batch", hidden])
        g.output("Y_h", "float32", [1, "batch", hidden])
        if (isLstm) g.output("Y_c", "float32", [1, "batch", hidden])
        const session = await ortWeb.InferenceSession.create(g.build())

        const backend = ortBackend({ ort: ortWeb })
        const stateful = orThrow(createStatefulSession({ session, backend, batchSize: batch }))
        expect(stateful.pairs.map((p) => `${p.output}->${p.input}`)).toEqual(
          isLstm ? ["Y_h->initial_h", "Y_c->initial_c"] : ["Y_h->initial_h"],
        )
        // A given initial state (the peephole test's) is saved into the session before the first run.
        if (data[5] !== undefined) {
          const given: Record<string, OrtTensor> = {
            initial_h: new ortWeb.Tensor(
              "float32",
              (data[5] as DecodedTensor).data as Float32Array,
              [1, batch, hidden],
            ),
          }
          if (isLstm)
            given["initial_c"] = new ortWeb.Tensor(
              "float32",
              (data[6] as DecodedTensor).data as Float32Array,
              [1, batch, hidden],
            )
          orThrow(stateful.save(given))
        }
        const ys: F32[] = []
        for (let t = 0; t < steps; t++) {
          const step = sliceAxis(f32(x), 0, t, t + 1)
          const out = orThrow(
            await stateful.run({ X: new ortWeb.Tensor("float32", step.data, step.dims) }),
          )
          const y = out["Y"] as OrtTensor
          ys.push({ dims: [...y.dims], data: (y.data as Float32Array).slice() })
          y.dispose()
        }
        const yh = stateful.state()["initial_h"] as OrtTensor
        expectClose(
          { dims: [...yh.dims], data: yh.data as Float32Array },
          f32(expectedYh),
          1e-5,
          name,
        )
        // The last step of Y is Y_h too: the carried state and the per-step output agree.
        expectClose(
          sliceAxis(concatAxis(ys, 0), 0, steps - 1, steps),
          { dims: [1, 1, batch, hidden], data: f32(expectedYh).data },
          1e-5,
        )
        stateful.dispose()
        expect(backend.liveTensors()).toBe(0)
      })
    }
  },
)
