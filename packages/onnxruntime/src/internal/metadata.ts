import type * as common from "onnxruntime-common"

/** Input or output metadata of a session. */
export type Metadata = common.InferenceSession.ValueMetadata

const UNKNOWN = 4294967295

/** An unnamed dynamic dim: 4294967295 on onnxruntime-web, "" on onnxruntime-node. */
export const isUnknown = (d: number | string): boolean =>
  d === "" || (typeof d === "number" && (d === UNKNOWN || d < 0))

/**
 * The batch axis of a non-state input or output from its metadata: the dim named `batchDim`,
 * else the first dim of unknown size (Silero's `input [?, ?]`); `null` when it has neither (a
 * per-call value such as a sample rate, or a fixed-shape constant).
 */
export function metadataBatchAxis(meta: Metadata | undefined, batchDim: string): number | null {
  if (meta === undefined || !meta.isTensor) return null
  const named = meta.shape.indexOf(batchDim)
  if (named >= 0) return named
  const unknown = meta.shape.findIndex(isUnknown)
  return unknown >= 0 ? unknown : null
}
