/// <reference types="@webgpu/types" />
// KV caches held by a StatefulSession on WebGPU (headless Chromium): the cache stays in GPU
// buffers on ONNX Runtime's device, rows run at different lengths, and every step's logits equal
// the no-cache oracle (wasm EP) run on each row's whole history alone. The fixed-capacity cache
// takes each step's keys and values with device copies: over 100 steady-state tokens nothing
// is read back and no cache-sized buffer is created.
import { orThrow } from "@statesaver/core"
import * as ort from "onnxruntime-web/webgpu"
import { describe, expect, it } from "vitest"
import {
  type KvCacheOptions,
  type OrtBackend,
  type OrtSession,
  type OrtTensor,
  type StatefulSession,
  type StreamingSession,
  createStatefulSession,
  createStreamingSession,
  ortBackend,
} from "../src/index.js"
import {
  fixedCacheDecoder,
  growingDecoder,
  mergedFixedDecoder,
  noCacheDecoder,
  oracleLogits,
  tinyDecoderConfig,
  seededTokens,
} from "./helpers/decoders.js"

ort.env.wasm.numThreads = 1

const TOL = 1e-5
const CAPACITY = 128
// Positions run up to the capacity: the position embedding covers them.
const cfg = tinyDecoderConfig({ maxPosition: CAPACITY })
const { heads: H, headDim: D, vocab: V } = cfg
const PAST = Array.from({ length: cfg.layers }, (_, l) => [
  `past_key_values.${l}.key`,
  `past_key_values.${l}.value`,
]).flat()
const PRESENT = Array.from({ length: cfg.layers }, (_, l) => [
  `present.${l}.key`,
  `present.${l}.value`,
]).flat()

/** Deterministic tokens in [0, vocab). */
const tokens = (n: number, seed: number): number[] => seededTokens(n, seed, V)

/**
 * Counts GPU → CPU reads (`GPUBuffer.prototype.mapAsync`) and buffer creations
 * (`GPUDevice.prototype.createBuffer`, with their sizes) while installed.
 */
function countGpu(): {
  reads: () => number
  created: () => readonly number[]
  restore: () => void
} {
  const buffer = GPUBuffer.prototype
  const device = GPUDevice.prototype
  const mapAsync = buffer.mapAsync
  const createBuffer = device.createBuffer
  let reads = 0
  const created: number[] = []
  buffer.mapAsync = function (this: GPUBuffer, ...args: Parameters<GPUBuffer["mapAsync"]>) {
    reads++
    return mapAsync.apply(this, args)
  }
  device.createBuffer = function (this: GPUDevice, descriptor: GPUBufferDescriptor) {
    created.push(descriptor.size)
    return createBuffer.call(this, descriptor)
  }
  return {
    reads: () => reads,
    created: () => created,
    restore: () => {
      buffer.mapAsync = mapAsync
      device.createBuffer = createBuffer
    },
  }
}

let oracleReady: Promise<ort.InferenceSession> | undefined
/** The no-cache oracle on the wasm EP (nothing on the GPU). */
const oracleSession = () =>
  (oracleReady ??= ort.InferenceSession.create(noCacheDecoder(cfg), {
    executionProviders: ["wasm"],
  }))

/**
 * A WebGPU session of `bytes` with the KV outputs kept in GPU buffers and `logits` where asked,
 * wrapped so that its runs are counted.
 */
async function gpuSession(
  bytes: Uint8Array,
  logits: "cpu" | "gpu-buffer",
): Promise<{ session: OrtSession; runs: () => number; release: () => Promise<void> }> {
  const inner = await ort.InferenceSession.create(bytes, {
    executionProviders: ["webgpu"],
    preferredOutputLocation: {
      logits,
      ...Object.fromEntries(PRESENT.map((n) => [n, "gpu-buffer" as const])),
    },
  })
  let runs = 0
  const session: OrtSession = {
    inputNames: inner.inputNames,
    outputNames: inner.outputNames,
    inputMetadata: inner.inputMetadata,
    outputMetadata: inner.outputMetadata,
    run: ((...args: Parameters<ort.InferenceSession["run"]>) => {
      runs++
      return inner.run(...args)
    }) as OrtSession["run"],
  }
  return { session, runs: () => runs, release: () => inner.release() }
}

/** A counted WebGPU session of `bytes`, the oracle, and a backend on ONNX Runtime's device. */
async function onGpu(bytes: Uint8Array, logits: "cpu" | "gpu-buffer") {
  const gpu = await gpuSession(bytes, logits)
  const oracle = await oracleSession()
  const device = await ort.env.webgpu.device
  const backend = ortBackend({ ort, location: "gpu-buffer", device }) as OrtBackend
  return { gpu, oracle, backend }
}

