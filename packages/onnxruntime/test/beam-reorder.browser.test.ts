/// <reference types="@webgpu/types" />
// A beam-search step on WebGPU (headless Chromium): beam 4, a tiny decoder at context 256. The
// beams' caches are reordered either with statesaver's `select` (copies on ONNX Runtime's
// device) or the common hand-written way (each cache leaf read back, its rows reordered on the
// host, uploaded again as the next run's input). Counted per step: GPU → CPU reads (`mapAsync`,
// bytes mapped), buffer-to-buffer copies, queue writes and buffers created. Timings on a
// software GPU mean nothing, so none are taken. Both ways must produce the same logits.
import { orThrow } from "@statesaver/core"
import * as ort from "onnxruntime-web/webgpu"
import { expect, it } from "vitest"
import {
  type KvCacheOptions,
  type OrtTensor,
  type StatefulSession,
  createStatefulSession,
  ortBackend,
} from "../src/index.js"
import { fixedCacheDecoder, growingDecoder, tinyDecoderConfig } from "./helpers/decoders.js"

ort.env.wasm.numThreads = 1

const BEAM = 4
const CONTEXT = 256
const STEPS = 8
const cfg = tinyDecoderConfig({ maxPosition: CONTEXT + STEPS + 1 })
const { heads: H, headDim: D, vocab: V } = cfg
const PAST = Array.from({ length: cfg.layers }, (_, l) => [
  `past_key_values.${l}.key`,
  `past_key_values.${l}.value`,
]).flat()
const PRESENT = PAST.map((p) => p.replace("past_key_values", "present"))

/** Beam parents of step `t`: the best beam forks, the worst is dropped, the order rotates. */
const parents = (t: number): number[] => {
  const k = t % BEAM
  return [k, k, (k + 1) % BEAM, (k + 2) % BEAM]
}
const ids = (rows: number, t: number): ort.Tensor =>
  new ort.Tensor(
    "int64",
    BigInt64Array.from({ length: rows }, (_, r) => BigInt((r * 7 + t * 13 + 5) % V)),
    [rows, 1],
  )

interface Counts {
  reads: number
  readBytes: number
  copies: number
  copyBytes: number
  writes: number
  writeBytes: number
  created: number
}
const zero = (): Counts => ({
  reads: 0,
  readBytes: 0,
  copies: 0,
  copyBytes: 0,
  writes: 0,
  writeBytes: 0,
  created: 0,
})

/** Counts GPU work into `c` while installed: reads back, copies, queue writes, buffers created. */
function countGpu(c: Counts): () => void {
  const buffer = GPUBuffer.prototype
  const encoder = GPUCommandEncoder.prototype
  const queue = GPUQueue.prototype
  const device = GPUDevice.prototype
  const { mapAsync } = buffer
  const { copyBufferToBuffer } = encoder
  const { writeBuffer } = queue
  const { createBuffer } = device
  buffer.mapAsync = function (this: GPUBuffer, ...args: Parameters<GPUBuffer["mapAsync"]>) {
    c.reads++
    c.readBytes += args[2] ?? this.size - (args[1] ?? 0)
    return mapAsync.apply(this, args)
  }
  encoder.copyBufferToBuffer = function (this: GPUCommandEncoder, ...args: unknown[]) {
    c.copies++
    c.copyBytes += (args.length >= 5 ? args[4] : args[2]) as number
    return (copyBufferToBuffer as (...a: unknown[]) => void).apply(this, args)
  } as GPUCommandEncoder["copyBufferToBuffer"]
  queue.writeBuffer = function (this: GPUQueue, ...args: Parameters<GPUQueue["writeBuffer"]>) {
    const [, , data, dataOffset = 0, size] = args
    const unit = ArrayBuffer.isView(data)
      ? ((data as unknown as { BYTES_PER_ELEMENT?: number }).BYTES_PER_ELEMENT ?? 1)
      : 1
    c.writes++
    c.writeBytes += size !== undefined ? size * unit : data.byteLength - dataOffset * unit
    return writeBuffer.apply(this, args)
  }
  device.createBuffer = function (this: GPUDevice, descriptor: GPUBufferDescriptor) {
    c.created++
    return createBuffer.call(this, descriptor)
  }
  return () => {
    buffer.mapAsync = mapAsync
    encoder.copyBufferToBuffer = copyBufferToBuffer
    queue.writeBuffer = writeBuffer
    device.createBuffer = createBuffer
  }
}

