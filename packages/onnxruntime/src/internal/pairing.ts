// Pairing state outputs with state inputs and deriving a session's state spec from its metadata:
// the work behind `pairStateNames`, `sessionStateSpec` and the session factories.
import {
  DTypeMismatchError,
  type Dim,
  type LeafSpec,
  OptionError,
  ShapeMismatchError,
  SpecError,
  type StateSpec,
  StructureMismatchError,
  formatPath,
} from "@statesaver/core"
import type {
  PairingError,
  SessionSpecError,
  SessionSpecOptions,
  StatePair,
} from "../state-pairing.js"
import { dtypeOfOrt, isSupportedOrtType } from "./dtypes.js"
import * as E from "./either.js"
import { type Metadata, checkMetadata, isUnknown } from "./metadata.js"
import { checkNameMap, checkNames, isRecord, optionPath, optionalRecord, own } from "./validate.js"

/** Output-name patterns and the input names they feed, tried in order. */
const RULES: readonly [RegExp, readonly string[]][] = [
  [/^present(\..*)$/, ["past_key_values$1", "past$1"]],
  [/^present_(.*)$/, ["past_$1"]],
  [/^hn(.*)$/, ["h$1"]],
  [/^cn(.*)$/, ["c$1"]],
  [/^Y_h(.*)$/, ["initial_h$1"]],
  [/^Y_c(.*)$/, ["initial_c$1"]],
  [/^stateN(.*)$/, ["state$1"]],
  [/^(.+)_out(.*)$/, ["$1_in$2"]],
  [/^new_(.+)$/, ["$1"]],
]

/** Input names that only make sense as state: left unpaired, they are an error. */
const STATE_LIKE = [
  /^past_key_values[._]/,
  /^past\./,
  /^[hc]([._]?\d+)?$/,
  /^initial_[hc]/,
  /^state([._]?\d+)?$/,
  /_in$/,
]

export function conventional(output: string, inputs: readonly string[]): string | undefined {
  for (const [pattern, targets] of RULES) {
    if (!pattern.test(output)) continue
    for (const target of targets) {
      const name = output.replace(pattern, target)
      if (inputs.includes(name)) return name
    }
  }
  return undefined
}

/** Where each argument of `pairNames` came from, for error paths. */
export interface PairingPaths {
  readonly inputs: string
  readonly outputs: string
  readonly explicit: string
}

/** `pairStateNames` with the argument names used in its errors. */
export function pairNames(
  inputs: unknown,
  outputs: unknown,
  explicit: unknown,
  paths: PairingPaths,
  crossed = false,
): E.Either<PairingError, StatePair[]> {
  const ins = checkNames(inputs, paths.inputs)
  if (ins._tag === "Left") return ins
  const outs = checkNames(outputs, paths.outputs)
  if (outs._tag === "Left") return outs
  const map = checkNameMap(explicit, paths.explicit)
  if (map._tag === "Left") return map
  return pairChecked(ins.right, outs.right, map.right, paths.explicit, crossed)
}

function pairChecked(
  inputs: readonly string[],
  outputs: readonly string[],
  explicit: Readonly<Record<string, string>>,
  option: string,
  crossed: boolean,
): E.Either<PairingError, StatePair[]> {
  const pairs: StatePair[] = []
  const fed = new Map<string, string>()
  for (const output of Object.keys(explicit)) {
    const input = explicit[output] as string
    if (!outputs.includes(output)) {
      return E.left(
        new OptionError({
          path: optionPath(option, output),
          expected: "a pair whose key is an output of the model",
          actual: output,
          detail: `outputs: ${outputs.join(", ")}`,
        }),
      )
    }
    if (!inputs.includes(input)) {
      return E.left(
        new OptionError({
          path: optionPath(option, output),
          expected: "an input of the model",
          actual: input,
          detail: `inputs: ${inputs.join(", ")}`,
        }),
      )
    }
  }
  // An override onto another output's conventional input, while that output is sent to this
  // one's: two pairs crossed, which a model whose states share a shape runs silently wrong.
  for (const output of crossed ? [] : Object.keys(explicit)) {
    const input = explicit[output] as string
    const mine = conventional(output, inputs)
    if (mine === undefined || mine === input) continue
    const other = outputs.find((o) => o !== output && conventional(o, inputs) === input)
    if (other !== undefined && own(explicit, other) && explicit[other] === mine) {
      return E.left(
        new StructureMismatchError({
          path: optionPath(option, output),
          expected: `${output} → ${mine} and ${other} → ${input}, as the names say`,
          actual: `${output} → ${input} and ${other} → ${mine}`,
          detail: "crossed pairs; pass crossedPairs: true if the model's names really are swapped",
        }),
      )
    }
  }
  for (const output of outputs) {
    const input = own(explicit, output) ? explicit[output] : conventional(output, inputs)
    if (input === undefined) continue
    const other = fed.get(input)
    if (other !== undefined) {
      return E.left(
        new StructureMismatchError({
          path: formatPath([input]),
          expected: `one state output (${other})`,
          actual: `also ${output}`,
        }),
      )
    }
    fed.set(input, output)
    pairs.push({ input, output })
  }
  for (const input of inputs) {
    if (!fed.has(input) && STATE_LIKE.some((p) => p.test(input))) {
      return E.left(
        new StructureMismatchError({
          path: formatPath([input]),
          expected: "a state output paired with this state input",
          actual: "no output pairs with it",
        }),
      )
    }
  }
  return E.right(pairs)
}

