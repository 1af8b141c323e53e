// Positional shorthands for the errors built with `ErrorFields`: a call site reads
// `fail(SpecError, path, "a dtype", leaf.dtype)` instead of a named-fields literal, which keeps the
// many checks of a browser bundle short. The errors themselves are the same objects.
import type { ErrorFields } from "../errors.js"
import { type Either, left } from "./either.js"

/** A `new C({ path, expected, actual, detail })`. */
export const error = <C>(
  C: new (fields: ErrorFields) => C,
  path: string | undefined,
  expected: unknown,
  actual: unknown,
  detail?: string,
): C => new C({ path, expected, actual, detail })

/** A `Left` of `error(C, path, expected, actual, detail)`. */
export const fail = <C>(
  C: new (fields: ErrorFields) => C,
  path: string | undefined,
  expected: unknown,
  actual: unknown,
  detail?: string,
): Either<C, never> => left(new C({ path, expected, actual, detail }))