/**
 * A StatefulSession on the GPU and each row's history (the tokens its cache holds). `step`
 * feeds one chunk per row; `check` compares logits read on the host with the oracle on each
 * row's history alone and returns the largest difference so far.
 */
async function harness(bytes: Uint8Array, cache: KvCacheOptions, logits: "cpu" | "gpu-buffer") {
  const { gpu, oracle, backend } = await onGpu(bytes, logits)
  const s = orThrow(
    createStatefulSession({
      session: gpu.session,
      backend,
      batchSize: 2,
      cache,
      outputs: ["logits"],
    }),
  ) as StatefulSession<"logits">
  let history: number[][] = [[], []]
  let worst = 0
  const check = async (got: Float32Array, hist: readonly number[][], n: number) => {
    const expected = await oracleLogits(ort, oracle, hist)
    hist.forEach((h, r) => {
      const want = expected[r] as Float32Array
      for (let i = 0; i < n * V; i++) {
        const g = got[r * n * V + i] as number
        worst = Math.max(worst, Math.abs(g - (want[(h.length - n) * V + i] as number)))
      }
    })
    return worst
  }
  /** Runs one chunk per row; resolves to the logits tensor (the caller's) and the history after. */
  const run = async (chunk: readonly (readonly number[])[]) => {
    const n = chunk[0]?.length ?? 0
    const ids = new ort.Tensor("int64", BigInt64Array.from(chunk.flat(), BigInt), [chunk.length, n])
    const out = orThrow(await s.run({ input_ids: ids }))
    history = history.map((h, r) => [...h, ...(chunk[r] as number[])])
    return { logits: out.logits as OrtTensor, history: history.map((h) => [...h]), n }
  }
  /** Runs a chunk and checks its logits now. */
  const step = async (chunk: readonly (readonly number[])[]) => {
    const { logits: t, history: hist, n } = await run(chunk)
    await check((await t.getData()) as Float32Array, hist, n)
    t.dispose()
  }
  /** One new token per row, seeded by `t`. */
  const next = (t: number) => history.map((_, r) => tokens(1, 1000 * (r + 1) + t))
  return {
    s,
    backend,
    gpu,
    run,
    step,
    check,
    next,
    history: () => history,
    setHistory: (h: number[][]) => {
      history = h
    },
    worst: () => worst,
  }
}

type Harness = Awaited<ReturnType<typeof harness>>

/**
 * Rows at different lengths: a 5-token prefill, row 1 reset and restarted, a fresh row joining
 * with `select`; every step checked against the oracle.
 */
async function mixedLengths(h: Harness): Promise<void> {
  await h.step([tokens(5, 1), tokens(5, 2)])
  for (let t = 0; t < 3; t++) await h.step(h.next(t))
  orThrow(h.s.reset([1]))
  h.setHistory([h.history()[0] as number[], []])
  for (let t = 3; t < 6; t++) await h.step(h.next(t))
  orThrow(h.s.select([0, 1, null]))
  h.setHistory([...h.history(), []])
  for (let t = 6; t < 11; t++) await h.step(h.next(t))
  expect(h.history().map((x) => x.length)).toEqual([16, 8, 5])
}

/** Bytes of one cache leaf of `batch` rows at `positions` positions. */
const kvBytes = (batch: number, positions = CAPACITY) => batch * H * positions * D * 4

