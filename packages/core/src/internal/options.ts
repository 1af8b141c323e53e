import type { StateBackend } from "../backend.js"
import { DTypeMismatchError, OptionError } from "../errors.js"
import type { ResolvedSpec } from "../state-spec.js"
import { error } from "./fail.js"
import { isArray } from "./predicates.js"

const PRIMITIVES = [
  "describe",
  "allocate",
  "gather",
  "scatter",
  "fill",
  "adopt",
  "toHost",
  "fromHost",
  "dispose",
] as const

/** An `OptionError` unless `options` is an object with a backend that has the contract's members. */
export function checkBackendOption(options: unknown): OptionError | null {
  if (typeof options !== "object" || options === null) {
    return error(OptionError, "options", "an options object", options)
  }
  const backend = (options as { backend?: unknown }).backend
  const b = (backend ?? {}) as Partial<Record<string, unknown>> & Partial<StateBackend<unknown>>
  const absent = PRIMITIVES.find((k) => typeof b[k] !== "function")
  const flaw =
    typeof backend !== "object" || backend === null
      ? ""
      : absent
        ? `its ${absent} is not a function`
        : typeof b.name !== "string"
          ? "its name is not a string"
          : !isArray((b.capabilities as { dtypes?: unknown } | undefined)?.dtypes)
            ? "its capabilities.dtypes is not an array"
            : undefined
  if (flaw === undefined) return null
  return error(
    OptionError,
    "backend",
    `a StateBackend (name, capabilities.dtypes and ${PRIMITIVES.join(", ")})`,
    backend,
    flaw || undefined,
  )
}

/** A `DTypeMismatchError` for the first leaf whose dtype the backend does not store. */
export function unsupportedDType<T, In>(
  backend: StateBackend<T, In>,
  spec: ResolvedSpec,
): DTypeMismatchError | null {
  const { dtypes } = backend.capabilities
  const leaf = spec.leaves.find((l) => !dtypes.includes(l.dtype))
  return !leaf
    ? null
    : error(
        DTypeMismatchError,
        leaf.pathString,
        `one of the dtypes backend ${backend.name} stores (${dtypes.join(", ")})`,
        leaf.dtype,
      )
}
