import {
  DTypeMismatchError,
  type Dim,
  type Init,
  type LeafSpec,
  ShapeMismatchError,
  SpecError,
  type StateError,
  type StateSpec,
  StructureMismatchError,
  formatPath,
} from "@statesaver/core"
import * as E from "fp-ts/lib/Either.js"
import type * as common from "onnxruntime-common"
import { dtypeOfOrt, isSupportedOrtType } from "./internal/dtypes.js"
import { type Metadata, isUnknown } from "./internal/metadata.js"

/**
 * A state output and the input it feeds on the next run.
 *
 * @category sessions
 * @since 0.1.0
 */
export interface StatePair {
  readonly input: string
  readonly output: string
}

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

/**
 * The input an output feeds by the naming conventions of real models: `present.N.key` →
 * `past_key_values.N.key` (or `past.N.key`), `hn`/`cn` → `h`/`c`, `Y_h`/`Y_c` →
 * `initial_h`/`initial_c`, `stateN` → `state`, `*_out` → `*_in`, `new_*` → `*`; a suffix after
 * the pattern is kept (`Y_h.1` → `initial_h.1`). `undefined` when no rule names an existing input.
 *
 * @example
 * conventionalInput("present.0.key", ["input_ids", "past_key_values.0.key"]) // "past_key_values.0.key"
 * @category sessions
 * @since 0.1.0
 */
export function conventionalInput(output: string, inputs: readonly string[]): string | undefined {
  for (const [pattern, targets] of RULES) {
    if (!pattern.test(output)) continue
    for (const target of targets) {
      const name = output.replace(pattern, target)
      if (inputs.includes(name)) return name
    }
  }
  return undefined
}

/**
 * Pairs state outputs with state inputs: `explicit` (output → input) first, then the naming
 * conventions of `conventionalInput`. `Left` when an explicit name does not exist, when two
 * outputs feed one input, or when an input that looks like state is left unpaired.
 *
 * @example
 * const pairs = orThrow(pairStateNames(session.inputNames, session.outputNames))
 * @category sessions
 * @since 0.1.0
 */
export function pairStateNames(
  inputs: readonly string[],
  outputs: readonly string[],
  explicit: Readonly<Record<string, string>> = {},
): E.Either<StateError, StatePair[]> {
  const pairs: StatePair[] = []
  const fed = new Map<string, string>()
  for (const [output, input] of Object.entries(explicit)) {
    if (!outputs.includes(output)) {
      return E.left(
        new StructureMismatchError(
          formatPath([input]),
          `a model output named ${output}`,
          "no such output",
        ),
      )
    }
    if (!inputs.includes(input)) {
      return E.left(
        new StructureMismatchError(
          formatPath([input]),
          `a model input named ${input}`,
          "no such input",
        ),
      )
    }
  }
  for (const output of outputs) {
    const input = Object.prototype.hasOwnProperty.call(explicit, output)
      ? explicit[output]
      : conventionalInput(output, inputs)
    if (input === undefined) continue
    const other = fed.get(input)
    if (other !== undefined) {
      return E.left(
        new StructureMismatchError(
          formatPath([input]),
          `one state output (${other})`,
          `also ${output}`,
        ),
      )
    }
    fed.set(input, output)
    pairs.push({ input, output })
  }
  for (const input of inputs) {
    if (!fed.has(input) && STATE_LIKE.some((p) => p.test(input))) {
      return E.left(
        new StructureMismatchError(
          formatPath([input]),
          "a state output paired with this state input",
          "no output pairs with it",
        ),
      )
    }
  }
  return E.right(pairs)
}

/**
 * Options of `sessionStateSpec`.
 *
 * @category sessions
 * @since 0.1.0
 */
export interface SessionSpecOptions {
  /** Name of the batch dim in the model's metadata. Default: the first of `batch`, `batch_size`, `N` found. */
  readonly batchDim?: string
  /** Init of state inputs, by input name; zeros otherwise. */
  readonly init?: Readonly<Record<string, Init>>
  /** Shapes that replace the metadata of state inputs, by input name (for models with unnamed dims). */
  readonly shapes?: Readonly<Record<string, readonly Dim[]>>
}

