// A StatefulSession's step when a growing cache's rule is its only one: the feeds built with
// checks that accept only a call as expected (`LeanFeeds.prepare`), the derived inputs written
// from the cache's mask (into the step's own memory while every position is valid), and the
// model's whole new cache adopted with the mask one position longer. What the model gives back
// is checked as on the general path (the saver's `saveLeaves`).
import type { SaveError } from "@statesaver/core"
import {
  type AllValidInputs,
  type CachePlan,
  allValidInputs,
  growingCacheInputs,
  grownMask,
} from "../kv-cache.js"
import type { OrtTensor } from "../ort-backend.js"
import * as E from "./either.js"
import {
  type LeanSession,
  type Prepared,
  cacheRuleAlone,
  LeanFeeds,
  listedOutputs,
} from "./lean-feeds.js"

/** What the growing step needs of the session besides its parts: the saver's `saveLeaves`. */
export type SaveLeaves = (next: readonly OrtTensor[]) => E.Either<SaveError, void>

/** The step of a session whose only rule is its growing cache's own, or `undefined`. */
export function growingStep(session: LeanSession, save: SaveLeaves): GrowingStep | undefined {
  if (!cacheRuleAlone(session) || session.cache.lengthLeaf !== undefined) return undefined
  // The mask the only leaf besides the cache's.
  if (session.byLeaf.filter((l) => typeof l === "string").length !== 1) return undefined
  const mask = session.byLeaf.indexOf(session.cache.leaf)
  return mask < 0 ? undefined : new GrowingStep(session, session.cache, mask, save)
}

export class GrowingStep {
  readonly #feeds: LeanFeeds
  /**
   * The memory the grown masks take in turn: the next mask goes into the one the held mask is not
   * in, so a step allocates nothing once they are large enough. The mask two steps back, the
   * last to use it, was freed when the step after it was saved.
   */
  readonly #masks: [ArrayBuffer | undefined, ArrayBuffer | undefined] = [undefined, undefined]
  /** The derived inputs while every position is valid, when the model takes no others. */
  readonly #allValid: AllValidInputs | undefined
  /** The output each held leaf takes after a run, in the leaves' order (none for the mask). */
  readonly #outputOf: readonly (string | undefined)[]

  constructor(
    readonly session: LeanSession,
    cache: CachePlan,
    /** The index of the cache's mask (`cache_mask`, `[rows, past]`) among the held leaves. */
    readonly mask: number,
    readonly save: SaveLeaves,
  ) {
    this.#feeds = new LeanFeeds(session, cache)
    this.#allValid = allValidInputs(this.#feeds.names)
    this.#outputOf = session.byLeaf.map((leaf, i) =>
      i === mask ? undefined : (leaf as Exclude<typeof leaf, string>).output,
    )
  }

  /** The feeds for a call as expected (`LeanFeeds.prepare`); `undefined` for any other call. */
  prepare(
    feeds: unknown,
    options: unknown,
    held: readonly OrtTensor[],
    batchSize: number,
  ): Prepared | undefined {
    const { lend, ort } = this.session
    const mask = held[this.mask] as OrtTensor
    const data = mask.data as Uint8Array
    const past = mask.dims[1] as number
    const names = this.#feeds.names
    // One scan for both the derived inputs and the grown mask.
    const valid = data.indexOf(0) < 0
    const direct = valid ? this.#allValid : undefined
    const prepared = this.#feeds.prepare(feeds, options, held, batchSize, (tokens) =>
      direct !== undefined
        ? direct.inputs(batchSize, past, tokens)
        : growingCacheInputs(names, data, batchSize, past, tokens, lend, undefined, valid),
    )
    if (prepared === undefined) return undefined
    // The mask after the step, made while its rows are at hand (it is saved only if the run is).
    const { merged, tokens } = prepared
    const length = batchSize * (past + tokens)
    const into = this.#maskMemory(data, length)
    const grown = new ort.Tensor("uint8", grownMask(data, batchSize, past, tokens, into, valid), [
      batchSize,
      past + tokens,
    ])
    return { merged, tokens, grown }
  }

  /** `length` bytes for the next mask, in memory the held mask (`held`) does not use. */
  #maskMemory(held: Uint8Array, length: number): Uint8Array {
    const masks = this.#masks
    const i = masks[0] === held.buffer ? 1 : 0
    let memory = masks[i]
    if (memory === undefined || memory.byteLength < length) {
      // Room for the steps to come: the mask grows by a position per row at every step.
      memory = new ArrayBuffer(length + (length >> 1))
      masks[i] = memory
    }
    return new Uint8Array(memory, 0, length)
  }

  /**
   * After a run of `prepare`'s feeds: the model's new cache and the mask grown by the step's
   * tokens saved (checked by the saver as any save), the outputs handed back or freed. State
   * outputs that do not fit are refused as the general path refuses them, with every output
   * freed and the state as it was.
   */
  finish(
    prepared: Prepared,
    outputs: Record<string, OrtTensor>,
  ): E.Either<SaveError, Record<string, OrtTensor>> {
    const outputOf = this.#outputOf
    const next: OrtTensor[] = []
    for (let i = 0; i < outputOf.length; i++) {
      const name = outputOf[i]
      next.push(name === undefined ? (prepared.grown as OrtTensor) : (outputs[name] as OrtTensor))
    }
    const saved = this.save(next)
    if (saved._tag === "Left") {
      for (const name in outputs) (outputs[name] as OrtTensor).dispose()
      return saved
    }
    return E.right(listedOutputs(outputs, this.session.outputs, next))
  }
}