describe("fixed-capacity KV cache on WebGPU", () => {
  for (const logits of ["cpu", "gpu-buffer"] as const)
    it(`logits to ${logits}: rows at different lengths equal the oracle at every step; 100 steady tokens create no cache-sized buffer and copy only the new positions`, async () => {
      const h = await harness(fixedCacheDecoder(cfg), { kind: "fixed", capacity: CAPACITY }, logits)
      const joining = countGpu()
      try {
        await mixedLengths(h)
      } finally {
        joining.restore()
      }
      // The counter sees the cache-sized buffers select allocates for the new batch.
      expect(joining.created().filter((size) => size >= kvBytes(3)).length).toBeGreaterThanOrEqual(
        PAST.length,
      )
      for (const name of PAST) {
        const t = h.s.state()[name] as OrtTensor
        expect(t.location).toBe("gpu-buffer")
        expect(t.dims).toEqual([3, H, CAPACITY, D])
      }
      expect(h.s.state()["cache_length"]?.location).toBe("cpu")
      const held: { logits: OrtTensor; history: number[][]; n: number }[] = []
      const counter = countGpu()
      const runsBefore = h.gpu.runs()
      const copiedBefore = h.backend.bytesCopied()
      try {
        for (let t = 0; t < 100; t++) {
          const ran = await h.run(h.next(100 + t))
          // On the CPU, ORT downloaded them in the run: checked now. On the GPU, they are read
          // after the counted window, so that any read in it would be statesaver's.
          if (logits === "cpu") {
            await h.check(ran.logits.data as Float32Array, ran.history, ran.n)
            ran.logits.dispose()
          } else held.push(ran)
        }
      } finally {
        counter.restore()
      }
      const copied = (h.backend.bytesCopied() - copiedBefore) / 100
      expect(h.gpu.runs() - runsBefore).toBe(100)
      const big = counter.created().filter((size) => size >= kvBytes(3))
      const sizes = new Map<number, number>()
      for (const x of counter.created()) sizes.set(x, (sizes.get(x) ?? 0) + 1)
      console.log(
        `fixed cache, logits to ${logits}, 100 tokens at batch 3 (KV leaf ${kvBytes(3)} B): createBuffer ${counter.created().length / 100} per token (${[...sizes].map(([k, v]) => `${v}x${k} B`).join(", ")}), >= the KV leaf: ${big.length}; mapAsync ${counter.reads() / 100} per token; statesaver copied ${copied} B per token`,
      )
      expect(big).toEqual([])
      // Each token's keys and values, one position per row and leaf: nothing else moves.
      expect(copied).toBe(PAST.length * kvBytes(3, 1))
      // Reads: none by statesaver. With logits to the CPU, ORT downloads them once per run.
      expect(counter.reads()).toBe(logits === "cpu" ? 100 : 0)
      if (logits === "gpu-buffer") {
        for (const { logits: t, history, n } of held) {
          await h.check((await t.getData()) as Float32Array, history, n)
          t.dispose()
        }
      }
      expect(h.worst()).toBeLessThanOrEqual(TOL)
      expect(h.history().map((x) => x.length)).toEqual([116, 108, 105])

      // Row 0 holds 116 of 128 positions: 13 more are refused before anything runs.
      const reading = countGpu()
      let before: Uint8Array
      let after: Uint8Array
      try {
        before = orThrow(await h.s.snapshot())
        const over = await h.s.run({
          input_ids: new ort.Tensor("int64", new BigInt64Array(3 * 13), [3, 13]),
        })
        expect(over).toMatchObject({
          _tag: "Left",
          left: { _tag: "ShapeMismatchError", path: "cache_length", actual: CAPACITY + 1 },
        })
        expect((over as { left: Error }).left.message).toContain("capacity")
        after = orThrow(await h.s.snapshot())
      } finally {
        reading.restore()
      }
      expect(h.gpu.runs() - runsBefore).toBe(100)
      // The counter sees the snapshots' reads of the cache (so a read in a step would show).
      expect(reading.reads()).toBeGreaterThanOrEqual(2 * PAST.length)
      expect(after).toEqual(before)
      // 12 more fill row 0 to the capacity exactly.
      await h.step(h.history().map((_, r) => tokens(12, 2000 + r)))
      expect(Array.from(h.s.state()["cache_length"]?.data as Int32Array)).toEqual([128, 120, 117])
      expect(h.worst()).toBeLessThanOrEqual(TOL)
      h.s.dispose()
      expect(h.backend.liveGpuBuffers()).toBe(0)
      await h.gpu.release()
    }, 300_000)
})

