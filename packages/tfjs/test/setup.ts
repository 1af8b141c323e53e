import { createRequire } from "node:module"
import { dirname } from "node:path"
import * as tf from "@tensorflow/tfjs"
import { setWasmPaths } from "@tensorflow/tfjs-backend-wasm"
import { mulberry32 } from "@statesaver/core/testing"

const require = createRequire(import.meta.url)
setWasmPaths(`${dirname(require.resolve("@tensorflow/tfjs-backend-wasm"))}/`)

/** Switches tfjs to `name` (cpu or wasm), failing loudly when it cannot initialize. */
export async function useBackend(name: "cpu" | "wasm"): Promise<void> {
  if (tf.getBackend() === name) return
  if (!(await tf.setBackend(name))) throw new Error(`tfjs backend ${name} failed to initialize`)
}

/** A seeded PRNG (mulberry32): deterministic data and windowings. */
export const rng = mulberry32

/** A `[b, t, f]` float32 tensor of seeded values in [-1, 1). */
export function randomInputs(shape: [number, number, number], seed: number): tf.Tensor3D {
  const next = rng(seed)
  return tf.tensor3d(
    Float32Array.from({ length: shape[0] * shape[1] * shape[2] }, () => next() * 2 - 1),
    shape,
  )
}

/** Random positive window lengths summing to `total`. */
export function randomWindows(total: number, seed: number): number[] {
  const next = rng(seed)
  const out: number[] = []
  let left = total
  while (left > 0) {
    const w = Math.min(left, 1 + Math.floor(next() * 5))
    out.push(w)
    left -= w
  }
  return out
}

/** Seeded initializers so models are reproducible. */
export const seeded = (seed: number) => ({
  kernelInitializer: tf.initializers.glorotUniform({ seed }),
  recurrentInitializer: tf.initializers.orthogonal({ seed: seed + 1 }),
  biasInitializer: tf.initializers.randomUniform({ minval: -0.1, maxval: 0.1, seed: seed + 2 }),
})

/** Max absolute difference between two tensors of one shape. */
export function maxDiff(a: tf.Tensor, b: tf.Tensor): number {
  return tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0] as number)
}
