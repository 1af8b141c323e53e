/*
 * How sessions use input rules: checked once at creation, then `derive` before each run and
 * `next` after it.
 */
import {
  BackendError,
  type DType,
  HostTensor,
  type Init,
  type LeafSpec,
  OptionError,
  StateError,
  StructureMismatchError,
  formatPath,
} from "@statesaver/core"
import type { InputRule, RuleCall, RuleError } from "../input-rules.js"
import type { OrtRuntime, OrtTensor } from "../ort-backend.js"
import { dtypeOfOrt } from "./dtypes.js"
import * as E from "./either.js"
import { type Lend, SCRATCH } from "./scratch.js"
import { isRecord, own } from "./validate.js"

/** The checked rules of a session. */
export interface Rules {
  readonly list: readonly InputRule[]
  /** Model inputs a rule computes → the rule's name. */
  readonly derived: ReadonlyMap<string, string>
  /** Feeds the caller gives a rule → their batch axis. */
  readonly feeds: Readonly<Record<string, number>>
  /** What the rules read of a call: their feeds, then the caller-fed model inputs they read too. */
  readonly reading: readonly string[]
  /** Bookkeeping leaf specs by name (host leaves, batch dim first). */
  readonly spec: Readonly<Record<string, LeafSpec>>
}

export const NO_RULES: Rules = {
  list: [],
  derived: new Map(),
  feeds: {},
  reading: [],
  spec: {},
}

const bad = (path: string, expected: string, actual: unknown, detail?: string) =>
  E.left(new OptionError({ path, expected, actual, detail }))

/**
 * Checks the `rules` option against the model: each rule's inputs are non-state model inputs no
 * other rule computes, its feeds are not model inputs, its state names are new.
 */
export function checkRules(
  given: unknown,
  inputNames: readonly string[],
  stateInputs: ReadonlySet<string>,
  batchDim: string,
): E.Either<OptionError, Rules> {
  if (given === undefined) return E.right(NO_RULES)
  if (!Array.isArray(given)) return bad("rules", "an array of input rules", given)
  const derived = new Map<string, string>()
  const feeds: Record<string, number> = {}
  const reads = new Set<string>()
  const spec: Record<string, LeafSpec> = {}
  for (let i = 0; i < given.length; i++) {
    const rule = given[i] as Partial<InputRule> | undefined
    const at = `rules[${i}]`
    if (
      !isRecord(rule) ||
      typeof rule.name !== "string" ||
      !Array.isArray(rule.inputs) ||
      typeof rule.derive !== "function" ||
      typeof rule.next !== "function"
    ) {
      return bad(at, "an input rule { name, inputs, feeds?, state?, derive, next }", rule)
    }
    for (const input of rule.inputs as unknown[]) {
      if (typeof input !== "string" || !inputNames.includes(input) || stateInputs.has(input)) {
        return bad(`${at}.inputs`, "names of non-state model inputs", input, `rule ${rule.name}`)
      }
      const other = derived.get(input)
      if (other !== undefined) {
        return bad(`${at}.inputs`, `an input no other rule computes`, input, `rule ${other} does`)
      }
      derived.set(input, rule.name)
    }
    if (rule.feeds !== undefined && !isRecord(rule.feeds)) {
      return bad(`${at}.feeds`, "a record of batch axes by feed name", rule.feeds)
    }
    for (const [name, axis] of Object.entries(rule.feeds ?? {})) {
      if (inputNames.includes(name) || own(feeds, name)) {
        return bad(
          `${at}.feeds`,
          "a feed name that is not a model input or another rule's feed",
          name,
        )
      }
      if (!Number.isSafeInteger(axis) || (axis as number) < 0) {
        return bad(`${at}.feeds.${name}`, "a batch axis (a non-negative integer)", axis)
      }
      feeds[name] = axis as number
    }
    if (rule.reads !== undefined && !Array.isArray(rule.reads)) {
      return bad(`${at}.reads`, "an array of model input names", rule.reads)
    }
    for (const name of (rule.reads ?? []) as unknown[]) {
      if (typeof name !== "string" || !inputNames.includes(name) || stateInputs.has(name)) {
        return bad(`${at}.reads`, "names of non-state model inputs", name, `rule ${rule.name}`)
      }
      reads.add(name)
    }
    if (
      rule.outputs !== undefined &&
      (!Array.isArray(rule.outputs) || !rule.outputs.every((n) => typeof n === "string"))
    ) {
      return bad(`${at}.outputs`, "an array of model output names", rule.outputs)
    }
    if (rule.state !== undefined && !isRecord(rule.state)) {
      return bad(`${at}.state`, "a record of bookkeeping leaves { row, dtype, init? }", rule.state)
    }
    for (const [name, leaf] of Object.entries(rule.state ?? {})) {
      if (stateInputs.has(name) || own(spec, name)) {
        return bad(`${at}.state`, "a name that no state input or other rule uses", name)
      }
      if (!isRecord(leaf) || !Array.isArray(leaf["row"])) {
        return bad(`${at}.state.${name}`, "a bookkeeping leaf { row, dtype, init? }", leaf)
      }
      spec[name] = {
        shape: [batchDim, ...(leaf["row"] as LeafSpec["shape"])],
        dtype: leaf["dtype"] as LeafSpec["dtype"],
        ...(leaf["init"] === undefined ? {} : { init: leaf["init"] as Init }),
        host: true,
      }
    }
  }
  for (const name of reads) {
    const rule = derived.get(name)
    if (rule !== undefined) {
      return bad(
        "rules",
        "rules that read only inputs the caller feeds",
        name,
        `rule ${rule} computes it`,
      )
    }
  }
  return E.right({
    list: given as InputRule[],
    derived,
    feeds,
    reading: [...Object.keys(feeds), ...reads],
    spec,
  })
}