/** Counts of `n` steps per step, as one line. */
const perStep = (c: Counts, n: number): string =>
  `mapAsync ${c.reads / n} (${c.readBytes / n} B), copyBufferToBuffer ${c.copies / n} (${c.copyBytes / n} B), writeBuffer ${c.writes / n} (${c.writeBytes / n} B), createBuffer ${c.created / n}`

/** A WebGPU session with the caches and the logits kept in GPU buffers. */
const gpuSession = (bytes: Uint8Array) =>
  ort.InferenceSession.create(bytes, {
    executionProviders: ["webgpu"],
    preferredOutputLocation: Object.fromEntries(
      ["logits", ...PRESENT].map((n) => [n, "gpu-buffer" as const]),
    ),
  })

/** statesaver's way: `select` on the device, then one token per beam. */
async function withSelect(bytes: Uint8Array, cache: KvCacheOptions) {
  const session = await gpuSession(bytes)
  const device = await ort.env.webgpu.device
  const backend = ortBackend({ ort, location: "gpu-buffer", device })
  const s = orThrow(
    createStatefulSession({ session, backend, batchSize: 1, cache, outputs: ["logits"] }),
  ) as StatefulSession<"logits">
  const prompt = BigInt64Array.from({ length: CONTEXT }, (_, i) => BigInt((i * 5 + 3) % V))
  orThrow(
    await s.run({ input_ids: new ort.Tensor("int64", prompt, [1, CONTEXT]) }),
  ).logits.dispose()
  const select = zero()
  const run = zero()
  const step = async (t: number, counted: boolean) => {
    const stopSelect = counted ? countGpu(select) : () => {}
    try {
      orThrow(s.select(t === 0 ? [0, 0, 0, 0] : parents(t)))
    } finally {
      stopSelect()
    }
    const stopRun = counted ? countGpu(run) : () => {}
    try {
      return orThrow(await s.run({ input_ids: ids(BEAM, t) })).logits
    } finally {
      stopRun()
    }
  }
  return { s, session, backend, step, select, run }
}

/**
 * The hand-written way over the growing-cache model: each cache leaf read back, its rows
 * reordered on the host into a new array, fed again as a CPU tensor (ORT uploads it).
 */
async function byHand(start: readonly Float32Array[]) {
  const session = await gpuSession(growingDecoder(cfg))
  let past: { data: Float32Array; gpu?: OrtTensor }[] = start.map((data) => ({ data }))
  let length = CONTEXT
  const reorder = zero()
  const run = zero()
  const step = async (t: number, counted: boolean) => {
    const order = t === 0 ? [0, 0, 0, 0] : parents(t)
    const stopReorder = counted ? countGpu(reorder) : () => {}
    let feedsPast: ort.Tensor[]
    try {
      const host = await Promise.all(
        past.map(async (p) =>
          p.gpu === undefined ? p.data : ((await p.gpu.getData()) as Float32Array),
        ),
      )
      for (const p of past) p.gpu?.dispose()
      const rowSize = H * length * D
      feedsPast = host.map((data) => {
        const next = new Float32Array(BEAM * rowSize)
        order.forEach((p, r) =>
          next.set(data.subarray(p * rowSize, (p + 1) * rowSize), r * rowSize),
        )
        return new ort.Tensor("float32", next, [BEAM, H, length, D])
      })
    } finally {
      stopReorder()
    }
    const stopRun = counted ? countGpu(run) : () => {}
    try {
      const w = length + 1
      const feeds: Record<string, ort.Tensor> = {
        input_ids: ids(BEAM, t),
        attention_mask: new ort.Tensor("int64", new BigInt64Array(BEAM * w).fill(1n), [BEAM, w]),
        position_ids: new ort.Tensor("int64", new BigInt64Array(BEAM).fill(BigInt(length)), [
          BEAM,
          1,
        ]),
      }
      PAST.forEach((name, i) => (feeds[name] = feedsPast[i] as ort.Tensor))
      const out = await session.run(feeds)
      past = PRESENT.map((name) => ({ data: new Float32Array(0), gpu: out[name] as OrtTensor }))
      length++
      return out["logits"] as OrtTensor
    } finally {
      stopRun()
    }
  }
  return { session, step, reorder, run, dispose: () => past.forEach((p) => p.gpu?.dispose()) }
}