const BATCH_NAMES = ["batch", "batch_size", "N"]

/**
 * Derives the state spec of a session from its input metadata: a record keyed by state input
 * name, with the model's named dims; the batch dim is found by name (or is the only dim of
 * unknown size); other named dims grow from 0 (a KV cache's past sequence). Each pair's output
 * must agree with its input in dtype and in the fixed dims both declare.
 *
 * @example
 * const { spec, batchDim } = orThrow(sessionStateSpec(session, pairs))
 * @category sessions
 * @since 0.1.0
 */
export function sessionStateSpec(
  session: Pick<common.InferenceSession, "inputMetadata" | "outputMetadata">,
  pairs: readonly StatePair[],
  options: SessionSpecOptions = {},
): E.Either<StateError, { spec: StateSpec; batchDim: string }> {
  const inputs = new Map<string, Metadata>(session.inputMetadata.map((m) => [m.name, m]))
  const outputs = new Map<string, Metadata>(session.outputMetadata.map((m) => [m.name, m]))
  const shapeOf = (name: string, m: Metadata | undefined): readonly (number | string)[] =>
    options.shapes?.[name] ?? (m !== undefined && m.isTensor ? m.shape : [])
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
        new SpecError(
          path,
          "tensor metadata for this state input",
          inMeta === undefined ? "none" : "not a tensor",
        ),
      )
    }
    if (!isSupportedOrtType(inMeta.type)) {
      return E.left(
        new DTypeMismatchError(path, "float32, float16, int32, int64, uint8 or bool", inMeta.type),
      )
    }
    if (outMeta !== undefined && outMeta.isTensor && outMeta.type !== inMeta.type) {
      return E.left(new DTypeMismatchError(path, inMeta.type, `${outMeta.type} (output ${output})`))
    }
    let shape: Dim[] = [...shapeOf(input, inMeta)]
    if (!shape.includes(batchDim)) {
      const unknown = shape.flatMap((d, axis) => (isUnknown(d) ? [axis] : []))
      if (unknown.length !== 1) {
        return E.left(
          new SpecError(path, `a "${batchDim}" dim (or give its shape in options.shapes)`, shape),
        )
      }
      shape = shape.map((d) => (isUnknown(d) ? batchDim : d))
    }
    if (shape.some(isUnknown)) {
      return E.left(
        new SpecError(path, "named or fixed dims (or give its shape in options.shapes)", shape),
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
          new ShapeMismatchError(
            path,
            shape,
            outShape,
            `output ${output} must have the input's shape`,
          ),
        )
      }
    }
    const leafInit = options.init?.[input]
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
  if (pairs.length === 0)
    return E.left(new SpecError("", "at least one state output paired with an input", "none"))
  return E.right({ spec, batchDim })
}

/**
 * `preferredOutputLocation` for a session's state outputs only: each output that the pairing rules
 * (or `explicit`) feed back to an input is kept as a GPU buffer; other outputs come back to the
 * CPU as usual. The session options need it before the session exists: pass the model's input and
 * output names (known from the export, or read once from any session of the model).
 *
 * @example
 * const session = await ort.InferenceSession.create(model, {
 *   executionProviders: ["webgpu"],
 *   preferredOutputLocation: orThrow(stateOutputLocations(inputNames, outputNames)),
 * })
 * @category pairing
 * @since 0.1.0
 */
export function stateOutputLocations(
  inputs: readonly string[],
  outputs: readonly string[],
  explicit: Readonly<Record<string, string>> = {},
): E.Either<StateError, Record<string, "gpu-buffer">> {
  const pairs = pairStateNames(inputs, outputs, explicit)
  if (pairs._tag === "Left") return pairs
  // fromEntries defines own properties: an output named __proto__ stays a key.
  return E.right(
    Object.fromEntries(pairs.right.map(({ output }) => [output, "gpu-buffer" as const])),
  )
}
