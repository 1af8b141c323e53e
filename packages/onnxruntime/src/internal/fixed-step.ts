// A StatefulSession's step when a fixed cache's rule is its only one: the feeds built with
// checks that accept only a call as expected (`LeanFeeds.prepare`), and the blocks written and
// lengths advanced after the run. What the model gives back is checked here as on the general
// path (`planWrites`).
import type { BackendError, DTypeMismatchError, ShapeMismatchError } from "@statesaver/core"
import { type CachePlan, fixedCacheInputs } from "../kv-cache.js"
import type { OrtTensor } from "../ort-backend.js"
import { type BlockTarget, writeAtLengths } from "./blocks.js"
import * as E from "./either.js"
import {
  type LeanSession,
  type Prepared,
  cacheRuleAlone,
  LeanFeeds,
  listedOutputs,
} from "./lean-feeds.js"

/** The step of a session whose only rule is its fixed cache's own, or `undefined`. */
export function fixedStep(session: LeanSession): FixedStep | undefined {
  if (!cacheRuleAlone(session) || session.cache.lengthLeaf === undefined) return undefined
  if (session.blocks.length === 0) return undefined
  const lengths = session.byLeaf.indexOf(session.cache.lengthLeaf)
  return lengths < 0 ? undefined : new FixedStep(session, session.cache, lengths)
}

export class FixedStep {
  readonly #feeds: LeanFeeds
  /** Each row's length before the step, where its blocks go (one array, written each step). */
  readonly #offsets: number[] = []

  constructor(
    readonly session: LeanSession,
    cache: CachePlan,
    /** The index of the lengths among the held leaves. */
    readonly lengths: number,
  ) {
    this.#feeds = new LeanFeeds(session, cache)
  }

  /**
   * The step's feeds for a call as expected (`LeanFeeds.prepare`) whose rows stay within the
   * capacity; `undefined` for any other call.
   */
  prepare(
    feeds: unknown,
    options: unknown,
    held: readonly OrtTensor[],
    batchSize: number,
  ): Prepared | undefined {
    const { lend, blocks } = this.session
    const lengths = (held[this.lengths] as OrtTensor).data as Int32Array
    // The capacity: the size of a cache leaf along the axis its blocks are written on.
    const { index, axis } = blocks[0] as BlockTarget
    const capacity = (held[index] as OrtTensor).dims[axis] as number
    const names = this.#feeds.names
    return this.#feeds.prepare(feeds, options, held, batchSize, (tokens) =>
      fixedCacheInputs(names, lengths, batchSize, capacity, tokens, lend),
    )
  }

  /**
   * After a run of `prepare`'s feeds: the blocks written at each row's length, the lengths
   * advanced (only once every block is written), the outputs handed back or freed. A block of
   * another dtype or shape, or a failed write, is refused as the general path refuses it, with
   * every output freed and the state as it was.
   */
  finish(
    prepared: Prepared,
    outputs: Record<string, OrtTensor>,
    held: readonly OrtTensor[],
  ): E.Either<ShapeMismatchError | DTypeMismatchError | BackendError, Record<string, OrtTensor>> {
    const { blocks, backend } = this.session
    const written = writeAtLengths(
      backend,
      blocks,
      (target) => held[target.index] as OrtTensor,
      outputs,
      prepared.tokens,
      (held[this.lengths] as OrtTensor).data as Int32Array,
      this.#offsets,
    )
    if (written._tag === "Left") {
      for (const name in outputs) (outputs[name] as OrtTensor).dispose()
      return written
    }
    return E.right(listedOutputs(outputs, this.session.outputs))
  }
}
