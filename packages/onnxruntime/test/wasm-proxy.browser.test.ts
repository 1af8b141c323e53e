// onnxruntime-web's proxy mode (`ort.env.wasm.proxy = true`, on a page) runs models in a worker
// and transfers every input's ArrayBuffer to it, detaching the caller's array. A session's state
// is fed from arrays statesaver keeps (a fixed cache, a store's slab, reused masks), so
// `ortBackend` refuses the mode when it is created, naming the setting, and so does every session
// made over a backend after the mode was turned on.
import { OptionError } from "@statesaver/core"
import * as ort from "onnxruntime-web"
import { describe, expect, it } from "vitest"
import { createStatefulSession, createStreamingSession, ortBackend } from "../src/index.js"
import { rnnCell } from "./helpers/models.js"

ort.env.wasm.numThreads = 1
ort.env.wasm.proxy = true
// A model in an ArrayBuffer of its own, copied before any run: the worker takes the buffer of the
// bytes it is given, which the encoder shares between the models it builds.
const ownBytes = rnnCell(3, 5).slice()

describe("onnxruntime-web in proxy mode (headless Chromium)", () => {
  it("a run transfers its inputs' arrays to the worker: the caller's arrays are detached", async () => {
    const session = await ort.InferenceSession.create(rnnCell(3, 5))
    const h = new Float32Array(10).fill(0.1)
    const out = await session.run({
      x: new ort.Tensor("float32", new Float32Array(6).fill(0.5), [2, 3]),
      h: new ort.Tensor("float32", h, [2, 5]),
    })
    expect((out["new_h"] as ort.Tensor).dims).toEqual([2, 5])
    expect(h.byteLength, "the fed array after the run").toBe(0)
    await session.release()
  })

  it("ortBackend refuses it with an OptionError naming ort.env.wasm.proxy", async () => {
    let thrown: unknown
    try {
      ortBackend({ ort })
    } catch (e) {
      thrown = e
    }
    expect(thrown).toBeInstanceOf(OptionError)
    const err = thrown as OptionError
    expect(err.path).toBe("ort.env.wasm.proxy")
    expect(err.actual).toBe(true)
    expect(err.message).toMatch(/detaches every input's ArrayBuffer/)
  })

  it("a session made over a backend after proxy mode was turned on is refused, with its options", async () => {
    const session = await ort.InferenceSession.create(ownBytes)
    ort.env.wasm.proxy = false
    const backend = ortBackend({ ort })
    ort.env.wasm.proxy = true
    try {
      const stateful = createStatefulSession({ session, backend, batchSize: 2 })
      const streaming = createStreamingSession({ session, ort, backend, capacity: 4 })
      for (const made of [stateful, streaming]) {
        expect(made._tag).toBe("Left")
        const err = (made as { left: unknown }).left
        expect(err).toBeInstanceOf(OptionError)
        expect((err as OptionError).path).toBe("ort.env.wasm.proxy")
      }
      // Nothing was allocated for them.
      expect(backend.liveTensors()).toBe(0)
      ort.env.wasm.proxy = false
      const made = createStatefulSession({ session, backend, batchSize: 2 })
      expect(made._tag).toBe("Right")
      if (made._tag === "Right") made.right.dispose()
    } finally {
      ort.env.wasm.proxy = true
      await session.release()
    }
  })
})
