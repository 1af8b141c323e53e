import type * as E from "fp-ts/lib/Either.js"

/**
 * Base class of every error statesaver returns or throws. Each carries the leaf `path` it is
 * about (`""` when it concerns the whole state), the `expected` and the `actual` value.
 *
 * @example
 * const result = saver.save(next)
 * if (result._tag === "Left") console.error(result.left.path, result.left.expected, result.left.actual)
 * @category errors
 * @since 0.1.0
 */
export abstract class StateError extends Error {
  abstract readonly _tag: string
  /** Path of the leaf concerned, as printed by `formatPath` (`[1].c`); `""` for the whole state. */
  readonly path: string
  readonly expected: unknown
  readonly actual: unknown

  constructor(message: string, path: string, expected: unknown, actual: unknown, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause })
    this.path = path
    this.expected = expected
    this.actual = actual
  }

  override get name(): string {
    return this._tag
  }
}

const where = (path: string): string => (path === "" ? "state" : `leaf ${path}`)
const show = (x: unknown): string => {
  if (typeof x === "string") return x
  if (typeof x === "bigint") return `${x}n`
  try {
    return JSON.stringify(x, (_k, v: unknown) => (typeof v === "bigint" ? `${v}n` : v)) ?? String(x)
  } catch {
    return String(x)
  }
}

/**
 * Two trees do not have the same structure (a missing key, an extra key, a leaf where a
 * container was expected, arrays of different lengths).
 *
 * @category errors
 * @since 0.1.0
 */
export class StructureMismatchError extends StateError {
  readonly _tag = "StructureMismatchError"
  constructor(path: string, expected: unknown, actual: unknown) {
    super(`${where(path)}: expected ${show(expected)}, got ${show(actual)}`, path, expected, actual)
  }
}

/**
 * A leaf's shape differs from its spec (rank, a fixed dim, or a named dim that must agree
 * across leaves).
 *
 * @category errors
 * @since 0.1.0
 */
export class ShapeMismatchError extends StateError {
  readonly _tag = "ShapeMismatchError"
  constructor(path: string, expected: unknown, actual: unknown, detail?: string) {
    super(
      `${where(path)}: expected shape ${show(expected)}, got ${show(actual)}${detail === undefined ? "" : ` (${detail})`}`,
      path,
      expected,
      actual,
    )
  }
}

/**
 * A leaf's dtype differs from its spec, or the backend does not support the spec's dtype.
 *
 * @category errors
 * @since 0.1.0
 */
export class DTypeMismatchError extends StateError {
  readonly _tag = "DTypeMismatchError"
  constructor(path: string, expected: unknown, actual: unknown) {
    super(
      `${where(path)}: expected dtype ${show(expected)}, got ${show(actual)}`,
      path,
      expected,
      actual,
    )
  }
}

/**
 * A leaf's size along the batch axis differs from the saver's batch size.
 *
 * @category errors
 * @since 0.1.0
 */
export class BatchSizeMismatchError extends StateError {
  readonly _tag = "BatchSizeMismatchError"
  constructor(path: string, expected: number, actual: number, axis?: number) {
    super(
      `${where(path)}: expected batch size ${expected}${axis === undefined ? "" : ` on axis ${axis}`}, got ${actual}`,
      path,
      expected,
      actual,
    )
  }
}

/**
 * A row index or mask is out of range, not an integer, or of the wrong length.
 *
 * @category errors
 * @since 0.1.0
 */
export class RowIndexError extends StateError {
  readonly _tag = "RowIndexError"
  constructor(expected: string, actual: unknown, path = "") {
    super(`${where(path)}: expected ${expected}, got ${show(actual)}`, path, expected, actual)
  }
}

/**
 * The saver, store or tensor was disposed and can no longer be used.
 *
 * @category errors
 * @since 0.1.0
 */
export class DisposedError extends StateError {
  readonly _tag = "DisposedError"
  constructor(what: string, path = "") {
    super(`${what} was disposed${path === "" ? "" : ` (leaf ${path})`}`, path, "live", "disposed")
  }
}

