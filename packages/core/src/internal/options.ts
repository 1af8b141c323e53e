import type { StateBackend } from "../backend.js"
import { DTypeMismatchError, OptionError } from "../errors.js"
import type { ResolvedSpec } from "../state-spec.js"

/** An `OptionError` unless `options` is an object with a backend that has the contract's primitives. */
export function checkBackendOption(options: unknown): OptionError | null {
  if (typeof options !== "object" || options === null) {
    return new OptionError({ path: "options", expected: "an options object", actual: options })
  }
  const backend = (options as { backend?: unknown }).backend
  const primitives = [
    "describe",
    "allocate",
    "gather",
    "scatter",
    "fill",
    "adopt",
    "toHost",
    "fromHost",
    "dispose",
  ]
  const b = backend as Record<string, unknown> | null
  const missing =
    typeof backend !== "object" || b === null
      ? "all"
      : primitives.find((k) => typeof b[k] !== "function")
  const caps = b?.["capabilities"] as { dtypes?: unknown } | undefined
  if (missing !== undefined || typeof caps !== "object" || !Array.isArray(caps.dtypes)) {
    return new OptionError({
      path: "backend",
      expected: "a StateBackend (describe, allocate, gather, ... and capabilities.dtypes)",
      actual: backend,
      ...(missing === undefined || missing === "all" ? {} : { detail: `no ${missing} function` }),
    })
  }
  return null
}

/** A `DTypeMismatchError` for the first leaf whose dtype the backend does not store. */
export function unsupportedDType<T, In>(
  backend: StateBackend<T, In>,
  spec: ResolvedSpec,
): DTypeMismatchError | null {
  for (const leaf of spec.leaves) {
    if (!backend.capabilities.dtypes.includes(leaf.dtype)) {
      return new DTypeMismatchError({
        path: leaf.pathString,
        expected: `one of the dtypes backend ${backend.name} stores (${backend.capabilities.dtypes.join(", ")})`,
        actual: leaf.dtype,
      })
    }
  }
  return null
}
