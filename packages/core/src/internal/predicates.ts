/**
 * `Array.isArray` and `Object.hasOwn`, by their short names, for the checks off the hot path (a
 * call through an imported binding is not inlined as the built-in is).
 */
export const { isArray } = Array
export const { hasOwn } = Object

/** True for a record whose prototype is `Object.prototype` or `null`. */
export function isPlainRecord(x: unknown): x is Record<string, unknown> {
  if (!x || typeof x !== "object" || Array.isArray(x)) return false
  const proto: unknown = Object.getPrototypeOf(x)
  return proto === Object.prototype || proto === null
}

/** A size or count: a non-negative safe integer. */
export const isSize = (x: unknown): x is number =>
  typeof x === "number" && Number.isSafeInteger(x) && x >= 0

/** A non-empty string: a dim name, a batch dim. */
export const isName = (x: unknown): x is string => typeof x === "string" && x !== ""
