import { type Either, isLeft } from "./internal/either.js"
import { isArray } from "./internal/predicates.js"

/**
 * The fields every error constructor takes (one named-fields argument, as Effect's
 * `Data.TaggedError`): the leaf `path` (`""` or absent for the whole state), the `expected` and
 * the `actual` value, an optional `detail` sentence and an optional `cause`.
 *
 * @category errors
 * @since 0.2.0
 */
export interface ErrorFields {
  readonly path?: string | undefined
  readonly expected: unknown
  readonly actual: unknown
  readonly detail?: string | undefined
  readonly cause?: unknown
}

/**
 * Base class of every error statesaver returns or throws. Each carries the leaf `path` it is
 * about (`""` when it concerns the whole state), the `expected` and the `actual` value.
 *
 * @example
 * declare const result: Result<void>
 * if (result._tag === "Left") console.error(result.left.path, result.left.expected, result.left.actual)
 * @category errors
 * @since 0.1.0
 */
export abstract class StateError extends Error {
  abstract readonly _tag: string
  /** Path of the leaf concerned, as printed by `formatPath` (`[1].c`); `""` for the whole state. */
  declare readonly path: string
  declare readonly expected: unknown
  declare readonly actual: unknown
  /** An extra sentence on what differs, when there is one. */
  declare readonly detail: string | undefined

  constructor(message: string, fields: ErrorFields) {
    // `cause` is set only when the fields have one.
    super(message, fields)
    this.path = fields.path ?? ""
    this.expected = fields.expected
    this.actual = fields.actual
    this.detail = fields.detail
  }

  override get name(): string {
    return this._tag
  }
}

const where = (path: string | undefined): string => (path ? `leaf ${path}` : "state")
const tail = (detail: string | undefined): string => (detail === undefined ? "" : ` (${detail})`)

/**
 * Prints a value as the user gave it: strings quoted, NaN and Infinity as such, bigints with `n`,
 * typed arrays by type and length; long output is cut.
 */
export function showValue(x: unknown): string {
  const out = print(x, 0)
  return out.length > 200 ? `${out.slice(0, 197)}...` : out
}

function print(x: unknown, depth: number): string {
  const type = typeof x
  if (type === "string") return JSON.stringify(x)
  if (type === "bigint") return `${x as bigint}n`
  if (type === "function") {
    const { name } = x as () => unknown
    return name === "" ? "a function" : `function ${name}`
  }
  // Numbers, booleans, undefined, symbols and null.
  if (type !== "object" || x === null) return Object.is(x, -0) ? "-0" : String(x)
  if (ArrayBuffer.isView(x)) {
    const length = (x as { length?: unknown }).length
    return `${x.constructor.name}(${typeof length === "number" ? length : x.byteLength})`
  }
  const array = isArray(x)
  if (depth > 2) return array ? "[...]" : "{...}"
  const proto = Object.getPrototypeOf(x) as unknown
  if (!array && proto !== Object.prototype && proto !== null) {
    const name = (x as { constructor?: { name?: unknown } }).constructor?.name
    return typeof name === "string" && name !== "" ? `a ${name}` : "an object"
  }
  // An array lists its items, a record its `"key":value` entries; both stop after 16.
  const items: unknown[] = array ? x : Object.keys(x as object)
  const [open, close] = array ? "[]" : "{}"
  const shown = items
    .slice(0, 16)
    .map(
      (k) =>
        (array ? "" : `${JSON.stringify(k)}:`) +
        print(array ? k : (x as Record<string, unknown>)[k as string], depth + 1),
    )
  return `${open}${shown.join(",")}${items.length > 16 ? ",..." : ""}${close}`
}

/** A description is printed as written; any other value as the user gave it. */
const text = (x: unknown): string => (typeof x === "string" ? x : showValue(x))

/**
 * The message of most errors: `<head>: expected <label><expected>, got <actual> (<detail>)`.
 * `expected` is a description, printed as written; `actual` is printed as the user gave it, or
 * as written when `asText` (for errors whose actual is often a description).
 */
const line = (f: ErrorFields, label: string, asText?: boolean, head = where(f.path)): string =>
  `${head}: expected ${label}${text(f.expected)}, got ${asText ? text(f.actual) : showValue(f.actual)}${tail(f.detail)}`

/**
 * Two trees do not have the same structure (a missing key, an extra key, a leaf where a
 * container was expected, arrays of different lengths), or a value that must be a tree is not.
 *
 * @category errors
 * @since 0.1.0
 */
