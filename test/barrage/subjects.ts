// The three backends the barrage runs on, each with its live-tensor count and a probe that reads
// a tensor the caller passed (undefined once it is freed).
import * as tf from "@tensorflow/tfjs"
import * as ort from "onnxruntime-web"
import {
  HostTensor,
  type LeafContext,
  type StateBackend,
  type StateSpec,
  hostBackend,
  init,
} from "@statesaver/core"
import { ortBackend } from "@statesaver/onnxruntime"
import { tfjsBackend } from "@statesaver/tfjs"

/** Record and array nodes, batch axes 0 and 1, float32 and int32, a constant init. */
export const spec: StateSpec = {
  rnn: [
    { shape: ["batch", 3], dtype: "float32" },
    { shape: [2, "batch", 2], dtype: "float32", init: init.constant(0.5) },
  ],
  step: { shape: ["batch"], dtype: "int32" },
}

export interface Subject {
  readonly name: string
  readonly backend: StateBackend<unknown, unknown>
  readonly live: () => number
  /** A new tensor of this backend, as a caller would make it (`fromHost`). */
  readonly make: (host: HostTensor, ctx?: Partial<LeafContext>) => unknown
  /** Frees a tensor the way the framework's user would (not through statesaver). */
  readonly free: (x: unknown) => void
}

const ctxOf = (ctx: Partial<LeafContext> = {}): LeafContext => ({
  path: ctx.path ?? "",
  batchAxis: ctx.batchAxis ?? 0,
  init: ctx.init ?? init.zeros,
})

export async function subjects(): Promise<Subject[]> {
  await tf.setBackend("cpu")
  ort.env.wasm.numThreads = 1
  const host = hostBackend()
  const tfb = tfjsBackend()
  const orb = ortBackend({ ort: ort as never })
  return [
    {
      name: "host",
      backend: host as StateBackend<unknown, unknown>,
      live: () => host.liveTensors(),
      make: (h, ctx) => host.fromHost(h, ctxOf(ctx)),
      free: (x) => host.dispose(x as HostTensor),
    },
    {
      name: "tfjs (cpu)",
      backend: tfb as unknown as StateBackend<unknown, unknown>,
      live: () => tf.memory().numTensors,
      make: (h) =>
        tf.tensor(Array.from(h.data as Float32Array), [...h.shape], h.dtype as "float32"),
      free: (x) => (x as tf.Tensor).dispose(),
    },
    {
      name: "onnxruntime-web",
      backend: orb as unknown as StateBackend<unknown, unknown>,
      live: () => orb.liveTensors(),
      make: (h) => new ort.Tensor(h.dtype as "float32", h.data as Float32Array, [...h.shape]),
      free: (x) => (x as ort.Tensor).dispose(),
    },
  ]
}

/** Values of a tensor the caller holds, or undefined once it was freed. */
export async function probe(subject: Subject, x: unknown): Promise<string | undefined> {
  if (subject.name === "tfjs (cpu)") {
    const t = x as tf.Tensor
    return t.isDisposed ? undefined : `${t.dtype}${JSON.stringify(t.shape)}${String(t.dataSync())}`
  }
  if (subject.name === "onnxruntime-web") {
    const t = x as ort.Tensor
    try {
      return `${t.type}${JSON.stringify(t.dims)}${String(t.data as Float32Array)}`
    } catch {
      return undefined
    }
  }
  const t = x as HostTensor
  if (subject.backend.describe(t) === undefined) return undefined
  return `${t.dtype}${JSON.stringify(t.shape)}${String(t.data)}`
}

/** A host tensor of `shape` with distinct values (int32 or float32). */
export function distinct(
  dtype: "float32" | "int32",
  shape: readonly number[],
  seed = 1,
): HostTensor {
  const n = shape.reduce((a, b) => a * b, 1)
  return dtype === "int32"
    ? new HostTensor(
        "int32",
        shape,
        Int32Array.from({ length: n }, (_, i) => i * 7 - seed),
      )
    : new HostTensor(
        "float32",
        shape,
        Float32Array.from({ length: n }, (_, i) => i / 8 - seed),
      )
}