/**
 * A built-in rule's `next` done in place (not public API): it writes the bookkeeping leaves
 * after a successful run into `call.state`'s arrays, which are the held leaves' own. A session
 * that holds its leaves itself (a `StatefulSession`) advances this way instead of making,
 * checking and adopting new leaves every step.
 */
export const ADVANCE: unique symbol = Symbol("statesaver.advance")

/** A rule that may carry its in-place `next`. */
export interface Advancing {
  readonly [ADVANCE]?: (call: RuleCall) => void
}

/** Whether every rule advances in place (then `advance` replaces `nextState`). */
export const advancesInPlace = (rules: Rules): boolean =>
  rules.list.length > 0 && rules.list.every((rule) => (rule as Advancing)[ADVANCE] !== undefined)

/** Each rule's in-place `next`, once the run's changes are all made (it cannot fail). */
export function advance(rules: Rules, call: RuleCall): void {
  for (const rule of rules.list) (rule as Advancing)[ADVANCE]?.(call)
}

/** A feed the caller gave for an input a rule computes. */
export function refuseDerivedFeeds(
  names: readonly string[],
  rules: Rules,
  pathOf: (name: string) => string = (n) => formatPath([n]),
): E.Either<StructureMismatchError, void> {
  for (const name of names) {
    const rule = rules.derived.get(name)
    if (rule !== undefined) {
      return E.left(
        new StructureMismatchError({
          path: pathOf(name),
          expected: `no feed for ${name}: rule ${rule} computes it`,
          actual: "a feed",
          detail: `feed ${Object.keys(rules.feeds).join(", ") || "the rule's feeds"} instead`,
        }),
      )
    }
  }
  return E.right(undefined)
}

/** A host view of a CPU tensor (no copy); `undefined` for a tensor on a device. */
function hostView(t: OrtTensor, dtype: DType): HostTensor | undefined {
  if (t.location !== "cpu") return undefined
  return new HostTensor(dtype, t.dims, t.data as HostTensor["data"])
}

/** A runtime tensor sharing a host tensor's data (the rule made it for this call). */
const ortTensor = (ort: OrtRuntime, t: HostTensor): OrtTensor =>
  new ort.Tensor(t.dtype as "float32", t.data as Float32Array, t.shape)

const RULE_ERRORS: ReadonlySet<string> = new Set([
  "ShapeMismatchError",
  "DTypeMismatchError",
  "StructureMismatchError",
])

/** `e` when it is a `RuleError`; otherwise a `BackendError` whose cause it is. */
const asRuleError = (e: StateError, operation: string): RuleError | BackendError =>
  RULE_ERRORS.has(e._tag)
    ? (e as RuleError)
    : new BackendError({ backend: "input rule", operation, cause: e })

/** A rule's view of a call: host views of its feeds and of the bookkeeping leaves. */
function callOf(
  rules: Rules,
  feeds: Readonly<Record<string, OrtTensor>>,
  state: Readonly<Record<string, OrtTensor>>,
): E.Either<
  RuleError | BackendError,
  { feeds: Record<string, HostTensor>; state: Record<string, HostTensor> }