export class StructureMismatchError extends StateError {
  readonly _tag = "StructureMismatchError" as const
  constructor(fields: ErrorFields) {
    super(line(fields, "", true), fields)
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
  readonly _tag = "ShapeMismatchError" as const
  constructor(fields: ErrorFields) {
    super(line(fields, "shape "), fields)
  }
}

/**
 * A leaf's dtype differs from its spec, or the backend does not support the spec's dtype.
 *
 * @category errors
 * @since 0.1.0
 */
export class DTypeMismatchError extends StateError {
  readonly _tag = "DTypeMismatchError" as const
  constructor(fields: ErrorFields) {
    super(line(fields, "dtype ", true), fields)
  }
}

/**
 * A leaf's size along the batch axis differs from the saver's batch size.
 *
 * @category errors
 * @since 0.1.0
 */
export class BatchSizeMismatchError extends StateError {
  readonly _tag = "BatchSizeMismatchError" as const
  /** The axis of the leaf that holds the rows, when the error concerns one leaf. */
  declare readonly axis: number | undefined
  constructor(fields: ErrorFields & { readonly axis?: number }) {
    const head = where(fields.path)
    super(
      line(
        fields,
        "batch size ",
        false,
        fields.axis === undefined ? head : `${head}, axis ${fields.axis}`,
      ),
      fields,
    )
    this.axis = fields.axis
  }
}

/**
 * A row index or mask is out of range, not an integer, or of the wrong length.
 *
 * @category errors
 * @since 0.1.0
 */
export class RowIndexError extends StateError {
  readonly _tag = "RowIndexError" as const
  constructor(fields: ErrorFields) {
    super(line(fields, "", false, fields.path ? `leaf ${fields.path} rows` : "rows"), fields)
  }
}

/**
 * An option of a factory or a call is invalid (a capacity, a TTL, a window size, a callback).
 * `path` names the option.
 *
 * @category errors
 * @since 0.2.0
 */
export class OptionError extends StateError {
  readonly _tag = "OptionError" as const
  constructor(fields: ErrorFields) {
    super(line(fields, "", false, `option ${fields.path ?? ""}`), fields)
  }
}

/**
 * The saver, store, session or tensor was disposed and can no longer be used.
 *
 * @category errors
 * @since 0.1.0
 */
export class DisposedError extends StateError {
  readonly _tag = "DisposedError" as const
  /** What was disposed (`"StateSaver"`, `"HostTensor"`...). */
  declare readonly what: string
  constructor(fields: { readonly what: string; readonly path?: string }) {
    super(`${fields.what} was disposed${fields.path ? ` (leaf ${fields.path})` : ""}`, {
      path: fields.path,
      expected: "live",
      actual: "disposed",
    })
    this.what = fields.what
  }
}

/**
 * The same tensor appears at two leaves of a tree given to `save`; the saver would own it twice.
 *
 * @category errors
 * @since 0.1.0
 */
export class AliasedLeafError extends StateError {
  readonly _tag = "AliasedLeafError" as const
  /** The other leaf that holds the same tensor. */
  declare readonly otherPath: string
  constructor(fields: { readonly path: string; readonly otherPath: string }) {
    const all = {
      path: fields.path,
      expected: "a tensor not used at another leaf",
      actual: `the tensor of leaf ${fields.otherPath}`,
    }
    super(line(all, "", true), all)
    this.otherPath = fields.otherPath
  }
}

/**
 * A spec is invalid: an unknown dtype, a leaf without the batch dim, a bad init.
 *
 * @category errors
 * @since 0.1.0
 */
export class SpecError extends StateError {
  readonly _tag = "SpecError" as const
  constructor(fields: ErrorFields) {
    super(line(fields, "", false, `spec ${where(fields.path)}`), fields)
  }
}

/**
 * A backend primitive threw. `cause` holds what it threw; `path` the leaf it was working on.
 *
 * @category errors
 * @since 0.1.0
 */
export class BackendError extends StateError {
  readonly _tag = "BackendError" as const
  declare readonly backend: string
  declare readonly operation: string
  constructor(fields: {
    readonly backend: string
    readonly operation: string
    readonly path?: string
    readonly cause: unknown
    readonly detail?: string
  }) {
    const reason = fields.cause instanceof Error ? fields.cause.message : showValue(fields.cause)
    super(
      `backend ${fields.backend}: ${fields.operation} failed on ${where(fields.path)}: ${reason}${tail(fields.detail)}`,
      { ...fields, expected: `${fields.operation} to succeed`, actual: reason },
    )
    this.backend = fields.backend
    this.operation = fields.operation
  }
}

/**
 * Snapshot bytes are truncated, oversized, malformed, or of an unknown format version.
 *
 * @category errors
 * @since 0.1.0
 */
export class SnapshotFormatError extends StateError {
  readonly _tag = "SnapshotFormatError" as const
  constructor(fields: ErrorFields) {
    super(line(fields, "", true, `snapshot ${where(fields.path)}`), fields)
  }
}

/**
 * A StateStore key is unknown, duplicated in one call, or not a string or finite number.
 *
 * @category errors
 * @since 0.1.0
 */
export class KeyError extends StateError {
  readonly _tag = "KeyError" as const
  constructor(fields: ErrorFields) {
    super(line(fields, "", false, "key"), fields)
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
  readonly _tag = "BusyError" as const
  readonly operation: string
  constructor(fields: {
    readonly operation: string
    readonly inFlight: string
    readonly detail?: string
  }) {
    super(`${fields.operation}: ${fields.inFlight} is still in flight${tail(fields.detail)}`, {
      ...fields,
      expected: "no operation in flight",
      actual: fields.inFlight,
    })
    this.operation = fields.operation
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
  | OptionError
  | DisposedError
  | AliasedLeafError
  | SpecError
  | BackendError
  | SnapshotFormatError
  | KeyError
  | BusyError

/**
 * Errors of a check of given tensors against a spec: the tree's structure, each leaf's liveness,
 * aliasing, dtype, shape and batch size (`BackendError` when the backend's `describe` threw).
 *
 * @category errors
 * @since 0.2.0
 */
export type TensorCheckError =
  | StructureMismatchError
  | AliasedLeafError
  | DTypeMismatchError
  | ShapeMismatchError
  | BatchSizeMismatchError
  | BackendError

/**
 * Result of every fallible call: an fp-ts `Either`. Read `result._tag === "Left"` or use `orThrow`.
 *
 * @category errors
 * @since 0.1.0
 */
export type Result<A, Err extends StateError = AnyStateError> = Either<Err, A>

/**
 * Unwraps a `Right`, or throws the very error object held by a `Left`.
 *
 * @example
 * const saver = orThrow(createStateSaver({ spec, backend: hostBackend(), batchSize: 4 }))
 * @category errors
 * @since 0.1.0
 */
export function orThrow<Err, A>(result: Either<Err, A>): A {
  if (isLeft(result)) throw result.left
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
