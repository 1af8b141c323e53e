// What a StatefulSession's lean steps share (a decoder whose only rule is its KV cache's own, fed
// `input_ids` and deriving the rest): the session's parts they read, and the check of a call's
// feeds that accepts only a call as expected. Any other call goes through the session's general
// path, which checks it whole and refuses it with the same errors as ever.
import { type StateBackend, StateError } from "@statesaver/core"
import type { CachePlan, DerivedArray } from "../kv-cache.js"
import type { OrtRuntime, OrtTensor } from "../ort-backend.js"
import type { StatePair } from "../state-pairing.js"
import type { BlockTarget } from "./blocks.js"
import type { Rules } from "./rules.js"
import type { Lend } from "./scratch.js"
import { setKey } from "./session-state.js"
import { isOrtTensor, isRecord, own } from "./validate.js"

/** What a step feeds the model, its new tokens per row, and a growing cache's next mask. */
export interface Prepared {
  readonly merged: Record<string, OrtTensor>
  readonly tokens: number
  /** The mask a growing cache saves after the run (made before it, while its rows are at hand). */
  readonly grown?: OrtTensor
}

/** A leaf as the session orders them: a state input's pair, or a bookkeeping leaf's name. */
export type ByLeaf = StatePair | string

/** What a session's lean step needs of it. */
export interface LeanSession {
  readonly cache: CachePlan | undefined
  readonly rules: Rules
  /** The inputs the caller feeds, and the element type the model declares for each. */
  readonly inputs: readonly string[]
  readonly types: ReadonlyMap<string, string>
  readonly byLeaf: readonly ByLeaf[]
  /** A fixed cache's block outputs and the leaves they are written into. */
  readonly blocks: readonly BlockTarget[]
  /** The outputs a run hands back (the others are freed). */
  readonly outputs: ReadonlySet<string>
  readonly backend: StateBackend<OrtTensor>
  readonly ort: OrtRuntime
  readonly lend: Lend
}

/**
 * Whether the session's only rule is its cache's own: no other rule, no rule feeds, no kept
 * cross-attention caches, no input held per row, and every state input a cache of the rule's
 * (a hybrid model's recurrent state is not).
 */
export function cacheRuleAlone<S extends Pick<LeanSession, "cache" | "rules">>(
  session: S,
): session is S & { cache: CachePlan } {
  const { cache, rules } = session
  if (cache === undefined || cache.keep.length > 0 || cache.encoder !== undefined) return false
  if (rules.list.length !== 1 || rules.list[0] !== cache.rule) return false
  return Object.keys(rules.feeds).length === 0 && cache.recurrent.length === 0
}

/** The feeds of a lean step: the caller's, checked; the held state inputs; the derived ones. */
export class LeanFeeds {
  /** The feed whose axis 1 counts the new tokens, and the inputs the cache's rule derives. */
  readonly tokens: string
  readonly names: readonly string[]
  readonly #fed: ReadonlySet<string>
  /** Each state input and the index of its held leaf. */
  readonly #pairs: readonly (readonly [string, number])[]

  constructor(
    readonly session: LeanSession,
    cache: CachePlan,
  ) {
    this.tokens = cache.tokens
    this.names = cache.rule.inputs
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
   * its data) with a row per batch row, `options` is absent or a record, and `derive` (given the
   * new tokens per row) does not refuse the call; `undefined` for any other call. Each feed is
   * read once: what is checked is what is fed. The held state inputs and the derived inputs, as
   * the runtime's tensors, complete them.
   */
  prepare(
    feeds: unknown,
    options: unknown,
    held: readonly OrtTensor[],
    batchSize: number,
    derive: (tokens: number) => Readonly<Record<string, DerivedArray>> | StateError,
  ): Prepared | undefined {
    if ((options !== undefined && !isRecord(options)) || !isRecord(feeds)) return undefined
    const { types, ort } = this.session
    const fed = this.#fed
    const merged: Record<string, OrtTensor> = {}
    let count = 0
    for (const name in feeds) {
      const t = feeds[name]
      if (!own(feeds, name) || !fed.has(name) || !isOrtTensor(t) || t.location === "none")
        return undefined
      const type = types.get(name)
      if (type !== undefined && t.type !== type) return undefined
      setKey(merged, name, t)
      count++
    }
    if (count !== fed.size) return undefined
    const tokens = newTokens(ort, merged[this.tokens], batchSize)
    if (tokens === undefined) return undefined
    const derived = derive(tokens)
    if (derived instanceof StateError) return undefined
    for (const [input, i] of this.#pairs) setKey(merged, input, held[i] as OrtTensor)
    feedDerived(ort, derived, merged)
    return { merged, tokens }
  }
}

/**
 * The new tokens per row of a lean step: the size of `ids`'s second dim when it is a CPU tensor
 * of the runtime (whose constructor checked its data) with `rows` rows; else `undefined`.
 */
export function newTokens(ort: OrtRuntime, ids: unknown, rows: number): number | undefined {
  if (
    !(ids instanceof ort.Tensor) ||
    ids.location !== "cpu" ||
    ids.dims.length < 2 ||
    ids.dims[0] !== rows
  )
    return undefined
  return ids.dims[1] as number
}

/** Each derived input as a tensor of the runtime, put into `feeds` (and into `made`, if given). */
export function feedDerived(
  ort: OrtRuntime,
  derived: Readonly<Record<string, DerivedArray>>,
  feeds: Record<string, OrtTensor>,
  made?: OrtTensor[],
): void {
  for (const name in derived) {
    const { dtype, data, shape } = derived[name] as DerivedArray
    const t = new ort.Tensor(dtype, data as Uint8Array, shape)
    setKey(feeds, name, t)
    made?.push(t)
  }
}

/**
 * The outputs a run hands back; the others are freed, but those the state now holds (`kept`).
 * (A scan of `kept`, not a Set: hashing a tensor object makes onnxruntime-node read it slower
 * on every later run, and `kept` holds the state fed to each run.)
 */
export function listedOutputs(
  outputs: Record<string, OrtTensor>,
  listed: ReadonlySet<string>,
  kept: readonly OrtTensor[] = [],
): Record<string, OrtTensor> {
  const out: Record<string, OrtTensor> = {}
  for (const name in outputs) {
    const t = outputs[name] as OrtTensor
    if (listed.has(name)) setKey(out, name, t)
    else if (!kept.includes(t)) t.dispose()
  }
  return out
}
