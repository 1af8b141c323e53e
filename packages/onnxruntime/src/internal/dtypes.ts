import type { DType } from "@statesaver/core"

const SUPPORTED: ReadonlySet<string> = new Set([
  "float32",
  "float16",
  "int32",
  "int64",
  "uint8",
  "bool",
])

/** The core dtype of an ORT type string; other ORT types are returned as they are, so that a
 * spec check reports them as the actual dtype. */
export const dtypeOfOrt = (type: string): DType => type as DType

/** True when core can hold an ORT type. */
export const isSupportedOrtType = (type: string): boolean => SUPPORTED.has(type)

/** Bytes per element. */
export function byteSize(dtype: string): number {
  switch (dtype) {
    case "float32":
    case "int32":
    case "uint32":
      return 4
    case "float16":
    case "uint16":
    case "int16":
      return 2
    case "int64":
    case "uint64":
    case "float64":
      return 8
    default:
      return 1
  }
}
