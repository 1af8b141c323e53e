// A StatefulSession's step when a fixed cache's rule is its only one (a decoder that takes
// `input_ids` and derives the rest): the feeds built with checks that accept only a call as
// expected, and the blocks written and lengths advanced after the run. Any other call goes
// through the session's general path, which checks it whole and refuses it with the same errors
// as ever; what the model gives back is checked here as there (`planWrites`).
import {
  type BackendError,
  type DTypeMismatchError,
  type ShapeMismatchError,
  type StateBackend,
  StateError,
} from "@statesaver/core"
import { type CachePlan, fixedCacheInputs } from "../kv-cache.js"
import type { OrtRuntime, OrtTensor } from "../ort-backend.js"
import type { StatePair } from "../state-pairing.js"
import { type BlockTarget, planWrites, writeBlocks } from "./blocks.js"
import * as E from "./either.js"
import type { Rules } from "./rules.js"
import type { Lend } from "./scratch.js"
import { setKey } from "./session-state.js"
import { isOrtTensor, isRecord, own } from "./validate.js"

/** What a step feeds the model, and its new tokens per row. */
export interface Prepared {
  readonly merged: Record<string, OrtTensor>
  readonly tokens: number
}

/** A leaf as the session orders them: a state input's pair, or a bookkeeping leaf's name. */
type ByLeaf = StatePair | string

/** What the session's fixed step needs of it. */
export interface FixedSession {
  readonly cache: CachePlan | undefined
  readonly rules: Rules
  /** The inputs the caller feeds, and the element type the model declares for each. */
  readonly inputs: readonly string[]
  readonly types: ReadonlyMap<string, string>
  readonly byLeaf: readonly ByLeaf[]
  readonly blocks: readonly BlockTarget[]
  /** The outputs a run hands back (the others are freed). */
  readonly outputs: ReadonlySet<string>
  readonly backend: StateBackend<OrtTensor>
  readonly ort: OrtRuntime
  readonly lend: Lend
}

/**
 * The step of a session whose only rule is its fixed cache's own (no other rule, no rule feeds,
 * no kept or held inputs, no state but the cache), or `undefined` for any other session.
 */
export function fixedStep(session: FixedSession): FixedStep | undefined {
  const { cache, rules, byLeaf } = session
  if (cache?.lengthLeaf === undefined || cache.keep.length > 0 || cache.encoder !== undefined)
    return undefined
  if (rules.list.length !== 1 || rules.list[0] !== cache.rule) return undefined
  if (Object.keys(rules.feeds).length > 0 || session.blocks.length === 0) return undefined
  // Every state input a block of the cache (a hybrid model's recurrent state is adopted instead).
  if (byLeaf.filter((l) => typeof l !== "string").length !== session.blocks.length) return undefined
  const lengths = byLeaf.indexOf(cache.lengthLeaf)
  if (lengths < 0) return undefined
  return new FixedStep(session, cache, lengths)
}

export class FixedStep {
  readonly #tokens: string
  readonly #names: readonly string[]
  readonly #fed: ReadonlySet<string>
  /** Each state input and the index of its held leaf. */
  readonly #pairs: readonly (readonly [string, number])[]
  /** Each row's length before the step, where its blocks go (one array, written each step). */
  readonly #offsets: number[] = []

  constructor(
    readonly session: FixedSession,
    cache: CachePlan,
    /** The index of the lengths among the held leaves. */
    readonly lengths: number,
  ) {
    this.#tokens = cache.tokens
    this.#names = cache.rule.inputs
    this.#fed = new Set(session.inputs)
    const pairs: [string, number][] = []
    session.byLeaf.forEach((l, i) => {
      if (typeof l !== "string") pairs.push([l.input, i])
    })
    this.#pairs = pairs
  }

  /**
   * The step's feeds when `feeds` holds exactly the caller's inputs, each a live tensor of its
   * declared type, the tokens a CPU tensor of the session's runtime (whose constructor checked
   * its data) with a row per batch row and within the capacity, and `options` is absent or a
   * record; `undefined` for any other call.
   */
  prepare(
    feeds: unknown,
    options: unknown,
    held: readonly OrtTensor[],
    batchSize: number,
  ): Prepared | undefined {
    if ((options !== undefined && !isRecord(options)) || !isRecord(feeds)) return undefined
    const { types, ort } = this.session
    // Each feed is read once: what is checked is what is fed.
    const merged: Record<string, OrtTensor> = {}
    let count = 0
    for (const name in feeds) {
      const t = feeds[name]
      if (!own(feeds, name) || !this.#fed.has(name) || !isOrtTensor(t) || t.location === "none")
        return undefined
      const type = types.get(name)
      if (type !== undefined && t.type !== type) return undefined
      setKey(merged, name, t)
      count++
    }
    if (count !== this.#fed.size) return undefined
    const ids = merged[this.#tokens] as OrtTensor
    if (
      !(ids instanceof ort.Tensor) ||
      ids.location !== "cpu" ||
      ids.dims.length < 2 ||
      ids.dims[0] !== batchSize
    )
      return undefined
    const tokens = ids.dims[1] as number
    const lengths = (held[this.lengths] as OrtTensor).data as Int32Array
    // The capacity: the size of a cache leaf along the axis its blocks are written on.
    const { index, axis } = this.session.blocks[0] as BlockTarget
    const capacity = (held[index] as OrtTensor).dims[axis] as number
    const arrays = fixedCacheInputs(
      this.#names,
      lengths,
      batchSize,
      capacity,
      tokens,
      this.session.lend,
    )
    if (arrays instanceof StateError) return undefined
    for (const [input, i] of this.#pairs) setKey(merged, input, held[i] as OrtTensor)
    for (const name in arrays) {
      const { dtype, data, shape } = arrays[name] as (typeof arrays)[string]
      setKey(merged, name, new ort.Tensor(dtype, data as Uint8Array, shape))
    }
    return { merged, tokens }
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
    const planned = planWrites(
      blocks,
      (target) => held[target.index] as OrtTensor,
      outputs,
      prepared.tokens,
    )
    if (planned._tag === "Left") {
      for (const name in outputs) (outputs[name] as OrtTensor).dispose()
      return planned
    }
    const lengths = (held[this.lengths] as OrtTensor).data as Int32Array
    const offsets = this.#offsets
    offsets.length = lengths.length
    for (let r = 0; r < lengths.length; r++) offsets[r] = lengths[r] as number
    const written = writeBlocks(backend, planned.right, offsets)
    if (written._tag === "Left") {
      for (const name in outputs) (outputs[name] as OrtTensor).dispose()
      return written
    }
    for (let r = 0; r < lengths.length; r++) lengths[r] = (lengths[r] as number) + prepared.tokens
    const out: Record<string, OrtTensor> = {}
    for (const name in outputs) {
      const t = outputs[name] as OrtTensor
      if (this.session.outputs.has(name)) setKey(out, name, t)
      else t.dispose()
    }
    return E.right(out)
  }
}
