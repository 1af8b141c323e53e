import { OptionError } from "@statesaver/core"
import type * as common from "onnxruntime-common"
import * as E from "./either.js"

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

/**
 * Checks a session's `inputMetadata` / `outputMetadata`: an array of entries each with a string
 * `name`, and for tensors a string `type` and an array `shape`.
 */
export function checkMetadata(
  value: unknown,
  path: string,
): E.Either<OptionError, readonly Metadata[]> {
  const expected = "an array of value metadata ({ name, isTensor, type, shape })"
  if (!Array.isArray(value)) return E.left(new OptionError({ path, expected, actual: value }))
  for (let i = 0; i < value.length; i++) {
    const m: unknown = value[i]
    const ok =
      typeof m === "object" &&
      m !== null &&
      typeof (m as { name?: unknown }).name === "string" &&
      (!(m as { isTensor?: unknown }).isTensor ||
        (typeof (m as { type?: unknown }).type === "string" &&
          Array.isArray((m as { shape?: unknown }).shape)))
    if (!ok) {
      return E.left(
        new OptionError({
          path: `${path}[${i}]`,
          expected: "value metadata ({ name, isTensor, type, shape })",
          actual: m,
        }),
      )
    }
  }
  return E.right(value as readonly Metadata[])
}