> {
  const hostFeeds: Record<string, HostTensor> = {}
  for (const name of rules.reading) {
    const t = feeds[name] as OrtTensor
    let view: HostTensor | undefined
    try {
      view = hostView(t, dtypeOfOrt(t.type))
    } catch (e) {
      // A dtype core does not hold, or data that disagrees with the dims.
      if (e instanceof StateError) return E.left(asRuleError(e, "feed " + name))
      throw e
    }
    if (view === undefined) {
      return E.left(
        new StructureMismatchError({
          path: formatPath([name]),
          expected: "a cpu tensor (input rules read their feeds on the CPU)",
          actual: `a ${t.location} tensor`,
        }),
      )
    }
    hostFeeds[name] = view
  }
  const hostState: Record<string, HostTensor> = {}
  for (const name of Object.keys(rules.spec)) {
    const t = state[name] as OrtTensor
    hostState[name] = hostView(t, dtypeOfOrt(t.type)) as HostTensor
  }
  return E.right({ feeds: hostFeeds, state: hostState })
}

/**
 * The inputs the rules compute for a call, as runtime tensors the caller frees after the run,
 * and the view the rules' `next` gets after it.
 */
export function deriveInputs(
  rules: Rules,
  ort: OrtRuntime,
  feeds: Readonly<Record<string, OrtTensor>>,
  state: Readonly<Record<string, OrtTensor>>,
  batchSize: number,
  dims: Readonly<Record<string, number>>,
  backend: string,
  lend?: Lend,
): E.Either<RuleError | BackendError, { inputs: Record<string, OrtTensor>; call: RuleCall }> {
  const call = callOf(rules, feeds, state)
  if (call._tag === "Left") return call
  const view: RuleCall & { [SCRATCH]?: Lend } = {
    feeds: call.right.feeds,
    state: call.right.state,
    batchSize,
    dims,
  }
  // Built-in rules write their inputs into arrays the session lends (not part of RuleCall).
  if (lend !== undefined) view[SCRATCH] = lend
  const inputs: Record<string, OrtTensor> = {}
  for (const rule of rules.list) {
    let out: ReturnType<InputRule["derive"]>
    try {
      out = rule.derive(view)
    } catch (cause) {
      return E.left(new BackendError({ backend, operation: `rule ${rule.name}: derive`, cause }))
    }
    if (out instanceof StateError) return E.left(asRuleError(out, `rule ${rule.name}: derive`))
    for (const name of rule.inputs) {
      const t = (out as Record<string, HostTensor | undefined>)[name]
      if (t === undefined) {
        return E.left(
          new BackendError({
            backend,
            operation: `rule ${rule.name}: derive`,
            cause: new Error(`derive returned no tensor for input ${name}`),
          }),
        )
      }
      inputs[name] = ortTensor(ort, t)
    }
  }
  return E.right({ inputs, call: view })
}

/** The bookkeeping leaves after a run, as runtime CPU tensors by leaf name. */
export function nextState(
  rules: Rules,
  ort: OrtRuntime,
  call: RuleCall,
  outputs: Readonly<Record<string, OrtTensor>>,
  backend: string,
  lend?: Lend,
): E.Either<BackendError, Record<string, OrtTensor>> {
  const next: Record<string, OrtTensor> = {}
  for (const rule of rules.list) {
    // Host views of the outputs the rule reads (most read none).
    const hostOutputs: Record<string, HostTensor | undefined> = {}
    for (const name of rule.outputs ?? []) {
      const t = outputs[name]
      try {
        hostOutputs[name] = t === undefined ? undefined : hostView(t, dtypeOfOrt(t.type))
      } catch {
        hostOutputs[name] = undefined
      }
    }
    let out: Readonly<Record<string, HostTensor>>
    try {
      const after: Parameters<InputRule["next"]>[0] & { [SCRATCH]?: Lend } = {
        feeds: call.feeds,
        state: call.state,
        batchSize: call.batchSize,
        dims: call.dims,
        outputs: hostOutputs,
      }
      // Only a session that copies the new state into its store lends arrays for it.
      if (lend !== undefined) after[SCRATCH] = lend
      out = rule.next(after)
    } catch (cause) {
      return E.left(new BackendError({ backend, operation: `rule ${rule.name}: next`, cause }))
    }
    for (const name of Object.keys(rule.state ?? {})) {
      const t = out[name]
      if (t === undefined || t.data === call.state[name]?.data) {
        return E.left(
          new BackendError({
            backend,
            operation: `rule ${rule.name}: next`,
            cause: new Error(`next must return a new host tensor for leaf ${name}`),
          }),
        )
      }
      next[name] = ortTensor(ort, t)
    }
  }
  return E.right(next)
}