// Optimum's merged layout (`use_cache_branch` chooses, inside the model, between the cache and
// none) over a preallocated cache: the session derives the flag, off while every row is empty.
describe("merged decoder over a fixed-capacity cache on WebGPU", () => {
  it("use_cache_branch derived: a right-padded prompt (flag off) rewound and a row reset mid-flight equal the oracle at every step; 100 steady tokens read nothing back and create no cache-sized buffer", async () => {
    const h = await harness(
      mergedFixedDecoder(cfg),
      { kind: "fixed", capacity: CAPACITY },
      "gpu-buffer",
    )
    expect(h.gpu.session.inputNames).toContain("use_cache_branch")
    const lengths = () => Array.from(h.s.state()["cache_length"]?.data as Int32Array)
    // Prompts of 5 and 3 tokens, row 1 right-padded to 5, then rewound by its 2 pads.
    await h.step([tokens(5, 11), [...tokens(3, 12), 0, 0]])
    orThrow(h.s.rewind([1], 2))
    h.setHistory([h.history()[0] as number[], (h.history()[1] as number[]).slice(0, 3)])
    for (let t = 0; t < 3; t++) await h.step(h.next(t))
    // Row 1 starts over while row 0 goes on.
    orThrow(h.s.reset([1]))
    h.setHistory([h.history()[0] as number[], []])
    for (let t = 3; t < 6; t++) await h.step(h.next(t))
    expect(lengths()).toEqual([11, 3])
    for (const name of PAST) {
      const t = h.s.state()[name] as OrtTensor
      expect(t.location).toBe("gpu-buffer")
      expect(t.dims).toEqual([2, H, CAPACITY, D])
    }
    const held: { logits: OrtTensor; history: number[][]; n: number }[] = []
    const counter = countGpu()
    const runsBefore = h.gpu.runs()
    const copiedBefore = h.backend.bytesCopied()
    const liveBefore = h.backend.liveGpuBuffers()
    try {
      // Logits stay on the GPU and are read after the counted window.
      for (let t = 0; t < 100; t++) held.push(await h.run(h.next(100 + t)))
    } finally {
      counter.restore()
    }
    const copied = (h.backend.bytesCopied() - copiedBefore) / 100
    expect(h.gpu.runs() - runsBefore).toBe(100)
    expect(h.backend.liveGpuBuffers()).toBe(liveBefore)
    const big = counter.created().filter((size) => size >= kvBytes(2))
    const sizes = new Map<number, number>()
    for (const x of counter.created()) sizes.set(x, (sizes.get(x) ?? 0) + 1)
    for (const { logits: t, history, n } of held) {
      await h.check((await t.getData()) as Float32Array, history, n)
      t.dispose()
    }
    console.log(
      `merged decoder, fixed cache, logits to gpu-buffer, 100 tokens at batch 2 (KV leaf ${kvBytes(2)} B): mapAsync ${counter.reads() / 100} per token; createBuffer ${counter.created().length / 100} per token (${[...sizes].map(([k, v]) => `${v}x${k} B`).join(", ") || "none"}), >= the KV leaf: ${big.length}; statesaver copied ${copied} B per token; max |logit - oracle| ${h.worst()}`,
    )
    expect(counter.reads()).toBe(0)
    expect(big).toEqual([])
    expect(copied).toBe(PAST.length * kvBytes(2, 1))
    expect(h.worst()).toBeLessThanOrEqual(TOL)
    expect(lengths()).toEqual([111, 103])
    expect(h.history().map((x) => x.length)).toEqual([111, 103])
    h.s.dispose()
    expect(h.backend.liveGpuBuffers()).toBe(0)
    await h.gpu.release()
  }, 300_000)
})

