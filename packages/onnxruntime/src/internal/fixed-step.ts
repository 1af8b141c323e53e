// A StatefulSession's step when a fixed cache's rule is its only one (a decoder that takes
// `input_ids` and derives the rest): the feeds and the rule's call, built with checks that accept
// only a call as expected. Any other call goes through the session's general path, which checks
// it whole and refuses it with the same errors as ever.
import { HostTensor, StateError } from "@statesaver/core"
import type { RuleCall } from "../input-rules.js"
import { type CachePlan, fixedCacheInputs } from "../kv-cache.js"
import type { OrtRuntime, OrtTensor } from "../ort-backend.js"
import type { StatePair } from "../state-pairing.js"
import { dtypeOfOrt } from "./dtypes.js"
import type { Rules } from "./rules.js"
import type { Lend } from "./scratch.js"
import { setKey } from "./session-state.js"
import { isOrtTensor, isRecord, own } from "./validate.js"

/** What a step feeds the model, and the call its rule advances by once the run is over. */
export interface Prepared {
  readonly merged: Record<string, OrtTensor>
  readonly call: RuleCall
}

/** A leaf as the session orders them: a state input's pair, or a bookkeeping leaf's name. */
type ByLeaf = StatePair | string

/**
 * The step of a session whose only rule is its fixed cache's own (no other rule, no rule feeds,
 * no kept or held inputs), or `undefined` for any other session.
 */
export function fixedStep(
  cache: CachePlan | undefined,
  rules: Rules,
  inputs: readonly string[],
  types: ReadonlyMap<string, string>,
  leaves: readonly { readonly growing: ReadonlyMap<number, string> }[],
  byLeaf: readonly ByLeaf[],
  ort: OrtRuntime,
  lend: Lend,
): FixedStep | undefined {
  if (cache?.lengthLeaf === undefined || cache.keep.length > 0 || cache.encoder !== undefined)
    return undefined
  if (rules.list.length !== 1 || rules.list[0] !== cache.rule) return undefined
  if (Object.keys(rules.feeds).length > 0) return undefined
  const lengths = byLeaf.indexOf(cache.lengthLeaf)
  // Where the capacity is read: the first leaf with the cache's dim (every such leaf has it).
  const leaf = leaves.findIndex((l) => [...l.growing.values()].includes(cache.dim))
  const axis = [...(leaves[leaf]?.growing ?? [])].find(([, name]) => name === cache.dim)?.[0]
  if (lengths < 0 || axis === undefined) return undefined
  const pairs: [string, number][] = []
  byLeaf.forEach((l, i) => {
    if (typeof l !== "string") pairs.push([l.input, i])
  })
  return new FixedStep(cache, lengths, [leaf, axis], inputs, types, pairs, ort, lend)
}

export class FixedStep {
  readonly #tokens: string
  readonly #lengthLeaf: string
  readonly #dim: string
  readonly #names: readonly string[]
  readonly #fed: ReadonlySet<string>
  /** The held lengths' host view, kept while the leaf is the same tensor (it advances in place). */
  #view: { readonly of: OrtTensor; readonly view: HostTensor } | undefined

  constructor(
    cache: CachePlan,
    /** The index of the lengths among the held leaves. */
    readonly lengths: number,
    /** The held leaf and axis whose size is the capacity. */
    readonly capacityAt: readonly [number, number],
    inputs: readonly string[],
    readonly types: ReadonlyMap<string, string>,
    /** Each state input and the index of its held leaf. */
    readonly pairs: readonly (readonly [string, number])[],
    readonly ort: OrtRuntime,
    readonly lend: Lend,
  ) {
    this.#tokens = cache.tokens
    this.#lengthLeaf = cache.lengthLeaf as string
    this.#dim = cache.dim
    this.#names = cache.rule.inputs
    this.#fed = new Set(inputs)
  }

  /**
   * The step's feeds and call when `feeds` holds exactly the caller's inputs, each a live tensor
   * of its declared type, the tokens on the CPU with a row per batch row and within the
   * capacity, and `options` is absent or a record; `undefined` for any other call.
   */
  prepare(
    feeds: unknown,
    options: unknown,
    held: readonly OrtTensor[],
    batchSize: number,
  ): Prepared | undefined {
    if ((options !== undefined && !isRecord(options)) || !isRecord(feeds)) return undefined
    // Each feed is read once: what is checked is what is fed.
    const merged: Record<string, OrtTensor> = {}
    let count = 0
    for (const name in feeds) {
      const t = feeds[name]
      if (!own(feeds, name) || !this.#fed.has(name) || !isOrtTensor(t) || t.location === "none")
        return undefined
      const type = this.types.get(name)
      if (type !== undefined && t.type !== type) return undefined
      setKey(merged, name, t)
      count++
    }
    if (count !== this.#fed.size) return undefined
    const ids = merged[this.#tokens] as OrtTensor
    if (ids.location !== "cpu" || ids.dims.length < 2 || ids.dims[0] !== batchSize) return undefined
    let tokens: HostTensor
    try {
      tokens = new HostTensor(dtypeOfOrt(ids.type), ids.dims, ids.data as HostTensor["data"])
    } catch {
      return undefined
    }
    const lengths = this.#lengths(held[this.lengths] as OrtTensor)
    const [at, axis] = this.capacityAt
    const capacity = (held[at] as OrtTensor).dims[axis] as number
    const arrays = fixedCacheInputs(
      this.#names,
      lengths.data as Int32Array,
      batchSize,
      capacity,
      ids.dims[1] as number,
      this.lend,
    )
    if (arrays instanceof StateError) return undefined
    for (const [input, i] of this.pairs) setKey(merged, input, held[i] as OrtTensor)
    for (const name in arrays) {
      const { dtype, data, shape } = arrays[name] as (typeof arrays)[string]
      setKey(merged, name, new this.ort.Tensor(dtype, data as Uint8Array, shape))
    }
    const call: RuleCall = {
      feeds: { [this.#tokens]: tokens },
      state: { [this.#lengthLeaf]: lengths },
      batchSize,
      dims: { [this.#dim]: capacity },
    }
    return { merged, call }
  }

  #lengths(leaf: OrtTensor): HostTensor {
    if (this.#view?.of !== leaf)
      this.#view = { of: leaf, view: new HostTensor("int32", leaf.dims, leaf.data as Int32Array) }
    return this.#view.view
  }
}
