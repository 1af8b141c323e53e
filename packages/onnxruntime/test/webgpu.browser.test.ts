/// <reference types="@webgpu/types" />
// WebGPU in headless Chromium: state stays in GPU buffers on ONNX Runtime's own device.
import {
  type HostTensor,
  type StateSaver,
  type StateSpec,
  createStateSaver,
  float32ToFloat16Bits,
  hostBackend,
  init,
  orThrow,
} from "@statesaver/core"
import { describeBackendConformance } from "@statesaver/core/testing"
import * as ort from "onnxruntime-web/webgpu"
import { describe, expect, it } from "vitest"
import {
  type OrtBackend,
  type OrtTensor,
  type StatefulSession,
  createStatefulSession,
  createStreamingSession,
  ortBackend,
  stateOutputLocations,
} from "../src/index.js"
import { type F32, expectClose, gatherAxis, inputs } from "./helpers/host.js"
import { lstm2 } from "./helpers/models.js"

ort.env.wasm.numThreads = 1

const MODEL = lstm2(3, 16)
const B = 4
const STATE_OUTPUTS = ["Y_h.0", "Y_c.0", "Y_h.1", "Y_c.1"]
const MODEL_INPUTS = ["X", "initial_h.0", "initial_c.0", "initial_h.1", "initial_c.1"]

let ready:
  Promise<{ gpu: ort.InferenceSession; cpu: ort.InferenceSession; device: unknown }> | undefined
/** One WebGPU session (every output kept on the GPU) and one wasm session of the same model. */
function sessions() {
  ready ??= (async () => {
    const gpu = await ort.InferenceSession.create(MODEL, {
      executionProviders: ["webgpu"],
      preferredOutputLocation: Object.fromEntries(
        [...STATE_OUTPUTS, "Y"].map((n) => [n, "gpu-buffer" as const]),
      ),
    })
    const cpu = await ort.InferenceSession.create(MODEL, { executionProviders: ["wasm"] })
    return { gpu, cpu, device: await ort.env.webgpu.device }
  })()
  return ready
}

/** Counts GPU → CPU reads: every read goes through `GPUBuffer.prototype.mapAsync`. */
function countReads(): { reads: () => number; restore: () => void } {
  const proto = GPUBuffer.prototype
  const original = proto.mapAsync
  let n = 0
  proto.mapAsync = function (this: GPUBuffer, ...args: Parameters<GPUBuffer["mapAsync"]>) {
    n++
    return original.apply(this, args)
  }
  return { reads: () => n, restore: () => (proto.mapAsync = original) }
}

async function hostState(backend: OrtBackend, s: StatefulSession): Promise<Map<string, F32>> {
  const out = new Map<string, F32>()
  for (const [k, t] of Object.entries(s.state())) {
    const h: HostTensor = await backend.toHost(t)
    out.set(k, { dims: [...h.shape], data: h.data as Float32Array })
  }
  return out
}

const tensorOf = (x: F32): OrtTensor => new ort.Tensor("float32", x.data.slice(), x.dims)

describeBackendConformance({
  name: "onnxruntime-web (WebGPU, GPU buffers)",
  backend: async () =>
    ortBackend({ ort, location: "gpu-buffer", device: (await sessions()).device }),
  liveTensors: (backend) => backend.liveTensors(),
  iterations: 100,
})