/**
 * The same tensor appears at two leaves of a tree given to `save`; the saver would own it twice.
 *
 * @category errors
 * @since 0.1.0
 */
export class AliasedLeafError extends StateError {
  readonly _tag = "AliasedLeafError"
  constructor(path: string, otherPath: string) {
    super(
      `leaf ${path}: the same tensor is also given at leaf ${otherPath}; pass distinct tensors`,
      path,
      "a tensor not used at another leaf",
      `the tensor of leaf ${otherPath}`,
    )
  }
}

/**
 * A spec is invalid: an unknown dtype, a leaf without the batch dim, a bad init.
 *
 * @category errors
 * @since 0.1.0
 */
export class SpecError extends StateError {
  readonly _tag = "SpecError"
  constructor(path: string, expected: unknown, actual: unknown) {
    super(
      `spec ${where(path)}: expected ${show(expected)}, got ${show(actual)}`,
      path,
      expected,
      actual,
    )
  }
}

/**
 * A backend primitive threw. `cause` holds what it threw; `path` the leaf it was working on.
 *
 * @category errors
 * @since 0.1.0
 */
export class BackendError extends StateError {
  readonly _tag = "BackendError"
  readonly backend: string
  readonly operation: string
  constructor(backend: string, operation: string, path: string, cause: unknown) {
    const reason = cause instanceof Error ? cause.message : show(cause)
    super(
      `backend ${backend}: ${operation} failed on ${where(path)}: ${reason}`,
      path,
      `${operation} to succeed`,
      reason,
      cause,
    )
    this.backend = backend
    this.operation = operation
  }
}

/**
 * Snapshot bytes are truncated, oversized, malformed, or of an unknown format version.
 *
 * @category errors
 * @since 0.1.0
 */
export class SnapshotFormatError extends StateError {
  readonly _tag = "SnapshotFormatError"
  constructor(expected: string, actual: unknown, path = "") {
    super(
      `snapshot ${where(path)}: expected ${expected}, got ${show(actual)}`,
      path,
      expected,
      actual,
    )
  }
}

/**
 * A StateStore key is unknown, duplicated in one call, or not a string.
 *
 * @category errors
 * @since 0.1.0
 */
export class KeyError extends StateError {
  readonly _tag = "KeyError"
  constructor(expected: string, actual: unknown) {
    super(`key: expected ${expected}, got ${show(actual)}`, "", expected, actual)
  }
}

/**
 * Another operation is in flight on the same object (for instance a model run that has not
 * resolved), and this one would interleave with it.
 *
 * @category errors
 * @since 0.1.0
 */
export class BusyError extends StateError {
  readonly _tag = "BusyError"
  constructor(operation: string, inFlight: string) {
    super(`${operation}: ${inFlight} is still in flight`, "", "no operation in flight", inFlight)
  }
}

/**
 * Every error statesaver produces.
 *
 * @category errors
 * @since 0.1.0
 */
export type AnyStateError =
  | StructureMismatchError
  | ShapeMismatchError
  | DTypeMismatchError
  | BatchSizeMismatchError
  | RowIndexError
  | DisposedError
  | AliasedLeafError
  | SpecError
  | BackendError
  | SnapshotFormatError
  | KeyError
  | BusyError

/**
 * Result of every fallible call: an fp-ts `Either`. Read `result._tag === "Left"` or use `orThrow`.
 *
 * @category errors
 * @since 0.1.0
 */
export type Result<A, Err extends StateError = StateError> = E.Either<Err, A>

/**
 * Unwraps a `Right`, or throws the very error object held by a `Left`.
 *
 * @example
 * const saver = orThrow(createStateSaver({ spec, backend: hostBackend(), batchSize: 4 }))
 * @category errors
 * @since 0.1.0
 */
export function orThrow<Err, A>(result: E.Either<Err, A>): A {
  if (result._tag === "Left") throw result.left
  return result.right
}

/**
 * True for any error statesaver produces (checks the class, not only `_tag`).
 *
 * @category errors
 * @since 0.1.0
 */
export function isStateError(x: unknown): x is StateError {
  return x instanceof StateError
}
