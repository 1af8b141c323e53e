import {
  type DTypeMismatchError,
  type Dim,
  type Init,
  OptionError,
  type ShapeMismatchError,
  type SpecError,
  type StateSpec,
  type StructureMismatchError,
} from "@statesaver/core"
import type * as common from "onnxruntime-common"
import * as E from "./internal/either.js"
import { conventional, pairNames, sessionSpec } from "./internal/pairing.js"
import { checkNames, isRecord } from "./internal/validate.js"

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

/**
 * Errors `pairStateNames` and `stateOutputLocations` can return or throw: a bad argument or pair
 * override (`OptionError`), two outputs feeding one input or a state input left unpaired
 * (`StructureMismatchError`).
 *
 * @category sessions
 * @since 0.2.0
 */
export type PairingError = OptionError | StructureMismatchError

/**
 * Errors `sessionStateSpec` can return.
 *
 * @category sessions
 * @since 0.2.0
 */
export type SessionSpecError = OptionError | SpecError | DTypeMismatchError | ShapeMismatchError

/**
 * The input an output feeds by the naming conventions of real models: `present.N.key` →
 * `past_key_values.N.key` (or `past.N.key`), `hn`/`cn` → `h`/`c`, `Y_h`/`Y_c` →
 * `initial_h`/`initial_c`, `stateN` → `state`, `*_out` → `*_in`, `new_*` → `*`; a suffix after
 * the pattern is kept (`Y_h.1` → `initial_h.1`). `undefined` when no rule names an existing input.
 * Throws `OptionError` when `output` is not a string or `inputs` not an array of strings.
 *
 * @example
 * conventionalInput("present.0.key", ["input_ids", "past_key_values.0.key"]) // "past_key_values.0.key"
 * @category sessions
 * @since 0.1.0
 */
export function conventionalInput(output: string, inputs: readonly string[]): string | undefined {
  if (typeof output !== "string")
    throw new OptionError({ path: "output", expected: "an output name (a string)", actual: output })
  const names = checkNames(inputs, "inputs")
  if (names._tag === "Left") throw names.left
  return conventional(output, inputs)
}

/**
 * Pairs state outputs with state inputs: `explicit` (output → input) first, then the naming
 * conventions of `conventionalInput`. `Left(OptionError)` when an argument is malformed or an
 * explicit name does not exist; `Left(StructureMismatchError)` when two outputs feed one input,
 * when an input that looks like state is left unpaired, or when `explicit` crosses the
 * conventions: `{ hn: "c", cn: "h" }` swaps two pairs the names agree on, which a model whose
 * two states share a shape would run with, silently wrong. Pass `{ crossedPairs: true }` when the
 * model's names really lie.
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
  options: { readonly crossedPairs?: boolean } = {},
): E.Either<PairingError, StatePair[]> {
  const crossed: unknown = isRecord(options) ? options.crossedPairs : options
  if (!isRecord(options) || (crossed !== undefined && typeof crossed !== "boolean")) {
    return E.left(
      new OptionError({
        path: isRecord(options) ? "options.crossedPairs" : "options",
        expected: isRecord(options) ? "a boolean" : "pairing options { crossedPairs? }",
        actual: crossed,
      }),
    )
  }
  return pairNames(
    inputs,
    outputs,
    explicit,
    { inputs: "inputs", outputs: "outputs", explicit: "explicit" },
    options.crossedPairs === true,
  )
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

/**
 * Derives the state spec of a session from its input metadata: a record keyed by state input
 * name, with the model's named dims; the batch dim is found by name (or is the only dim of
 * unknown size); other named dims grow from 0 (a KV cache's past sequence). Each pair's output
 * must agree with its input in dtype and in the fixed dims both declare. `Left(OptionError)` for
 * malformed metadata, pairs or options (an `init` or `shapes` key that is not a state input).
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
): E.Either<SessionSpecError, { spec: StateSpec; batchDim: string }> {
  return sessionSpec(session, pairs, options)
}

/**
 * `preferredOutputLocation` for a session's state outputs only: each output that the pairing rules
 * (or `explicit`) feed back to an input is kept as a GPU buffer; other outputs come back to the
 * CPU as usual. The session options need it before the session exists: pass the model's input and
 * output names (known from the export, or read once from any session of the model).
 * Returns the record itself; throws `OptionError` for malformed names or pairs and
 * `StructureMismatchError` when the names cannot be paired (see `pairStateNames`).
 *
 * @example
 * const session = await ort.InferenceSession.create(model, {
 *   executionProviders: ["webgpu"],
 *   preferredOutputLocation: stateOutputLocations(inputNames, outputNames),
 * })
 * @category pairing
 * @since 0.1.0
 */
export function stateOutputLocations(
  inputs: readonly string[],
  outputs: readonly string[],
  explicit: Readonly<Record<string, string>> = {},
): Record<string, "gpu-buffer"> {
  const pairs = pairStateNames(inputs, outputs, explicit)
  if (pairs._tag === "Left") throw pairs.left
  // fromEntries defines own properties: an output named __proto__ stays a key.
  return Object.fromEntries(pairs.right.map(({ output }) => [output, "gpu-buffer" as const]))
}