describe("StatefulSession on WebGPU", () => {
  it("100 steps with per-row resets and selects read nothing back from the GPU; tensors and GPU buffers stay flat", async () => {
    const { gpu, device } = await sessions()
    const backend = ortBackend({ ort, location: "gpu-buffer", device })
    const stateful = orThrow(createStatefulSession({ session: gpu, backend, batchSize: B }))
    const x = tensorOf(inputs([1, B, 3], 1))
    const counter = countReads()
    try {
      for (let i = 0; i < 100; i++) {
        const out = orThrow(await stateful.run({ X: x }))
        expect(out["Y"]?.location).toBe("gpu-buffer")
        out["Y"]?.dispose()
        for (const t of Object.values(stateful.state())) expect(t.location).toBe("gpu-buffer")
        if (i % 10 === 3) orThrow(stateful.reset([i % B]))
        if (i % 10 === 7) orThrow(stateful.select([1, 0, 3, 2]))
        expect(backend.liveTensors()).toBe(4)
        expect(backend.liveGpuBuffers()).toBeLessThanOrEqual(4)
      }
      expect(counter.reads()).toBe(0)
    } finally {
      counter.restore()
    }
    stateful.dispose()
    expect(backend.liveTensors()).toBe(0)
    expect(backend.liveGpuBuffers()).toBe(0)
  })

  it("each step, reset and select on the device equals the wasm EP stepped from the GPU's previous state", async () => {
    const { gpu, cpu, device } = await sessions()
    const backend = ortBackend({ ort, location: "gpu-buffer", device })
    const stateful = orThrow(createStatefulSession({ session: gpu, backend, batchSize: B }))
    const axis = 1
    for (let i = 0; i < 24; i++) {
      let before = await hostState(backend, stateful)
      if (i === 8) {
        orThrow(stateful.reset([1, 2]))
        const expected = new Map(
          [...before].map(([k, v]) => [k, gatherAxis(v, axis, [0, null, null, 3])]),
        )
        const after = await hostState(backend, stateful)
        for (const [k, v] of expected) expectClose(after.get(k) as F32, v, 0, `reset ${k}`)
        before = after
      }
      if (i === 16) {
        orThrow(stateful.select([3, 3, 0, null]))
        const expected = new Map(
          [...before].map(([k, v]) => [k, gatherAxis(v, axis, [3, 3, 0, null])]),
        )
        const after = await hostState(backend, stateful)
        for (const [k, v] of expected) expectClose(after.get(k) as F32, v, 0, `select ${k}`)
        before = after
      }
      const x = inputs([1, B, 3], 100 + i)
      const out = orThrow(await stateful.run({ X: tensorOf(x) }))
      const feeds: Record<string, OrtTensor> = { X: tensorOf(x) }
      for (const [k, v] of before) feeds[k] = tensorOf(v)
      const ref = (await cpu.run(feeds)) as Record<string, OrtTensor>
      const y = out["Y"] as OrtTensor
      expectClose(
        { dims: [...y.dims], data: (await y.getData()) as Float32Array },
        {
          dims: [...(ref["Y"] as OrtTensor).dims],
          data: (ref["Y"] as OrtTensor).data as Float32Array,
        },
        1e-4,
        `Y at step ${i}`,
      )
      y.dispose()
      const now = await hostState(backend, stateful)
      for (const [input, output] of stateful.pairs.map((p) => [p.input, p.output] as const)) {
        const r = ref[output] as OrtTensor
        expectClose(
          now.get(input) as F32,
          { dims: [...r.dims], data: r.data as Float32Array },
          1e-4,
          `${input} at step ${i}`,
        )
      }
    }
    stateful.dispose()
    expect(backend.liveGpuBuffers()).toBe(0)
  })
})

describe("busy guard on WebGPU", () => {
  it("row operations through the session's saver are refused while a GPU run is in flight; the run equals an undisturbed one", async () => {
    const { gpu, device } = await sessions()
    const backend = ortBackend({ ort, location: "gpu-buffer", device })
    const s = orThrow(createStatefulSession({ session: gpu, backend, batchSize: B }))
    const oracle = orThrow(createStatefulSession({ session: gpu, backend, batchSize: B }))
    const warm = inputs([2, B, 3], 5)
    for (const t of [s, oracle]) orThrow(await t.run({ X: tensorOf(warm) }))["Y"]?.dispose()
    const bytes = orThrow(await s.snapshot())
    const x = inputs([1, B, 3], 6)
    const pending = s.run({ X: tensorOf(x) })
    for (const r of [
      s.saver.reset(),
      s.saver.reset([1]),
      s.saver.select([3, 2, 1, 0]),
      s.saver.restore(bytes),
      await s.saver.snapshot(),
    ])
      expect(r).toMatchObject({ _tag: "Left", left: { _tag: "BusyError" } })
    const y = orThrow(await pending)["Y"] as OrtTensor
    const yRef = orThrow(await oracle.run({ X: tensorOf(x) }))["Y"] as OrtTensor
    expect(Array.from((await y.getData()) as Float32Array)).toEqual(
      Array.from((await yRef.getData()) as Float32Array),
    )
    const [got, want] = [await hostState(backend, s), await hostState(backend, oracle)]
    for (const [k, v] of want) expectClose(got.get(k) as F32, v, 0, k)
    orThrow(s.saver.reset([1]))
    for (const t of [y, yRef]) t.dispose()
    s.dispose()
    oracle.dispose()
    expect(backend.liveGpuBuffers()).toBe(0)
  })
})

