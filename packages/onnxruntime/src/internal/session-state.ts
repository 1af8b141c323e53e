import {
  DTypeMismatchError,
  type LeafContext,
  type LeafSpec,
  OptionError,
  type ResolvedLeaf,
  type ShapeMismatchError,
  type SpecError,
  type StateSpec,
  StructureMismatchError,
  formatPath,
} from "@statesaver/core"
import type { OrtTensor } from "../ort-backend.js"
import type { StatePair } from "../state-pairing.js"
import type { OrtSession } from "../session-types.js"
import * as E from "./either.js"
import { pairNames, sessionSpec } from "./pairing.js"
import { backendProxyRefusal } from "./proxy-mode.js"
import { type Rules, checkRules } from "./rules.js"
import { type CachePlan, planCache } from "../kv-cache.js"
import { checkNames, isObject, isOptions, isRecord, optionPath, own } from "./validate.js"

/** What a session wrapper knows about its model's state. */
export interface SessionState {
  readonly session: OrtSession
  readonly pairs: StatePair[]
  readonly spec: StateSpec
  readonly batchDim: string
  /** The non-state outputs a run hands back (`outputs` option), or every non-state output. */
  readonly outputs: ReadonlySet<string>
  /** The `rules` option, checked; their bookkeeping leaves are in `spec`. */
  readonly rules: Rules
  /** What the caller feeds: non-state model inputs no rule computes, then the rules' feeds. */
  readonly callerInputs: readonly string[]
  /** The element type of each model input the caller feeds, from the model's metadata. */
  readonly inputTypes: ReadonlyMap<string, string>
  /** The `cache` option, planned; its rule is among `rules`. */
  readonly cache: CachePlan | undefined
  /** Starting sizes of named dims: the `dims` option and a fixed cache's capacity. */
  readonly dims: Readonly<Record<string, number>> | undefined
}

/** Errors deriving a session's state can return. */
export type DeriveError =
  OptionError | StructureMismatchError | SpecError | DTypeMismatchError | ShapeMismatchError

/**
 * Checks a session factory's options record and its `session`, pairs the session's state outputs
 * with its inputs and derives the state spec. The options shared by both session factories
 * (`pairs`, `batchDim`, `init`, `shapes`, `dims`, `outputs`) are checked here.
 */
