/** What the decoder examples do with logits: log-probabilities, the best token, a no-cache run. */
import * as ort from "onnxruntime-node"

/** Natural-log softmax of one position's logits, in float64. */
export function logSoftmax(logits: Float32Array): Float64Array {
  const max = logits.reduce((a, b) => Math.max(a, b), -Infinity)
  const lse = max + Math.log(logits.reduce((s, x) => s + Math.exp(x - max), 0))
  return Float64Array.from(logits, (x) => x - lse)
}

/** The index of the largest value (the first among equals). */
export const argmax = (xs: ArrayLike<number>): number => {
  let best = 0
  for (let i = 1; i < xs.length; i++) if ((xs[i] as number) > (xs[best] as number)) best = i
  return best
}

/**
 * The same weights run without a cache (a model that takes `input_ids`, `attention_mask` and
 * `position_ids` only): next-token log-probabilities after each position of a sequence.
 */
export async function withoutCache(
  bytes: Uint8Array,
): Promise<(seq: readonly number[]) => Promise<Float64Array[]>> {
  const session = await ort.InferenceSession.create(bytes)
  return async (seq) => {
    const T = seq.length
    const int64 = (values: Iterable<number>) =>
      new ort.Tensor("int64", BigInt64Array.from(values, BigInt), [1, T])
    const out = await session.run({
      input_ids: int64(seq),
      attention_mask: int64(seq.map(() => 1)),
      position_ids: int64(seq.keys()),
    })
    const logits = out["logits"] as ort.Tensor
    const data = logits.data as Float32Array
    const V = data.length / T
    const rows = seq.map((_, t) => logSoftmax(data.subarray(t * V, (t + 1) * V)))
    logits.dispose()
    return rows
  }
}