describe("sub-word rows on WebGPU (float16, uint8, bool)", () => {
  it("reset and select of odd-sized float16 and 1-byte rows stay on the device and match the host backend", async () => {
    const { device } = await sessions()
    const spec: StateSpec = {
      kv: { shape: ["batch", 3], dtype: "float16", init: init.constant(1.5) },
      flags: { shape: [2, "batch"], dtype: "uint8", init: init.constant(7) },
      done: { shape: ["batch", 1, 3], dtype: "bool" },
    }
    const gpu = orThrow(
      createStateSaver({
        spec,
        backend: ortBackend({ ort, location: "gpu-buffer", device }),
        batchSize: 5,
      }),
    )
    const host = orThrow(createStateSaver({ spec, backend: hostBackend(), batchSize: 5 }))
    // Distinct values in every element, through the same snapshot on both.
    const seeded = orThrow(createStateSaver({ spec, backend: hostBackend(), batchSize: 5 }))
    const s = seeded.state() as Record<string, HostTensor>
    ;(s["kv"]?.data as Uint16Array).forEach((_, i, a) => (a[i] = float32ToFloat16Bits(i - 7)))
    ;(s["flags"]?.data as Uint8Array).forEach((_, i, a) => (a[i] = 200 - i))
    ;(s["done"]?.data as Uint8Array).forEach((_, i, a) => (a[i] = i % 2))
    const bytes = orThrow(await seeded.snapshot())
    orThrow(gpu.restore(bytes))
    orThrow(host.restore(bytes))
    const counter = countReads()
    try {
      for (const saver of [gpu, host] as StateSaver<unknown>[]) {
        orThrow(saver.reset([1, 3]))
        orThrow(saver.select([4, 1, 1, null, 0, 2]))
        orThrow(saver.reset(new Uint8Array([0, 0, 1, 0, 0, 1])))
      }
      expect(counter.reads()).toBe(0)
    } finally {
      counter.restore()
    }
    expect(orThrow(await gpu.snapshot())).toEqual(orThrow(await host.snapshot()))
    gpu.dispose()
    host.dispose()
    seeded.dispose()
  })
})

/**
 * Stream `key`'s outputs for `feeds` run alone on wasm: the stream's own StatefulSession of batch
 * 1 in `alone`, made on its first call.
 */
async function aloneOutputs(
  alone: Map<string, StatefulSession>,
  cpu: ort.InferenceSession,
  key: string,
  feeds: Record<string, OrtTensor>,
) {
  const ref =
    alone.get(key) ??
    orThrow(createStatefulSession({ session: cpu, backend: ortBackend({ ort }), batchSize: 1 }))
  alone.set(key, ref)
  return orThrow(await ref.run(feeds))
}

