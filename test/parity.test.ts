import * as tf from "@tensorflow/tfjs"
import * as ort from "onnxruntime-web"
import { describe, expect, it } from "vitest"
import {
  HostTensor,
  type StateBackend,
  type StateSpec,
  createStateSaver,
  hostBackend,
  hostTensor,
  init,
  orThrow,
} from "@statesaver/core"
import { ortBackend } from "@statesaver/onnxruntime"
import { tfjsBackend } from "@statesaver/tfjs"

/** Leaves with the batch axis at 0, 1 and 2, float32 and int32 (the dtypes all three backends hold). */
const spec: StateSpec = {
  h: { shape: ["batch", 3], dtype: "float32" },
  c: { shape: [2, "batch", 2], dtype: "float32", init: init.constant(0.5) },
  step: {
    shape: [2, 1, "batch"],
    dtype: "int32",
    init: init.tensor(hostTensor("int32", [2, 1], [7, -7])),
  },
}

const backends: [string, () => Promise<StateBackend<unknown>>][] = [
  ["host", async () => hostBackend() as StateBackend<unknown>],
  [
    "tfjs (cpu)",
    async () => {
      await tf.setBackend("cpu")
      return tfjsBackend() as unknown as StateBackend<unknown>
    },
  ],
  [
    "onnxruntime-web",
    async () => {
      ort.env.wasm.numThreads = 1
      return ortBackend({ ort: ort as never }) as unknown as StateBackend<unknown>
    },
  ],
]

/** A host-backend snapshot with distinct values in every element, after a reset and a select. */
async function reference(): Promise<Uint8Array> {
  const saver = orThrow(createStateSaver({ spec, backend: hostBackend(), batchSize: 4 }))
  const [c, h, step] = saver.spec.leaves.map((leaf) => {
    const shape = leaf.shape.map((d, axis) => (axis === leaf.batchAxis ? 4 : (d as number)))
    const n = shape.reduce((a, b) => a * b, 1)
    return leaf.dtype === "int32"
      ? new HostTensor(
          "int32",
          shape,
          Int32Array.from({ length: n }, (_, i) => i * 3 - 11),
        )
      : new HostTensor(
          "float32",
          shape,
          Float32Array.from({ length: n }, (_, i) => Math.fround(Math.sin(i) * 1e3)),
        )
  })
  orThrow(saver.save({ c, h, step } as never))
  orThrow(saver.reset([2]))
  orThrow(saver.select([3, 2, 0, null, 1]))
  return orThrow(await saver.snapshot())
}

describe("snapshots move between backends bit-exactly", () => {
  for (const [from, makeFrom] of backends) {
    for (const [to, makeTo] of backends) {
      it(`${from} -> ${to}`, async () => {
        const bytes = await reference()
        const a = orThrow(createStateSaver({ spec, backend: await makeFrom(), batchSize: 5 }))
        orThrow(a.restore(bytes))
        const viaA = orThrow(await a.snapshot())
        a.dispose()
        const b = orThrow(createStateSaver({ spec, backend: await makeTo(), batchSize: 5 }))
        orThrow(b.restore(viaA))
        // A row operation on the target backend, then the same on the host: still identical.
        orThrow(b.reset([1]))
        const host = orThrow(createStateSaver({ spec, backend: hostBackend(), batchSize: 5 }))
        orThrow(host.restore(bytes))
        orThrow(host.reset([1]))
        expect(orThrow(await b.snapshot())).toEqual(orThrow(await host.snapshot()))
        expect(viaA).toEqual(bytes)
        b.dispose()
      })
    }
  }
})
