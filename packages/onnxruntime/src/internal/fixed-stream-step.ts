// A StreamingSession's step when a fixed cache's rule is its only one: the derived inputs made
// straight from the gathered lengths (no host views, no rule call), and after the run the blocks
// written and the lengths advanced in place, in the rows the store handed out. Any call this
// does not take goes through the session's rules as ever, with the same errors.
import {
  type BackendError,
  type DTypeMismatchError,
  type ShapeMismatchError,
  StateError,
} from "@statesaver/core"
import { type CachePlan, fixedCacheInputs } from "../kv-cache.js"
import type { OrtRuntime, OrtTensor } from "../ort-backend.js"
import { type BlockTarget, writeAtLengths } from "./blocks.js"
import type * as E from "./either.js"
import { cacheRuleAlone, feedDerived, type LeanSession, newTokens } from "./lean-feeds.js"
import type { Lend } from "./scratch.js"

/** A step taken by `FixedStreamStep`: its new tokens and the lengths leaf. */
export interface FixedCall {
  readonly tokens: number
  /** The gathered lengths (a view of the store's rows, or a copy), advanced in place. */
  readonly lengths: OrtTensor
}

/** The lean step of a streaming session whose only rule is its fixed cache's own, or `undefined`. */
export function fixedStreamStep(
  session: Pick<LeanSession, "cache" | "rules">,
  targets: readonly BlockTarget[],
  held: boolean,
  ort: OrtRuntime,
  lend: Lend,
): FixedStreamStep | undefined {
  if (held || targets.length === 0 || !cacheRuleAlone(session)) return undefined
  const { cache } = session
  return cache.lengthLeaf === undefined ? undefined : new FixedStreamStep(cache, targets, ort, lend)
}

export class FixedStreamStep {
  readonly #lengthLeaf: string
  /** Each row's length before the step (`finish` writes it; `undo` reads it). */
  readonly #offsets: number[] = []

  constructor(
    readonly cache: CachePlan,
    readonly targets: readonly BlockTarget[],
    readonly ort: OrtRuntime,
    readonly lend: Lend,
  ) {
    this.#lengthLeaf = cache.lengthLeaf as string
  }

  /**
   * The derived inputs of a call whose tokens are a CPU tensor of the runtime with a row per
   * stream and whose streams stay within the capacity, put into `feeds` (and listed in `made`,
   * which the caller frees after the run); `undefined`, with nothing put in, for any other call.
   */
  derive(
    feeds: Record<string, OrtTensor>,
    state: Readonly<Record<string, OrtTensor>>,
    rows: number,
    made: OrtTensor[],
  ): FixedCall | undefined {
    const tokens = newTokens(this.ort, feeds[this.cache.tokens], rows)
    const lengths = state[this.#lengthLeaf]
    if (tokens === undefined || lengths === undefined || lengths.location !== "cpu")
      return undefined
    const { input, axis } = this.targets[0] as BlockTarget
    const capacity = (state[input] as OrtTensor).dims[axis] as number
    const held = lengths.data as Int32Array
    const derived = fixedCacheInputs(
      this.cache.rule.inputs,
      held,
      rows,
      capacity,
      tokens,
      this.lend,
    )
    if (derived instanceof StateError) return undefined
    feedDerived(this.ort, derived, feeds, made)
    return { tokens, lengths }
  }

  /**
   * After the run: the step's blocks written into the gathered cache rows at each stream's length,
   * then the lengths advanced (only once every block is written). A block of another dtype or
   * shape, or a failed write, is refused as the rules' path refuses it, the lengths untouched.
   */
  finish(
    call: FixedCall,
    outputs: Readonly<Record<string, OrtTensor>>,
    state: Readonly<Record<string, OrtTensor>>,
    backend: Parameters<typeof writeAtLengths>[0],
  ): E.Either<ShapeMismatchError | DTypeMismatchError | BackendError, void> {
    const held = (target: BlockTarget) => state[target.input] as OrtTensor
    const lengths = call.lengths.data as Int32Array
    return writeAtLengths(backend, this.targets, held, outputs, call.tokens, lengths, this.#offsets)
  }

  /** Puts the lengths back where `finish` found them (the store refused the step's state). */
  undo(call: FixedCall): void {
    const lengths = call.lengths.data as Int32Array
    for (let r = 0; r < lengths.length; r++) lengths[r] = this.#offsets[r] as number
  }
}