describe("StreamingSession on WebGPU", () => {
  it("streams batched on the GPU equal each stream run alone on wasm; GPU buffers stay flat", async () => {
    const { device } = await sessions()
    const gpuOnlyState = await ort.InferenceSession.create(MODEL, {
      executionProviders: ["webgpu"],
      preferredOutputLocation: stateOutputLocations(MODEL_INPUTS, [...STATE_OUTPUTS, "Y"]),
    })
    const backend = ortBackend({ ort, location: "gpu-buffer", device })
    const streaming = orThrow(createStreamingSession({ session: gpuOnlyState, ort, backend }))
    const cpu = (await sessions()).cpu
    const alone = new Map<string, StatefulSession>()
    const input = (key: string, call: number) =>
      new ort.Tensor(
        "float32",
        Float32Array.from({ length: 3 }, (_, i) => Math.sin(key.length * 1.3 + call * 0.7 + i)),
        [1, 1, 3],
      )
    const calls = [["a", "b", "c"], ["b"], ["c", "a"], ["a", "b", "c"], ["c"]]
    const buffers: number[] = []
    for (const [n, keys] of calls.entries()) {
      const outs = orThrow(
        await streaming.run(keys.map((key) => ({ key, feeds: { X: input(key, n) } }))),
      )
      for (const key of keys) {
        const expected = await aloneOutputs(alone, cpu, key, { X: input(key, n) })
        const y = outs.get(key)?.["Y"]
        expect(y?.location).toBe("cpu")
        expectClose(
          { dims: [...(y?.dims ?? [])], data: y?.data as Float32Array },
          { dims: [...(expected["Y"]?.dims ?? [])], data: expected["Y"]?.data as Float32Array },
          1e-4,
        )
        y?.dispose()
        expected["Y"]?.dispose()
      }
      buffers.push(backend.liveGpuBuffers())
    }
    // One slab per state leaf, allocated once, and from the first call whose streams do not lie
    // from the slab's first row in key order ([b]), the scratch the rows move through (a GPU
    // tensor is shared only from its buffer's start): nothing grows from call to call.
    expect(buffers.slice(1)).toEqual(buffers.slice(1).map(() => (buffers[0] as number) + 1))
    for (const [key, ref] of alone) {
      const mine = orThrow(await streaming.snapshot(key))
      const restored = orThrow(
        createStatefulSession({ session: cpu, backend: ortBackend({ ort }), batchSize: 1 }),
      )
      orThrow(restored.restore(mine))
      for (const [name, t] of Object.entries(restored.state())) {
        const r = ref.state()[name] as OrtTensor
        expectClose(
          { dims: [...t.dims], data: t.data as Float32Array },
          { dims: [...r.dims], data: r.data as Float32Array },
          1e-4,
        )
      }
      restored.dispose()
      ref.dispose()
    }
    streaming.dispose()
    expect(backend.liveGpuBuffers()).toBe(0)
    await gpuOnlyState.release()
  })

  it("an output the model keeps on the GPU (Y) is read once per batched call and split per stream; a call of one stream hands it over on the GPU", async () => {
    const { gpu, cpu, device } = await sessions()
    const backend = ortBackend({ ort, location: "gpu-buffer", device })
    const streaming = orThrow(createStreamingSession({ session: gpu, ort, backend }))
    const alone = new Map<string, StatefulSession>()
    const input = (key: string, call: number) =>
      new ort.Tensor(
        "float32",
        Float32Array.from({ length: 3 }, (_, i) => Math.cos(key.length * 0.9 + call * 0.4 + i)),
        [1, 1, 3],
      )
    const calls = [["a", "bb", "ccc"], ["ccc", "a"], ["bb"]]
    for (const [n, keys] of calls.entries()) {
      const counter = countReads()
      const outs = orThrow(
        await streaming.run(keys.map((key) => ({ key, feeds: { X: input(key, n) } }))),
      )
      // Y alone is read, once for the whole call (the state stays on the GPU).
      expect(counter.reads()).toBe(keys.length > 1 ? 1 : 0)
      counter.restore()
      for (const key of keys) {
        const expected = await aloneOutputs(alone, cpu, key, { X: input(key, n) })
        const y = outs.get(key)?.["Y"] as OrtTensor
        expect(y.location).toBe(keys.length > 1 ? "cpu" : "gpu-buffer")
        expectClose(
          { dims: [...y.dims], data: (await y.getData()) as Float32Array },
          { dims: [...(expected["Y"]?.dims ?? [])], data: expected["Y"]?.data as Float32Array },
          1e-4,
        )
        y.dispose()
        expected["Y"]?.dispose()
      }
    }
    for (const ref of alone.values()) ref.dispose()
    streaming.dispose()
    expect(backend.liveGpuBuffers()).toBe(0)
  })

  it("runBatch hands the batched output back on the GPU: nothing read back, each row equal to its stream run alone", async () => {
    const { gpu, cpu, device } = await sessions()
    const backend = ortBackend({ ort, location: "gpu-buffer", device })
    const streaming = orThrow(createStreamingSession({ session: gpu, ort, backend }))
    const alone = new Map<string, StatefulSession>()
    const row = (key: string, call: number) =>
      Float32Array.from({ length: 3 }, (_, i) => Math.sin(key.length * 0.6 + call * 0.9 + i))
    const calls = [
      ["a", "bb", "ccc"],
      ["ccc", "a"],
      ["bb", "a", "ccc"],
    ]
    for (const [n, keys] of calls.entries()) {
      // X is [seq 1, batch, 3]: row i of the batch axis is keys[i]'s.
      const X = new ort.Tensor("float32", new Float32Array(keys.length * 3), [1, keys.length, 3])
      keys.forEach((key, i) => (X.data as Float32Array).set(row(key, n), i * 3))
      const counter = countReads()
      const { Y } = orThrow(await streaming.runBatch(keys, { X }))
      expect(counter.reads()).toBe(0)
      counter.restore()
      expect(Y?.location).toBe("gpu-buffer")
      const y = { dims: [...(Y as OrtTensor).dims], data: (await Y?.getData()) as Float32Array }
      for (const [i, key] of keys.entries()) {
        const feeds = { X: new ort.Tensor("float32", row(key, n), [1, 1, 3]) }
        const expected = await aloneOutputs(alone, cpu, key, feeds)
        expectClose(
          gatherAxis(y, 1, [i]),
          { dims: [...(expected["Y"]?.dims ?? [])], data: expected["Y"]?.data as Float32Array },
          1e-4,
        )
        expected["Y"]?.dispose()
      }
      Y?.dispose()
    }
    for (const ref of alone.values()) ref.dispose()
    streaming.dispose()
    expect(backend.liveGpuBuffers()).toBe(0)
  })
})
