import type { StateBackend } from "../backend.js"
import { DTypeMismatchError, OptionError } from "../errors.js"
import type { ResolvedSpec } from "../state-spec.js"

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
    return new OptionError({ path: "options", expected: "an options object", actual: options })
  }
  const backend = (options as { backend?: unknown }).backend
  const missing = backendFlaw(backend)
  if (missing === undefined) return null
  return new OptionError({
    path: "backend",
    expected: `a StateBackend (name, capabilities.dtypes and ${PRIMITIVES.join(", ")})`,
    actual: backend,
    ...(missing === "" ? {} : { detail: missing }),
  })
}

/** `undefined` when `backend` looks like a `StateBackend`; else what is wrong (`""`: not an object). */
function backendFlaw(backend: unknown): string | undefined {
  if (typeof backend !== "object" || backend === null) return ""
  const b = backend as Partial<Record<string, unknown>> & Partial<StateBackend<unknown>>
  const absent = PRIMITIVES.find((k) => typeof b[k] !== "function")
  if (absent !== undefined) return `its ${absent} is not a function`
  if (typeof b.name !== "string") return "its name is not a string"
  const dtypes = (b.capabilities as { dtypes?: unknown } | undefined)?.dtypes
  if (!Array.isArray(dtypes)) return "its capabilities.dtypes is not an array"
  return undefined
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
