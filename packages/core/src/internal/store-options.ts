import { OptionError } from "../errors.js"
import * as E from "./either.js"
import { checkBackendOption } from "./options.js"

/** What `onEvict` is called with. */
export type EvictCallback = (
  key: string | number,
  snapshot: Uint8Array,
  reason: "capacity" | "idle",
) => void | Promise<void>

/** A store's options after checking: defaults applied, every value of the right type. */
export interface StoreLimits {
  readonly capacity: number
  readonly initialSlots: number
  readonly idleTtlMs: number | undefined
  readonly onEvict: EvictCallback | undefined
  readonly clock: (() => number) | undefined
}

const positiveInteger = (x: unknown): x is number =>
  typeof x === "number" && Number.isSafeInteger(x) && x >= 1

/**
 * Checks `createStateStore`'s options other than the spec, in the order they are documented;
 * each failure is an `OptionError` whose `path` is the option and whose `actual` is the value as
 * given.
 */
export function checkStoreOptions(options: unknown): E.Either<OptionError, StoreLimits> {
  const bad = checkBackendOption(options)
  if (bad) return E.left(bad)
  const o = options as Record<string, unknown>
  const capacity = o["capacity"] === undefined ? Number.POSITIVE_INFINITY : o["capacity"]
  if (!(positiveInteger(capacity) || capacity === Number.POSITIVE_INFINITY)) {
    return E.left(
      new OptionError({
        path: "capacity",
        expected: "a positive integer (or Infinity for no limit)",
        actual: o["capacity"],
      }),
    )
  }
  const initialSlots = o["initialSlots"] === undefined ? 8 : o["initialSlots"]
  if (!positiveInteger(initialSlots)) {
    return E.left(
      new OptionError({
        path: "initialSlots",
        expected: "a positive integer",
        actual: o["initialSlots"],
      }),
    )
  }
  const ttl = o["idleTtlMs"]
  if (ttl !== undefined && !(typeof ttl === "number" && ttl >= 0)) {
    return E.left(
      new OptionError({
        path: "idleTtlMs",
        expected: "a number of milliseconds >= 0 (Infinity: never idle)",
        actual: ttl,
      }),
    )
  }
  const onEvict = o["onEvict"]
  if (onEvict !== undefined && typeof onEvict !== "function") {
    return E.left(
      new OptionError({
        path: "onEvict",
        expected: "a function (key, snapshot, reason) => void | Promise<void>",
        actual: onEvict,
      }),
    )
  }
  const clock = o["clock"]
  if (clock !== undefined && typeof clock !== "function") {
    return E.left(
      new OptionError({
        path: "clock",
        expected: "a function returning milliseconds",
        actual: clock,
      }),
    )
  }
  return E.right({
    capacity,
    initialSlots: Math.min(initialSlots, capacity),
    // An infinite TTL never evicts: the same as none, and no clock reads.
    idleTtlMs: ttl === Number.POSITIVE_INFINITY ? undefined : ttl,
    onEvict: onEvict as EvictCallback | undefined,
    clock: clock as (() => number) | undefined,
  })
}