const BATCH_NAMES = ["batch", "batch_size", "N"]

/** Checks the options of `sessionStateSpec` against the state inputs they may name. */
function checkSpecOptions(
  options: unknown,
  stateInputs: readonly string[],
): E.Either<OptionError, SessionSpecOptions> {
  if (!isRecord(options))
    return E.left(
      new OptionError({ path: "options", expected: "an options record", actual: options }),
    )
  const { batchDim } = options
  if (batchDim !== undefined && (typeof batchDim !== "string" || batchDim === "")) {
    return E.left(
      new OptionError({
        path: "batchDim",
        expected: "a dim name (a non-empty string)",
        actual: batchDim,
      }),
    )
  }
  for (const option of ["init", "shapes"] as const) {
    const given = optionalRecord(options[option], option, "a record by state input name")
    if (given._tag === "Left") return given
    for (const name of Object.keys(given.right ?? {})) {
      if (!stateInputs.includes(name)) {
        return E.left(
          new OptionError({
            path: optionPath(option, name),
            expected: "the name of a state input",
            actual: name,
            detail: `state inputs: ${stateInputs.join(", ")}`,
          }),
        )
      }
    }
  }
  const shapes = (options.shapes ?? {}) as Readonly<Record<string, unknown>>
  for (const name of Object.keys(shapes)) {
    const shape = shapes[name]
    const ok =
      Array.isArray(shape) &&
      shape.every(
        (d: unknown) =>
          (typeof d === "string" && d !== "") ||
          (typeof d === "number" && Number.isSafeInteger(d) && d >= 0),
      )
    if (!ok) {
      return E.left(
        new OptionError({
          path: optionPath("shapes", name),
          expected: "an array of dims (non-negative integers or dim names)",
          actual: shape,
        }),
      )
    }
  }
  return E.right(options as SessionSpecOptions)
}

/** `sessionStateSpec` after its arguments' types are known to be right. */
export function sessionSpec(
  session: unknown,
  pairs: unknown,
  options: unknown,
): E.Either<SessionSpecError, { spec: StateSpec; batchDim: string }> {
  if (typeof session !== "object" || session === null)
    return E.left(
      new OptionError({ path: "session", expected: "an InferenceSession", actual: session }),
    )
  const { inputMetadata, outputMetadata } = session as Partial<
    Record<"inputMetadata" | "outputMetadata", unknown>
  >
  const inMeta = checkMetadata(inputMetadata, "session.inputMetadata")
  if (inMeta._tag === "Left") return inMeta
  const outMeta = checkMetadata(outputMetadata, "session.outputMetadata")
  if (outMeta._tag === "Left") return outMeta
  if (!Array.isArray(pairs))
    return E.left(
      new OptionError({ path: "pairs", expected: "an array of { input, output }", actual: pairs }),
    )
  const bad = pairs.findIndex(
    (p: unknown) =>
      !isRecord(p) || typeof p["input"] !== "string" || typeof p["output"] !== "string",
  )
  if (bad >= 0) {
    return E.left(
      new OptionError({
        path: `pairs[${bad}]`,
        expected: "{ input, output } names",
        actual: pairs[bad],
      }),
    )
  }
  const checked = checkSpecOptions(
    options,
    (pairs as readonly StatePair[]).map((p) => p.input),
  )
  if (checked._tag === "Left") return checked
  return specOf(inMeta.right, outMeta.right, pairs as readonly StatePair[], checked.right)
}

