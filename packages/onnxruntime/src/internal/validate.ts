// Checks of the values users hand to the package's public calls: every bad value becomes a typed
// StateError naming the option or feed, before anything is allocated, run or changed.
import { DisposedError, OptionError, StructureMismatchError, formatPath } from "@statesaver/core"
import type * as common from "onnxruntime-common"
import * as E from "./either.js"

type OrtTensor = common.Tensor

/** A plain record (an object literal or a null-prototype object), not an array, Map or class instance. */
export function isRecord(x: unknown): x is Readonly<Record<string, unknown>> {
  if (typeof x !== "object" || x === null || Array.isArray(x)) return false
  const proto = Object.getPrototypeOf(x) as unknown
  return proto === Object.prototype || proto === null
}

/** An options bag: any non-null object that is not an array. */
export function isOptions(x: unknown): x is Readonly<Record<string, unknown>> {
  return typeof x === "object" && x !== null && !Array.isArray(x)
}

/** Any non-null object or function (a module namespace, a class instance, a record). */
export const isObject = (x: unknown): x is object =>
  (typeof x === "object" && x !== null) || typeof x === "function"

/**
 * An ONNX Runtime tensor, recognised by shape (`dims`, `type`, `location`, `dispose`) rather than
 * by class, so that tensors of any build of `onnxruntime-common` pass.
 */
export function isOrtTensor(x: unknown): x is OrtTensor {
  if (typeof x !== "object" || x === null) return false
  const t = x as Partial<Record<"dims" | "type" | "location" | "dispose", unknown>>
  return (
    Array.isArray(t.dims) &&
    typeof t.type === "string" &&
    typeof t.location === "string" &&
    typeof t.dispose === "function"
  )
}

/** Own enumerable keys of a record that may hold `__proto__` as data. */
export const own = (o: object, key: string): boolean => Object.prototype.hasOwnProperty.call(o, key)

/**
 * Checks a record of feeds: a plain object whose values are live ORT tensors. `where` is the
 * path of the record itself (or makes it, for an error only), `at(name)` the path of one feed.
 */
export function checkFeedRecord(
  feeds: unknown,
  where: string | (() => string),
  at: (name: string) => string,
  what = "feeds: a record of ORT tensors by input name",
): E.Either<StructureMismatchError | DisposedError, Readonly<Record<string, OrtTensor>>> {
  if (!isRecord(feeds)) {
    const path = typeof where === "string" ? where : where()
    return E.left(new StructureMismatchError({ path, expected: what, actual: feeds }))
  }
  for (const name of Object.keys(feeds)) {
    const t = feeds[name]
    if (!isOrtTensor(t)) {
      return E.left(
        new StructureMismatchError({
          path: at(name),
          expected: "an ONNX Runtime Tensor",
          actual: t,
        }),
      )
    }
    if (t.location === "none") return E.left(new DisposedError({ what: "Tensor", path: at(name) }))
  }
  return E.right(feeds as Readonly<Record<string, OrtTensor>>)
}

/** `undefined` or a plain record, else an OptionError at `path`. */
export function optionalRecord(
  value: unknown,
  path: string,
  expected: string,
): E.Either<OptionError, Readonly<Record<string, unknown>> | undefined> {
  if (value === undefined || isRecord(value)) return E.right(value)
  return E.left(new OptionError({ path, expected, actual: value }))
}

/** The path of key `key` of option `option`: `pairs.hn`, `init["initial_h.0"]`. */
export const optionPath = (option: string, key: string): string => formatPath([option, key])

/** An array of strings, else an OptionError at `path`. */
export function checkNames(value: unknown, path: string): E.Either<OptionError, readonly string[]> {
  if (!Array.isArray(value))
    return E.left(new OptionError({ path, expected: "an array of names", actual: value }))
  const at = value.findIndex((n) => typeof n !== "string")
  if (at >= 0) {
    return E.left(
      new OptionError({ path: `${path}[${at}]`, expected: "a name (a string)", actual: value[at] }),
    )
  }
  return E.right(value as readonly string[])
}

/** A record of strings (`pairs`: output name → input name), else an OptionError. */
export function checkNameMap(
  value: unknown,
  option: string,
): E.Either<OptionError, Readonly<Record<string, string>>> {
  if (value === undefined) return E.right({})
  if (!isRecord(value)) {
    return E.left(
      new OptionError({
        path: option,
        expected: "a record of input names by output name",
        actual: value,
      }),
    )
  }
  for (const key of Object.keys(value)) {
    if (typeof value[key] !== "string") {
      return E.left(
        new OptionError({
          path: optionPath(option, key),
          expected: "an input name (a string)",
          actual: value[key],
        }),
      )
    }
  }
  return E.right(value as Readonly<Record<string, string>>)
}