export function deriveSessionState(options: unknown): E.Either<DeriveError, SessionState> {
  if (!isOptions(options)) {
    return E.left(
      new OptionError({ path: "options", expected: "an options object", actual: options }),
    )
  }
  const session = options["session"]
  if (!isObject(session)) {
    return E.left(
      new OptionError({
        path: "session",
        expected: "an InferenceSession (inputNames, outputNames, metadata, run)",
        actual: session,
      }),
    )
  }
  const s = session as Partial<Record<keyof OrtSession, unknown>>
  const inputNames = checkNames(s.inputNames, "session.inputNames")
  if (inputNames._tag === "Left") return inputNames
  const outputNames = checkNames(s.outputNames, "session.outputNames")
  if (outputNames._tag === "Left") return outputNames
  if (typeof s.run !== "function") {
    return E.left(
      new OptionError({ path: "session.run", expected: "a run function", actual: s.run }),
    )
  }
  const proxied = backendProxyRefusal(options["backend"])
  if (proxied !== undefined) return E.left(proxied)
  const crossed = options["crossedPairs"]
  if (crossed !== undefined && typeof crossed !== "boolean") {
    return E.left(new OptionError({ path: "crossedPairs", expected: "a boolean", actual: crossed }))
  }
  const pairs = pairNames(
    inputNames.right,
    outputNames.right,
    options["pairs"],
    { inputs: "session.inputNames", outputs: "session.outputNames", explicit: "pairs" },
    crossed === true,
  )
  if (pairs._tag === "Left") return pairs
  const specOptions = {
    ...(options["batchDim"] === undefined ? {} : { batchDim: options["batchDim"] }),
    ...(options["init"] === undefined ? {} : { init: options["init"] }),
    ...(options["shapes"] === undefined ? {} : { shapes: options["shapes"] }),
  }
  const derived = sessionSpec(session, pairs.right, specOptions)
  if (derived._tag === "Left") return derived
  const dims = checkDims(options["dims"], derived.right.spec, derived.right.batchDim)
  if (dims._tag === "Left") return dims
  const stateOutputs = new Set(pairs.right.map((p) => p.output))
  const rest = outputNames.right.filter((n) => !stateOutputs.has(n))
  const outputs = checkOutputs(options["outputs"], rest, stateOutputs)
  if (outputs._tag === "Left") return outputs
  const stateInputs = new Set(pairs.right.map((p) => p.input))
  const given = checkRules(options["rules"], inputNames.right, stateInputs, derived.right.batchDim)
  if (given._tag === "Left") return given
  const cache = planCache(
    options["cache"],
    inputNames.right,
    pairs.right,
    derived.right.spec as Record<string, LeafSpec>,
    derived.right.batchDim,
  )
  if (cache._tag === "Left") return cache
  const plan = cache.right
  const backend = options["backend"] as { writeAt?: unknown; name?: unknown } | undefined
  if (plan !== undefined && plan.blocks.length > 0 && typeof backend?.writeAt !== "function") {
    return E.left(
      new OptionError({
        path: "cache.kind",
        expected: '"growing", or a backend with writeAt for "fixed"',
        actual: "fixed",
        detail: `backend ${String(backend?.name)} cannot write a block at each row's length`,
      }),
    )
  }
  const rules =
    plan === undefined
      ? given
      : checkRules(
          [...given.right.list, plan.rule],
          inputNames.right,
          stateInputs,
          derived.right.batchDim,
        )
  if (rules._tag === "Left") return rules
  const userDims = options["dims"] as Record<string, number> | undefined
  for (const [name, size] of Object.entries(plan?.dims ?? {})) {
    if (userDims !== undefined && own(userDims, name) && userDims[name] !== size) {
      return E.left(
        new OptionError({
          path: optionPath("dims", name),
          expected: `the cache's capacity ${size} (or no entry)`,
          actual: userDims[name],
        }),
      )
    }
  }
  const { derived: computed, feeds, spec } = rules.right
  // The input held per row (`cache.encoder`): a leaf of its own, shaped as the model declares it.
  let held: Record<string, LeafSpec> = {}
  if (plan?.encoder !== undefined) {
    const shapes = options["shapes"] as Record<string, unknown> | undefined
    const leaf = sessionSpec(session, [{ input: plan.encoder, output: plan.encoder }], {
      batchDim: derived.right.batchDim,
      ...(isRecord(shapes) && own(shapes, plan.encoder)
        ? { shapes: { [plan.encoder]: shapes[plan.encoder] } }
        : {}),
    })
    if (leaf._tag === "Left") return leaf
    held = leaf.right.spec as Record<string, LeafSpec>
  }
  return E.right({
    session: session as OrtSession,
    pairs: pairs.right,
    batchDim: derived.right.batchDim,
    spec: { ...(derived.right.spec as Record<string, LeafSpec>), ...spec, ...held },
    outputs: outputs.right,
    rules: rules.right,
    cache: plan,
    dims:
      plan === undefined || Object.keys(plan.dims).length === 0
        ? userDims
        : { ...userDims, ...plan.dims },
    callerInputs: [
      ...inputNames.right.filter((n) => !stateInputs.has(n) && !computed.has(n)),
      ...Object.keys(feeds),
    ],
    inputTypes: inputTypes((session as OrtSession).inputMetadata, stateInputs),
  })
}

/** The element type of each non-state tensor input the metadata declares (checked when paired). */
function inputTypes(
  metadata: OrtSession["inputMetadata"],
  stateInputs: ReadonlySet<string>,
): Map<string, string> {
  const types = new Map<string, string>()
  for (const m of metadata) if (m.isTensor && !stateInputs.has(m.name)) types.set(m.name, m.type)
  return types
}

/**
 * The refusal of a feed whose element type is not the one the model declares for that input
 * (`types`), at `path(name)`; `Right` for feeds of inputs without a declared type. ONNX Runtime
 * would refuse it too, but only as a failed run that names no feed.
 */
export function refuseFeedTypes(
  feeds: Readonly<Record<string, OrtTensor>>,
  types: ReadonlyMap<string, string>,
  path: (name: string) => string = (name) => formatPath([name]),
): E.Either<DTypeMismatchError, void> {
  for (const name in feeds) {
    if (!own(feeds, name)) continue
    const wrong = wrongType(name, feeds[name] as OrtTensor, types, () => path(name))
    if (wrong !== undefined) return E.left(wrong)
  }
  return E.right(undefined)
}

/** The error refusing feed `t` of input `name` of another type than the model declares, or undefined. */
export function wrongType(
  name: string,
  t: OrtTensor,
  types: ReadonlyMap<string, string>,
  path: () => string,
): DTypeMismatchError | undefined {
  const expected = types.get(name)
  if (expected === undefined || t.type === expected) return undefined
  return new DTypeMismatchError({
    path: path(),
    expected,
    actual: t.type,
    detail: "the element type the model declares for this input",
  })
}

/**
 * `outputs`: distinct names of non-state outputs of the model (`rest`); every non-state output
 * when absent.
 */