describe("many conversations over a fixed-capacity cache on WebGPU (StreamingSession)", () => {
  it("conversations out of their rows' order equal the oracle; after one move, 50 tokens read nothing back and create no cache-sized buffer", async () => {
    const { gpu, oracle, backend } = await onGpu(fixedCacheDecoder(cfg), "gpu-buffer")
    const chats = orThrow(
      createStreamingSession({
        session: gpu.session,
        ort,
        backend,
        capacity: 4,
        cache: { kind: "fixed", capacity: CAPACITY },
        outputs: ["logits"],
      }),
    ) as StreamingSession<"logits">
    const history = new Map<string, number[]>()
    let worst = 0
    /** One chunk per conversation in one run; the logits (on the GPU) checked against the oracle. */
    const step = async (chunks: readonly (readonly [string, readonly number[]])[]) => {
      const n = chunks[0]?.[1].length ?? 0
      const outs = orThrow(
        await chats.run(
          chunks.map(([key, chunk]) => ({
            key,
            feeds: {
              input_ids: new ort.Tensor("int64", BigInt64Array.from(chunk, BigInt), [1, n]),
            },
          })),
        ),
      )
      for (const [key, chunk] of chunks) history.set(key, [...(history.get(key) ?? []), ...chunk])
      return { outs, n, hist: chunks.map(([key]) => [...(history.get(key) as number[])]) }
    }
    const check = async (ran: Awaited<ReturnType<typeof step>>, keys: readonly string[]) => {
      const expected = await oracleLogits(ort, oracle, ran.hist)
      for (const [i, key] of keys.entries()) {
        const t = ran.outs.get(key)?.logits as OrtTensor
        const got = (await t.getData()) as Float32Array
        const want = expected[i] as Float32Array
        const T = (ran.hist[i] as number[]).length
        for (let j = 0; j < ran.n * V; j++)
          worst = Math.max(
            worst,
            Math.abs((got[j] as number) - (want[(T - ran.n) * V + j] as number)),
          )
        t.dispose()
      }
    }
    const run = async (keys: readonly string[], n: number, seed: number) => {
      const ran = await step(keys.map((k, i) => [k, tokens(n, seed + i)] as const))
      await check(ran, keys)
    }
    await run(["a", "b", "c"], 3, 1)
    /**
     * `steps` tokens of `keys` after one untimed token, the tokens as one batch and the logits
     * as one tensor (`runBatch`: a call of `run` reads a GPU output back to split it): what they
     * created, read and copied, checked against the oracle afterwards.
     */
    const steady = async (keys: readonly string[], steps: number, seed: number) => {
      await run(keys, 1, seed)
      const counter = countGpu()
      const copiedBefore = backend.bytesCopied()
      const held: { logits: OrtTensor; hist: number[][] }[] = []
      try {
        for (let t = 0; t < steps; t++) {
          const chunk = keys.map((_, i) => tokens(1, seed + 100 * (t + 1) + i))
          const ids = new ort.Tensor("int64", BigInt64Array.from(chunk.flat(), BigInt), [
            keys.length,
            1,
          ])
          const { logits } = orThrow(await chats.runBatch(keys, { input_ids: ids }))
          for (const [i, k] of keys.entries())
            history.set(k, [...(history.get(k) ?? []), ...(chunk[i] as number[])])
          held.push({ logits, hist: keys.map((k) => [...(history.get(k) as number[])]) })
        }
      } finally {
        counter.restore()
      }
      for (const { logits, hist } of held) {
        const got = (await logits.getData()) as Float32Array
        const expected = await oracleLogits(ort, oracle, hist)
        for (const [i, h] of hist.entries()) {
          const want = expected[i] as Float32Array
          for (let j = 0; j < V; j++)
            worst = Math.max(
              worst,
              Math.abs((got[i * V + j] as number) - (want[(h.length - 1) * V + j] as number)),
            )
        }
        logits.dispose()
      }
      const copied = (backend.bytesCopied() - copiedBefore) / steps
      const big = counter.created().filter((size) => size >= kvBytes(1))
      console.log(
        `StreamingSession, fixed cache, ${keys.join(", ")} of 4 rows (KV slab ${kvBytes(4)} B): createBuffer ${counter.created().length / steps} per token, >= one conversation's KV: ${big.length}; mapAsync ${counter.reads() / steps} per token; statesaver copied ${copied} B per token`,
      )
      expect(big).toEqual([])
      expect(counter.reads()).toBe(0)
      // Each token's keys and values, one position per conversation and leaf.
      expect(copied).toBe(PAST.length * kvBytes(keys.length, 1))
    }
    // a leaves: b and c lie in order from the slab's second row, which a GPU tensor cannot
    // start at; they move to its first rows.
    orThrow(chats.delete("a"))
    await steady(["b", "c"], 10, 30)
    // d joins in a free row, alone; then d, c, b run together, in no order of their rows.
    await run(["d"], 2, 10)
    await steady(["d", "c", "b"], 50, 40)
    expect(worst).toBeLessThanOrEqual(TOL)
    chats.dispose()
    expect(backend.liveGpuBuffers()).toBe(0)
    await gpu.release()
  })
})

describe("growing KV cache on WebGPU", () => {
  it("rows at different lengths equal the oracle at every step; buffers created per token reported", async () => {
    const h = await harness(growingDecoder(cfg), { kind: "growing" }, "cpu")
    await mixedLengths(h)
    const perToken: { all: number; big: number }[] = []
    for (let t = 0; t < 30; t++) {
      const past = h.s.dims()["past_sequence_length"] as number
      const counter = countGpu()
      try {
        await h.step(h.next(100 + t))
      } finally {
        counter.restore()
      }
      const created = counter.created()
      perToken.push({
        all: created.length,
        big: created.filter((size) => size >= kvBytes(3, past + 1)).length,
      })
    }
    for (const name of PAST) expect(h.s.state()[name]?.location).toBe("gpu-buffer")
    expect(h.s.dims()).toEqual({ past_sequence_length: 46 })
    const mean = (xs: readonly number[]) => (xs.reduce((a, b) => a + b, 0) / xs.length).toFixed(2)
    console.log(
      `growing cache, logits to cpu, 30 tokens at batch 3 (cache length 16 -> 46): createBuffer ${mean(perToken.map((c) => c.all))} per token, of which >= the KV leaf ${mean(perToken.map((c) => c.big))} per token (by token: ${perToken.map((c) => c.big).join(" ")})`,
    )
    expect(h.worst()).toBeLessThanOrEqual(TOL)
    h.s.dispose()
    expect(h.backend.liveGpuBuffers()).toBe(0)
    await h.gpu.release()
  }, 300_000)
})
