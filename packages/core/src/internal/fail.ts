// Positional shorthands for the errors built with `ErrorFields`: a call site reads
// `fail(SpecError, path, "a dtype", leaf.dtype)` instead of a named-fields literal, which keeps the
// many checks of a browser bundle short. The errors themselves are the same objects.
import { type ErrorFields, SnapshotFormatError } from "../errors.js"
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
): Either<C, never> => left(error(C, path, expected, actual, detail))

/** A `Left` of a `SnapshotFormatError` (the many checks of snapshot decoding). */
export const failSnapshot = (
  expected: string,
  actual: unknown,
  path?: string,
): Either<SnapshotFormatError, never> => fail(SnapshotFormatError, path, expected, actual)