function checkOutputs(
  value: unknown,
  rest: readonly string[],
  stateOutputs: ReadonlySet<string>,
): E.Either<OptionError, ReadonlySet<string>> {
  if (value === undefined) return E.right(new Set(rest))
  const names = checkNames(value, "outputs")
  if (names._tag === "Left") return names
  const known = new Set(rest)
  const seen = new Set<string>()
  const listed = rest.length === 0 ? "the model has none" : `its outputs: ${rest.join(", ")}`
  for (const [i, name] of names.right.entries()) {
    const path = `outputs[${i}]`
    if (stateOutputs.has(name)) {
      return E.left(
        new OptionError({
          path,
          expected: "a non-state output of the model",
          actual: name,
          detail: `${name} is a state output, which the session keeps; ${listed}`,
        }),
      )
    }
    if (!known.has(name)) {
      return E.left(
        new OptionError({
          path,
          expected: "a non-state output of the model",
          actual: name,
          detail: listed,
        }),
      )
    }
    if (seen.has(name)) {
      return E.left(new OptionError({ path, expected: "a name not listed before", actual: name }))
    }
    seen.add(name)
  }
  return E.right(seen)
}

/** `dims`: sizes (non-negative integers) of named dims of the state other than the batch. */
function checkDims(dims: unknown, spec: StateSpec, batchDim: string): E.Either<OptionError, void> {
  if (dims === undefined) return E.right(undefined)
  if (!isRecord(dims)) {
    return E.left(
      new OptionError({
        path: "dims",
        expected: "a record of dim sizes by dim name",
        actual: dims,
      }),
    )
  }
  const named = new Set<string>()
  for (const leaf of Object.values(spec as Record<string, LeafSpec>))
    for (const d of leaf.shape) if (typeof d === "string" && d !== batchDim) named.add(d)
  for (const name of Object.keys(dims)) {
    const size = dims[name]
    if (!named.has(name)) {
      return E.left(
        new OptionError({
          path: optionPath("dims", name),
          expected: "a named dim of the state other than the batch",
          actual: name,
          detail: named.size === 0 ? "the state has none" : `named dims: ${[...named].join(", ")}`,
        }),
      )
    }
    if (typeof size !== "number" || !Number.isSafeInteger(size) || size < 0) {
      return E.left(
        new OptionError({
          path: optionPath("dims", name),
          expected: "a dim size (a non-negative integer)",
          actual: size,
        }),
      )
    }
  }
  return E.right(undefined)
}

/** Refuses a feed for a state input: the session supplies it. */
export function refuseStateFeeds(
  names: Iterable<string>,
  stateInputs: ReadonlySet<string>,
  path: (name: string) => string = (name) => formatPath([name]),
): E.Either<StructureMismatchError, void> {
  for (const name of names) {
    if (stateInputs.has(name)) {
      return E.left(
        new StructureMismatchError({
          path: path(name),
          expected: "no feed for a state input (the session supplies it)",
          actual: "a feed",
        }),
      )
    }
  }
  return E.right(undefined)
}

/** Refuses a feed the model does not take. */
export function refuseUnknownFeeds(
  names: Iterable<string>,
  inputs: readonly string[],
  path: (name: string) => string = (name) => formatPath([name]),
): E.Either<StructureMismatchError, void> {
  for (const name of names) {
    if (!inputs.includes(name)) {
      return E.left(
        new StructureMismatchError({
          path: path(name),
          expected: "a model input",
          actual: "no such input",
        }),
      )
    }
  }
  return E.right(undefined)
}

/** What a backend primitive is told of a leaf (a bookkeeping leaf stays in host memory). */
export const leafContext = (leaf: ResolvedLeaf): LeafContext => ({
  path: leaf.pathString,
  batchAxis: leaf.batchAxis,
  init: leaf.init,
  host: leaf.spec.host === true,
})

/** Sets a key that may be `__proto__` as data; plain assignment otherwise (keeps objects fast). */
export function setKey(o: Record<string, OrtTensor>, key: string, value: OrtTensor): void {
  if (key === "__proto__")
    Object.defineProperty(o, key, { value, enumerable: true, writable: true, configurable: true })
  else o[key] = value
}

/**
 * A copy of `feeds` that takes more keys cheaply. (An object made by spread syntax turns every
 * later keyed store into a slow one in V8: about 0.4 µs per key, several per run.)
 */
export function copyFeeds(
  feeds: Readonly<Record<string, OrtTensor>>,
  skip: Readonly<Record<string, unknown>> = {},
): Record<string, OrtTensor> {
  const out: Record<string, OrtTensor> = {}
  for (const name in feeds) {
    if (
      Object.prototype.hasOwnProperty.call(feeds, name) &&
      !Object.prototype.hasOwnProperty.call(skip, name)
    )
      setKey(out, name, feeds[name] as OrtTensor)
  }
  return out
}