it(`beam ${BEAM} at context ${CONTEXT}: select reorders the caches with 0 read-backs; the hand-written host reorder reads every cache leaf back; both give the same logits`, async () => {
  const growing = await withSelect(growingDecoder(cfg), { kind: "growing" })
  const fixed = await withSelect(fixedCacheDecoder(cfg), {
    kind: "fixed",
    capacity: CONTEXT + STEPS + 1,
  })
  // The hand-written way starts from the same prefilled cache, read back outside the counts.
  const start = await Promise.all(
    PAST.map(async (name) => (await growing.s.state()[name]?.getData()) as Float32Array),
  )
  const hand = await byHand(start)
  const logits: Float32Array[] = []
  for (const way of [hand, growing, fixed]) {
    let last: OrtTensor | undefined
    for (let t = 0; t <= STEPS; t++) {
      last?.dispose()
      // Step 0 forks the prompt into the beams, uncounted (compiles the shaders too).
      last = await way.step(t, t > 0)
    }
    logits.push((await (last as OrtTensor).getData()) as Float32Array)
    last?.dispose()
  }
  const [byHandLogits, growingLogits, fixedLogits] = logits as [
    Float32Array,
    Float32Array,
    Float32Array,
  ]
  expect(byHandLogits.length).toBe(BEAM * V)
  const worst = (a: Float32Array, b: Float32Array) =>
    a.reduce((m, x, i) => Math.max(m, Math.abs(x - (b[i] as number))), 0)
  expect(worst(growingLogits, byHandLogits)).toBeLessThanOrEqual(1e-5)
  expect(worst(fixedLogits, byHandLogits)).toBeLessThanOrEqual(1e-5)

  const leaf = (len: number) => BEAM * H * len * D * 4
  console.log(
    [
      `beam ${BEAM}, context ${CONTEXT}..${CONTEXT + STEPS}, ${STEPS} steps, ${PAST.length} KV leaves of ${leaf(CONTEXT)}..${leaf(CONTEXT + STEPS)} B; per step:`,
      `  hand-written reorder (read back, host, upload): reorder ${perStep(hand.reorder, STEPS)}; run ${perStep(hand.run, STEPS)}`,
      `  select, growing cache: select ${perStep(growing.select, STEPS)}; run ${perStep(growing.run, STEPS)}`,
      `  select, fixed cache of ${CONTEXT + STEPS + 1}: select ${perStep(fixed.select, STEPS)}; run ${perStep(fixed.run, STEPS)}`,
    ].join("\n"),
  )
  // statesaver reads nothing back, in the reorder or in the run; its reorder is device copies.
  // Its rows move within the buffers held, through one scratch buffer the backend keeps: made by
  // the first reorder, not once per leaf per step.
  for (const way of [growing, fixed]) {
    expect(way.select.reads + way.run.reads).toBe(0)
    expect(way.select.copies).toBeGreaterThanOrEqual(STEPS * PAST.length)
    expect(way.select.created).toBe(1)
  }
  // The hand-written way reads every cache leaf back at every step.
  expect(hand.reorder.reads).toBeGreaterThanOrEqual(STEPS * PAST.length)
  expect(hand.reorder.readBytes).toBeGreaterThanOrEqual(STEPS * PAST.length * leaf(CONTEXT))

  hand.dispose()
  // The scratch buffer goes with the last GPU tensor of its backend.
  for (const way of [growing, fixed]) {
    expect(way.backend.liveGpuBuffers()).toBeGreaterThan(0)
    way.s.dispose()
    expect(way.backend.liveGpuBuffers()).toBe(0)
  }
  await Promise.all([hand.session, growing.session, fixed.session].map((x) => x.release()))
}, 300_000)