function specOf(
  inputMetadata: readonly Metadata[],
  outputMetadata: readonly Metadata[],
  pairs: readonly StatePair[],
  options: SessionSpecOptions,
): E.Either<SessionSpecError, { spec: StateSpec; batchDim: string }> {
  const inputs = new Map<string, Metadata>(inputMetadata.map((m) => [m.name, m]))
  const outputs = new Map<string, Metadata>(outputMetadata.map((m) => [m.name, m]))
  const shapeOf = (name: string, m: Metadata | undefined): readonly (number | string)[] =>
    (options.shapes !== undefined && own(options.shapes, name)
      ? options.shapes[name]
      : undefined) ?? (m !== undefined && m.isTensor ? m.shape : [])
  const batchDim =
    options.batchDim ??
    BATCH_NAMES.find((n) => pairs.some((p) => shapeOf(p.input, inputs.get(p.input)).includes(n))) ??
    "batch"
  const spec: Record<string, LeafSpec> = {}
  for (const { input, output } of pairs) {
    const path = formatPath([input])
    const inMeta = inputs.get(input)
    const outMeta = outputs.get(output)
    if (inMeta === undefined || !inMeta.isTensor) {
      return E.left(
        new SpecError({
          path,
          expected: "tensor metadata for this state input",
          actual: inMeta,
          detail: inMeta === undefined ? "the session has no metadata for it" : "not a tensor",
        }),
      )
    }
    if (!isSupportedOrtType(inMeta.type)) {
      return E.left(
        new DTypeMismatchError({
          path,
          expected: "float32, float16, int32, int64, uint8 or bool",
          actual: inMeta.type,
        }),
      )
    }
    if (outMeta !== undefined && outMeta.isTensor && outMeta.type !== inMeta.type) {
      return E.left(
        new DTypeMismatchError({
          path,
          expected: inMeta.type,
          actual: outMeta.type,
          detail: `output ${output}`,
        }),
      )
    }
    let shape: Dim[] = [...shapeOf(input, inMeta)]
    if (!shape.includes(batchDim)) {
      const unknown = shape.flatMap((d, axis) => (isUnknown(d) ? [axis] : []))
      if (unknown.length !== 1) {
        return E.left(
          new SpecError({
            path,
            expected: `a "${batchDim}" dim (or give its shape in options.shapes)`,
            actual: shape,
          }),
        )
      }
      shape = shape.map((d) => (isUnknown(d) ? batchDim : d))
    }
    if (shape.some(isUnknown)) {
      return E.left(
        new SpecError({
          path,
          expected: "named or fixed dims (or give its shape in options.shapes)",
          actual: shape,
        }),
      )
    }
    if (outMeta !== undefined && outMeta.isTensor && outMeta.shape.length > 0) {
      const outShape = outMeta.shape
      const bad =
        outShape.length !== shape.length ||
        shape.some((d, axis) => {
          const o = outShape[axis] as number | string
          return typeof d === "number" && typeof o === "number" && !isUnknown(o) && o !== d
        })
      if (bad) {
        return E.left(
          new ShapeMismatchError({
            path,
            expected: shape,
            actual: outShape,
            detail: `output ${output} must have the input's shape`,
          }),
        )
      }
    }
    const leafInit =
      options.init !== undefined && own(options.init, input) ? options.init[input] : undefined
    const leaf: LeafSpec = {
      shape,
      dtype: dtypeOfOrt(inMeta.type),
      ...(leafInit === undefined ? {} : { init: leafInit }),
    }
    Object.defineProperty(spec, input, {
      value: leaf,
      enumerable: true,
      writable: true,
      configurable: true,
    })
  }
  if (pairs.length === 0) {
    return E.left(
      new SpecError({
        path: "",
        expected: "at least one state output paired with an input",
        actual: [],
        detail: "the model has no state pairs",
      }),
    )
  }
  return E.right({ spec, batchDim })
}
