/// <reference types="@webgpu/types" />
// A merged encoder–decoder on WebGPU serving conversations through one StreamingSession whose
// state stays in GPU buffers: a conversation starts in a call of its own while another is under
// way (its caches padded on the device), then both run together; each equals the wasm oracle
// run on its whole history alone, and no GPU buffer outlives the session.
import { orThrow } from "@statesaver/core"
import * as ort from "onnxruntime-web/webgpu"
import { describe, expect, it } from "vitest"
import { createStreamingSession, ortBackend, stateOutputLocations } from "../src/index.js"
import {
  type EncoderStates,
  encodeRow,
  encoderDecoder,
  oracleLogits,
  tinyEncoderDecoderConfig,
} from "./helpers/decoders.js"
import { seededFloats } from "./helpers/onnx-builder.js"

ort.env.wasm.numThreads = 1
const TOL = 1e-5

describe.each([
  ["fed on every call", false],
  ["held by the session (cache.encoder)", true],
])(
  "encoder–decoder conversations in a StreamingSession on WebGPU, encoder states %s",
  (_, holds) => {
    it("a conversation starts while another is under way, then both run together, each equal to the wasm oracle alone; GPU buffers all freed", async () => {
      const cfg = tinyEncoderDecoderConfig()
      const graphs = encoderDecoder(cfg, { masks: true })
      const wasm = { executionProviders: ["wasm"] }
      const encoder = await ort.InferenceSession.create(graphs.encoder, wasm)
      const oracle = await ort.InferenceSession.create(graphs.oracle, wasm)
      const probe = await ort.InferenceSession.create(graphs.decoder, wasm)
      const decoder = await ort.InferenceSession.create(graphs.decoder, {
        executionProviders: ["webgpu"],
        preferredOutputLocation: stateOutputLocations(probe.inputNames, probe.outputNames),
      })
      await probe.release()
      const F = 5
      const states = new Map<string, EncoderStates>()
      for (const [i, key] of ["a", "b"].entries())
        states.set(key, await encodeRow(ort, encoder, seededFloats(F * cfg.featDim, 70 + i, 1), F))
      const backend = ortBackend({
        ort,
        location: "gpu-buffer",
        device: await ort.env.webgpu.device,
      })
      const chats = orThrow(
        createStreamingSession({
          session: decoder,
          ort,
          backend,
          capacity: 2,
          cache: holds
            ? { kind: "growing", encoder: "encoder_hidden_states" }
            : { kind: "growing" },
          outputs: ["logits"],
        }),
      )
      const history = new Map<string, number[]>()
      let seed = 3
      let worst = 0
      const started = new Set<string>()
      const step = async (calls: Record<string, number>) => {
        const ids = Object.fromEntries(
          Object.entries(calls).map(([k, n]) => [
            k,
            Array.from({ length: n }, () => (seed = (seed * 31 + 7) % 997) % cfg.vocab),
          ]),
        )
        const outs = orThrow(
          await chats.run(
            Object.entries(ids).map(([key, t]) => {
              const enc = states.get(key) as EncoderStates
              const input_ids = new ort.Tensor("int64", BigInt64Array.from(t, BigInt), [
                1,
                t.length,
              ])
              // Held: fed only on the stream's first call.
              const feed = !holds || !started.has(key)
              started.add(key)
              return {
                key,
                feeds: feed
                  ? {
                      input_ids,
                      encoder_hidden_states: new ort.Tensor("float32", enc.data, [
                        1,
                        F,
                        cfg.hidden,
                      ]),
                    }
                  : { input_ids },
              }
            }),
          ),
        )
        for (const [key, t] of Object.entries(ids)) {
          const h = [...(history.get(key) ?? []), ...t]
          history.set(key, h)
          const [want] = await oracleLogits(ort, oracle, [h], [states.get(key) as EncoderStates])
          const got = outs.get(key)?.logits as ort.Tensor
          const data = (await got.getData()) as Float32Array
          const from = (h.length - t.length) * cfg.vocab
          expect(data.length).toBe(t.length * cfg.vocab)
          for (let j = 0; j < data.length; j++)
            worst = Math.max(worst, Math.abs((data[j] as number) - (want?.[from + j] as number)))
          got.dispose()
        }
      }
      await step({ a: 3 })
      await step({ a: 1 })
      await step({ b: 2 })
      for (let t = 0; t < 3; t++) await step({ a: 1, b: 1 })
      expect(worst).toBeLessThan(TOL)
      chats.dispose()
      expect(backend.liveGpuBuffers()).toBe(0)
      expect(backend.liveTensors()).toBe(0)
      await Promise.all([decoder.release(), encoder.release(), oracle.release()])
    })
  },
)
