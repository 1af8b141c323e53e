// Arrays a session lends for one call's stacked feeds and built-in rules' derived inputs: the
// runtime is done with them once the run is over, so the next call of the same session writes
// over them instead of allocating (and zeroing) tens of kilobytes per call.
import { type DType, type HostData, allocateData } from "@statesaver/core"

/** An array of `length` elements of `dtype` for `key`, whose contents are to be overwritten. */
export type Lend = (key: string, dtype: DType, length: number) => HostData

/** Where a built-in rule finds the session's lender on its `RuleCall` (not public API). */
export const SCRATCH: unique symbol = Symbol("statesaver.scratch")

/**
 * A lender keeping one array per key and dtype, lent whole or as its first `length` elements; a
 * longer one replaces it, with room to grow (a growing cache's mask is one position longer at
 * every step).
 */
export function scratchArrays(): Lend {
  // By key, then dtype: no id string built per call.
  const kept = new Map<string, Map<DType, HostData>>()
  return (key, dtype, length) => {
    let byType = kept.get(key)
    if (byType === undefined) kept.set(key, (byType = new Map()))
    const held = byType.get(dtype)
    if (held !== undefined && held.length >= length)
      return held.length === length ? held : (held.subarray(0, length) as HostData)
    const made = allocateData(
      dtype,
      held === undefined ? length : Math.max(length, 2 * held.length),
    )
    byType.set(dtype, made)
    return made.length === length ? made : (made.subarray(0, length) as HostData)
  }
}
