/*
 * KV caches with per-row lengths: the bookkeeping, the inputs derived from it, and how a
 * fixed-capacity cache takes each step's keys and values.
 */
import {
  type HostTensor,
  type LeafSpec,
  HostTensor as Host,
  OptionError,
  RowIndexError,
  ShapeMismatchError,
  type Snapshot,
  StateError,
  SnapshotFormatError,
  decodeSnapshot,
  StructureMismatchError,
  allocateData,
  formatPath,
} from "@statesaver/core"
import type { InputRule, RuleCall } from "./input-rules.js"
import type { StatePair } from "./state-pairing.js"
import * as E from "./internal/either.js"
import { ADVANCE, type Advancing } from "./internal/rules.js"
import { type Lend, SCRATCH } from "./internal/scratch.js"
import { isRecord } from "./internal/validate.js"

/**
 * How a session keeps a decoder's KV cache (the `cache` option).
 *
 * - `"growing"`: the model outputs the whole cache (`present.N.key` = past ⧺ new), which the
 *   session adopts. A per-row mask (`cache_mask`, one byte per cache position) records which
 *   positions each row attends to, so a row reset, rewound or joined mid-flight is masked.
 * - `"fixed"`: the cache is preallocated at `capacity` positions and written in place. The
 *   model takes the whole cache plus a mask and outputs only this step's keys and values
 *   (`[batch, heads, new, dim]`), which the session writes at each row's length (`cache_length`)
 *   with the backend's `writeAt`: on WebGPU a copy on the device, no read-back.
 *
 * The session then computes `attention_mask`, `position_ids` and `cache_position` (those the
 * model takes) from the bookkeeping and the new tokens; the caller feeds only `input_ids`.
 *
 * @category sessions
 * @since 0.3.0
 */
export interface KvCacheOptions {
  readonly kind: "growing" | "fixed"
  /** Positions of a fixed cache (required for `"fixed"`). */
  readonly capacity?: number
  /**
   * The cache's sequence dim, as named in the model's metadata. Default: the named dim (other
   * than the batch) that the state inputs share.
   */
  readonly dim?: string
  /** The feed whose axis 1 counts the new tokens. Default `"input_ids"`. */
  readonly tokens?: string
  /**
   * An input the session holds per row, like the cache (an encoder–decoder's
   * `encoder_hidden_states`): the caller feeds it on a run that starts the cache (no row holds a
   * position yet), and the session keeps a copy and feeds it on every later run, reordered by
   * `select` and carried by snapshots. In a `StreamingSession`, per stream: fed in the feeds of
   * each stream of the call that starts it, then held with the stream's state (snapshots,
   * eviction, `fork`), at one length for every stream.
   */
  readonly encoder?: string
}

/** The model inputs a cache derives, when the model has them. */
const MASK = "attention_mask"
const POSITIONS = "position_ids"
const CACHE_POSITION = "cache_position"
const USE_CACHE = "use_cache_branch"
/** Cross-attention caches of an encoder–decoder: computed on the first step, then kept. */
const ENCODER_PRESENT = /\.encoder\.(key|value)$/

/** What a session needs to know of its cache: the rule, and for a fixed cache, the writes. */
export interface CachePlan {
  readonly rule: InputRule
  readonly dim: string
  /** The bookkeeping leaf: `cache_length` (fixed) or `cache_mask` (growing). */
  readonly leaf: string
  /** Fixed caches: the pairs whose outputs are blocks written at each row's length. */
  readonly blocks: readonly StatePair[]
  readonly lengthLeaf: string | undefined
  /** The feed whose axis 1 counts the new tokens. */
  readonly tokens: string
  /** Sizes of named dims the cache sets (a fixed cache's capacity). */
  readonly dims: Readonly<Record<string, number>>
  /**
   * Pairs kept once filled (a merged encoder–decoder's `present.N.encoder.*`): adopted on a
   * step that runs without the cache (`use_cache_branch` false), kept as they are after.
   */
  readonly keep: readonly StatePair[]
  /** The input held per row (`encoder` option), fed by the caller when the cache starts. */
  readonly encoder: string | undefined
  /**
   * State inputs without the cache's positions, kept pairs aside: a hybrid model's recurrent
   * state (`past_ssm`, `past_conv`), which a rewind cannot roll back.
   */
  readonly recurrent: readonly string[]
  /** Outputs of `blocks`; and of `blocks` and `keep` together. */
  readonly blockOutputs: ReadonlySet<string>
  readonly blockOrKeptOutputs: ReadonlySet<string>
}

/**
 * The state outputs a step does not adopt: a fixed cache's blocks (written in place instead),
 * and the kept cross-attention caches once the cache is in use.
 */
export const notAdopted = (plan: CachePlan, call: RuleCall): ReadonlySet<string> =>
  plan.keep.length > 0 && usesCache(plan, call.state) ? plan.blockOrKeptOutputs : plan.blockOutputs

/** Each row's length before the step: where a fixed cache's blocks go. */
export function blockOffsets(plan: CachePlan, call: RuleCall): number[] {
  if (plan.lengthLeaf === undefined) return []
  const lengths = call.state[plan.lengthLeaf]?.data as Int32Array
  // A loop, not `Array.from`: this runs every step.
  const out = new Array<number>(lengths.length)
  for (let r = 0; r < lengths.length; r++) out[r] = lengths[r] as number
  return out
}

/** Whether a call runs with its cache (`use_cache_branch`): some row holds a position. */
export function usesCache(plan: CachePlan, state: Readonly<Record<string, HostTensor>>): boolean {
  const leaf = state[plan.leaf] as HostTensor
  return plan.lengthLeaf === undefined
    ? (leaf.shape[1] as number) > 0
    : (leaf.data as Int32Array).some((l) => l > 0)
}

/** Checks the `cache` option against the model and builds its rule. */
export function planCache(
  given: unknown,
  inputNames: readonly string[],
  pairs: readonly StatePair[],
  spec: Readonly<Record<string, LeafSpec>>,
  batchDim: string,
): E.Either<OptionError, CachePlan | undefined> {
  if (given === undefined) return E.right(undefined)
  const bad = (path: string, expected: string, actual: unknown, detail?: string) =>
    E.left(new OptionError({ path, expected, actual, detail }))
  if (!isRecord(given))
    return bad("cache", '{ kind: "growing" } or { kind: "fixed", capacity }', given)
  const { kind, capacity, dim, tokens, encoder } = given as Partial<
    Record<keyof KvCacheOptions, unknown>
  >
  if (kind !== "growing" && kind !== "fixed") return bad("cache.kind", '"growing" or "fixed"', kind)
  if (kind === "fixed" && (!Number.isSafeInteger(capacity) || (capacity as number) < 1)) {
    return bad("cache.capacity", "a positive integer number of positions", capacity)
  }
  if (kind === "growing" && capacity !== undefined) {
    return bad("cache.capacity", "no capacity for a growing cache", capacity)
  }
  const named = new Set<string>()
  for (const leaf of Object.values(spec))
    for (const d of leaf.shape) if (typeof d === "string" && d !== batchDim) named.add(d)
  if (dim !== undefined && (typeof dim !== "string" || !named.has(dim))) {
    return bad(
      "cache.dim",
      "a named dim of the state",
      dim,
      `named dims: ${[...named].join(", ") || "none"}`,
    )
  }
  // Several named dims (an encoder–decoder's self and cross caches): the one of the pairs
  // that are not cross-attention caches.
  const own = new Set<string>()
  for (const p of pairs) {
    if (ENCODER_PRESENT.test(p.output)) continue
    for (const d of spec[p.input]?.shape ?? [])
      if (typeof d === "string" && d !== batchDim) own.add(d)
  }
  if (dim === undefined && named.size !== 1 && own.size !== 1) {
    return bad(
      "cache.dim",
      "the cache's sequence dim (the state has no single named dim)",
      dim,
      `named dims: ${[...named].join(", ") || "none"}`,
    )
  }
  const seq = (dim ?? (named.size === 1 ? [...named][0] : [...own][0])) as string
  const tokenFeed = tokens ?? "input_ids"
  if (typeof tokenFeed !== "string" || !inputNames.includes(tokenFeed)) {
    return bad("cache.tokens", "a model input whose axis 1 counts the new tokens", tokenFeed)
  }
  if (
    encoder !== undefined &&
    (typeof encoder !== "string" ||
      !inputNames.includes(encoder) ||
      encoder === tokenFeed ||
      pairs.some((p) => p.input === encoder) ||
      [MASK, POSITIONS, CACHE_POSITION, USE_CACHE].includes(encoder))
  ) {
    return bad(
      "cache.encoder",
      "a model input that is not state, derived or the tokens feed (encoder_hidden_states)",
      encoder,
    )
  }
  const cached = pairs.filter((p) => spec[p.input]?.shape.includes(seq))
  const derives = [MASK, POSITIONS, CACHE_POSITION, USE_CACHE].filter((n) => inputNames.includes(n))
  const keep = inputNames.includes(USE_CACHE)
    ? pairs.filter((p) => ENCODER_PRESENT.test(p.output))
    : []
  const blocks = kind === "fixed" ? cached : []
  const rule =
    kind === "fixed"
      ? fixedRule(seq, tokenFeed, derives)
      : growingRule(seq, tokenFeed, derives, keep[0]?.input)
  return E.right({
    rule,
    dim: seq,
    leaf: kind === "fixed" ? LENGTH : CACHE_MASK,
    blocks,
    lengthLeaf: kind === "fixed" ? LENGTH : undefined,
    tokens: tokenFeed,
    keep,
    encoder: encoder as string | undefined,
    recurrent: pairs.filter((p) => !cached.includes(p) && !keep.includes(p)).map((p) => p.input),
    blockOutputs: new Set(blocks.map((p) => p.output)),
    blockOrKeptOutputs: new Set([...blocks, ...keep].map((p) => p.output)),
    dims: kind === "fixed" ? { [seq]: capacity as number } : {},
  })
}

const LENGTH = "cache_length"
const CACHE_MASK = "cache_mask"

/** The number of new tokens of a call: axis 1 of the tokens feed. */
const newTokens = (call: RuleCall, tokens: string): number =>
  ((call.feeds[tokens] as HostTensor).shape[1] ?? 0) as number

/** The refusal of a token feed without a row per batch row on axis 0 and the tokens on axis 1. */
function refuseTokens(call: RuleCall, tokens: string): ShapeMismatchError | undefined {
  const shape = (call.feeds[tokens] as HostTensor).shape
  if (shape.length >= 2 && shape[0] === call.batchSize) return undefined
  return new ShapeMismatchError({
    path: formatPath([tokens]),
    expected: `[${call.batchSize}, new tokens, ...]: a row per batch row, the new tokens on axis 1`,
    actual: [...shape],
  })
}

const int64 = (shape: number[], fill: (i: number) => number): DerivedArray => {
  const data = new BigInt64Array(shape.reduce((a, b) => a * b, 1))
  for (let i = 0; i < data.length; i++) data[i] = BigInt(fill(i))
  return { dtype: "int64", shape, data }
}

/** Whether int64 elements are stored low word first (every platform Node and browsers run on). */
const LITTLE_ENDIAN = new Uint8Array(Int32Array.of(1).buffer)[0] === 1

/**
 * Writes `value(i)` (a non-negative integer below 2^31) into each element `i` of `data`: through
 * the elements' 32-bit words on a little-endian platform, which spares a `BigInt` per element.
 */
function fillInt64(data: BigInt64Array, value: (i: number) => number): void {
  if (!LITTLE_ENDIAN) {
    for (let i = 0; i < data.length; i++) data[i] = BigInt(value(i))
    return
  }
  const words = new Int32Array(data.buffer, data.byteOffset, data.length * 2)
  for (let i = 0; i < data.length; i++) {
    words[2 * i] = value(i)
    words[2 * i + 1] = 0
  }
}

/** Sets `mask[from, to)` to 1 (in place: no view per row, as a copy from an array of ones needs). */
function ones(mask: BigInt64Array, from: number, to: number): void {
  // A few positions are stored one by one: a call of `fill` costs more than a short loop.
  if (to - from <= 8) for (let i = from; i < to; i++) mask[i] = 1n
  else mask.fill(1n, from, to)
}

/** Sets `mask[from, to)` to 0. */
function zeros(mask: BigInt64Array, from: number, to: number): void {
  if (to - from <= 8) for (let i = from; i < to; i++) mask[i] = 0n
  else mask.fill(0n, from, to)
}

/** A derived input's elements, before they are wrapped as a host or a runtime tensor. */
export interface DerivedArray {
  readonly dtype: "int64" | "bool"
  readonly shape: number[]
  readonly data: BigInt64Array | Uint8Array
}

/**
 * The derived inputs from each row's valid cache positions (`mark(mask, r, at)` writes row r's
 * `past` entries from `at`: 1 at its valid positions, 0 at the others), its position count, and
 * `s` new tokens. `markAll(mask, w, lent)`, when given, writes the whole mask instead (`lent`:
 * the array is the session's, kept from call to call).
 */
function derivedArrays(
  names: readonly string[],
  rows: number,
  past: number,
  s: number,
  mark: (mask: BigInt64Array, r: number, at: number) => void,
  count: (r: number) => number,
  useCache: boolean,
  lend: Lend | undefined,
  markAll?: (mask: BigInt64Array, w: number, lent: boolean) => void,
): Record<string, DerivedArray> | StructureMismatchError {
  const out: Record<string, DerivedArray> = {}
  if (names.includes(USE_CACHE))
    out[USE_CACHE] = { dtype: "bool", shape: [1], data: Uint8Array.of(useCache ? 1 : 0) }
  if (names.includes(MASK)) {
    // Filled in place: the mask spans the whole cache every step, a value per position.
    const w = past + s
    // An array the session lends spares a fresh one each step: every entry is written below.
    const lent = lend?.(MASK, "int64", rows * w) as BigInt64Array | undefined
    const mask = lent ?? new BigInt64Array(rows * w)
    if (markAll !== undefined) markAll(mask, w, lent !== undefined)
    else {
      for (let r = 0; r < rows; r++) {
        mark(mask, r, r * w)
        ones(mask, r * w + past, (r + 1) * w)
      }
    }
    out[MASK] = { dtype: "int64", shape: [rows, w], data: mask }
  }
  if (names.includes(POSITIONS)) {
    // Lent (written over whole): a fresh array per step is garbage the run's caller pays for.
    const positions = (lend?.(POSITIONS, "int64", rows * s) ??
      new BigInt64Array(rows * s)) as BigInt64Array
    fillInt64(positions, s === 1 ? count : (i) => count(Math.floor(i / s)) + (i % s))
    out[POSITIONS] = { dtype: "int64", shape: [rows, s], data: positions }
  }
  if (names.includes(CACHE_POSITION)) {
    const first = count(0)
    for (let r = 1; r < rows; r++) {
      if (count(r) !== first) {
        return new StructureMismatchError({
          path: CACHE_POSITION,
          expected: "rows at one length (cache_position is one vector for the batch)",
          actual: `row 0 at ${first}, row ${r} at ${count(r)}`,
        })
      }
    }
    out[CACHE_POSITION] = int64([s], (i) => first + i)
  }
  return out
}

/** Derived inputs as host tensors (what a rule's `derive` returns), or the error. */
function asHost<E extends StateError>(
  arrays: Record<string, DerivedArray> | E,
): Record<string, Host> | E {
  if (arrays instanceof StateError) return arrays as E
  const out: Record<string, Host> = {}
  for (const name in arrays) {
    const { dtype, shape, data } = (arrays as Record<string, DerivedArray>)[name] as DerivedArray
    out[name] = new Host(dtype, shape, data)
  }
  return out
}

/**
 * The refusal of a run mixing rows under way with a fresh or reset row of an encoder–decoder:
 * the cross-attention cache is computed on a step without the cache, for every row at once, so
 * the fresh row would attend to zeros.
 */
export const noEncoderCache = (kept: string, row: number): StructureMismatchError =>
  new StructureMismatchError({
    path: kept,
    expected: "an encoder cache in every row (each filled by the batch's first step)",
    actual: `none in row ${row}`,
    detail:
      "an encoder-decoder's fresh or reset rows start together, without the cache: run new streams of a StreamingSession in a call of their own, or reset every row of a StatefulSession",
  })

/**
 * The runs of ones of each row of a 0/1 mask `[rows, past]`, as `[from, to)` pairs of offsets in
 * the row: a row is scanned once, and its runs (most rows have one: a conversation after
 * padding) are then written with `fill`, not a store per position. A run's end is found by the
 * array's own `indexOf` (a row of a long conversation is one run of ones, scanned natively).
 */
function runsOfOnes(data: Uint8Array, rows: number, past: number): number[][] {
  const runs: number[][] = new Array(rows)
  for (let r = 0; r < rows; r++) {
    const row: number[] = []
    const base = r * past
    const view = data.subarray(base, base + past)
    let j = 0
    while (j < past) {
      while (j < past && view[j] === 0) j++
      if (j === past) break
      const from = j
      const zero = view.indexOf(0, j)
      j = zero < 0 ? past : zero
      row.push(from, j)
    }
    runs[r] = row
  }
  return runs
}

/**
 * The inputs a growing cache derives for `s` new tokens of rows whose valid positions are the
 * ones of `mask` (`[rows, past]`, 0/1), or the refusal of a run mixing rows under way with a
 * fresh one of an encoder–decoder (`kept`: its kept cache). The growing rule's `derive`, and a
 * `StatefulSession`'s step when that rule is its only one.
 */
export function growingCacheInputs(
  names: readonly string[],
  mask: Uint8Array,
  rows: number,
  past: number,
  s: number,
  lend: Lend | undefined,
  kept?: string,
  allValid = mask.indexOf(0) < 0,
): Record<string, DerivedArray> | StructureMismatchError {
  // Every position valid (no row reset, rewound or padded): one fill, as a loop that keeps every
  // row at one length writes it. No row is empty then unless there is no past at all.
  if (allValid) {
    return derivedArrays(names, rows, past, s, markNone, () => past, past > 0, lend, allOnes)
  }
  const runs = runsOfOnes(mask, rows, past)
  const counts = new Array<number>(rows)
  for (let r = 0; r < rows; r++) {
    const row = runs[r] as number[]
    let c = 0
    for (let i = 0; i < row.length; i += 2) c += (row[i + 1] as number) - (row[i] as number)
    counts[r] = c
  }
  const empty = counts.indexOf(0)
  if (kept !== undefined && past > 0 && empty >= 0) return noEncoderCache(kept, empty)
  return derivedArrays(
    names,
    rows,
    past,
    s,
    (out, r, at) => {
      const row = runs[r] as number[]
      let j = 0
      for (let i = 0; i < row.length; i += 2) {
        const from = row[i] as number
        const to = row[i + 1] as number
        zeros(out, at + j, at + from)
        ones(out, at + from, at + to)
        j = to
      }
      zeros(out, at + j, at + past)
    },
    (r) => counts[r] as number,
    // Any past at all is fed, masked rows included.
    past > 0,
    lend,
  )
}

/**
 * The `attention_mask` and `position_ids` a growing cache derives when every position of every
 * row is valid (all rows at one length, none reset, rewound or padded), written into memory kept
 * from call to call: a mask of ones only grows, so each call sets only the elements past those
 * an earlier call set (one per row and new token); the positions are a value per row and token.
 * Only this object writes its memory, and the runtime is done with it once a run is over.
 * `undefined` when the model takes other derived inputs (the rule's own code writes those).
 */
export function allValidInputs(names: readonly string[]): AllValidInputs | undefined {
  return names.every((n) => n === MASK || n === POSITIONS)
    ? new AllValidInputs(names.includes(MASK), names.includes(POSITIONS))
    : undefined
}

export class AllValidInputs {
  #mask = new BigInt64Array(0)
  /** The leading elements of `#mask` that hold 1 (all the others hold 0). */
  #ones = 0
  #positions = new BigInt64Array(0)
  /** `#positions` as 32-bit words, whose high words stay 0 (`fillInt64`). */
  #words = new Int32Array(0)

  constructor(
    readonly mask: boolean,
    readonly positions: boolean,
  ) {}

  /** The inputs for `s` new tokens of `rows` rows at `past` positions each. */
  inputs(rows: number, past: number, s: number): Record<string, DerivedArray> {
    const out: Record<string, DerivedArray> = {}
    if (this.mask) {
      const w = past + s
      const n = rows * w
      let mask = this.#mask
      if (mask.length < n) {
        // Room for the steps to come: the mask grows by a position per row at every step.
        mask = this.#mask = new BigInt64Array(n + (n >> 1))
        this.#ones = 0
      }
      if (this.#ones < n) {
        mask.fill(1n, this.#ones, n)
        this.#ones = n
      }
      out[MASK] = {
        dtype: "int64",
        shape: [rows, w],
        data: new BigInt64Array(mask.buffer, 0, n),
      }
    }
    if (this.positions) {
      const n = rows * s
      let positions = this.#positions
      if (positions.length !== n) {
        positions = this.#positions = new BigInt64Array(n)
        this.#words = new Int32Array(positions.buffer)
      }
      if (LITTLE_ENDIAN) {
        const words = this.#words
        for (let i = 0; i < n; i++) words[2 * i] = past + (i % s)
      } else for (let i = 0; i < n; i++) positions[i] = BigInt(past + (i % s))
      out[POSITIONS] = { dtype: "int64", shape: [rows, s], data: positions }
    }
    return out
  }
}

/** `markAll` of a mask whose every position is valid. */
const allOnes = (mask: BigInt64Array): void => void mask.fill(1n)
/** `mark` never called (`markAll` writes the mask). */
const markNone = (): void => {}

/**
 * A growing cache's mask after `s` new tokens: each row's `past` entries, then `s` ones; written
 * into `out` (`rows * (past + s)` elements, not `mask`'s memory) when given. `allValid`: `mask`
 * holds no 0 (found by the caller's own scan, when it made one).
 */
export function grownMask(
  mask: Uint8Array,
  rows: number,
  past: number,
  s: number,
  out = allocateData("uint8", rows * (past + s)) as Uint8Array,
  allValid = mask.indexOf(0) < 0,
): Uint8Array {
  const w = past + s
  if (allValid) return out.fill(1)
  for (let r = 0; r < rows; r++) {
    out.set(mask.subarray(r * past, (r + 1) * past), r * w)
    if (s === 1) out[r * w + past] = 1
    else out.fill(1, r * w + past, (r + 1) * w)
  }
  return out
}

function growingRule(
  dim: string,
  tokens: string,
  names: readonly string[],
  kept: string | undefined,
): InputRule {
  return {
    name: "kvCache",
    inputs: names,
    reads: [tokens],
    state: { [CACHE_MASK]: { row: [dim], dtype: "uint8" } },
    derive(call) {
      const refused = refuseTokens(call, tokens)
      if (refused !== undefined) return refused
      const mask = call.state[CACHE_MASK] as HostTensor
      return asHost(
        growingCacheInputs(
          names,
          mask.data as Uint8Array,
          call.batchSize,
          mask.shape[1] as number,
          newTokens(call, tokens),
          (call as { [SCRATCH]?: Lend })[SCRATCH],
          kept,
        ),
      )
    },
    next(call) {
      const mask = call.state[CACHE_MASK] as HostTensor
      const past = mask.shape[1] as number
      const s = newTokens(call, tokens)
      const out = grownMask(mask.data as Uint8Array, call.batchSize, past, s)
      return { [CACHE_MASK]: new Host("uint8", [call.batchSize, past + s], out) }
    },
  }
}

/**
 * The inputs a fixed cache derives for `s` new tokens of rows at `lengths` (`names`: those the
 * model takes), or the error refusing the call: a row past the `capacity`, or `cache_position`
 * for rows at different lengths. The fixed rule's `derive`, and a `StatefulSession`'s step when
 * that rule is its only one (which wraps the arrays for the runtime without host tensors).
 */
export function fixedCacheInputs(
  names: readonly string[],
  lengths: Int32Array,
  rows: number,
  capacity: number,
  s: number,
  lend: Lend | undefined,
): Record<string, DerivedArray> | ShapeMismatchError | StructureMismatchError {
  for (let r = 0; r < rows; r++) {
    if ((lengths[r] as number) + s > capacity) {
      return new ShapeMismatchError({
        path: LENGTH,
        expected: `at most ${capacity} positions (the cache's capacity)`,
        actual: (lengths[r] as number) + s,
        detail: `row ${r} holds ${lengths[r]} and this call adds ${s}`,
      })
    }
  }
  const mark = (mask: BigInt64Array, r: number, at: number): void => {
    const end = at + (lengths[r] as number)
    ones(mask, at, end)
    mask.fill(0n, end, at + capacity)
  }
  return derivedArrays(
    names,
    rows,
    capacity,
    s,
    mark,
    (r) => lengths[r] as number,
    lengths.some((l) => l > 0),
    lend,
    (mask, w, lent) => {
      // A lent mask holds the last call's: only the positions whose rows' lengths moved change.
      const last = lent ? maskHolds.get(mask.buffer) : undefined
      if (
        last !== undefined &&
        last.at === mask.byteOffset &&
        last.length === mask.length &&
        last.past === capacity &&
        last.w === w
      ) {
        const was = last.lengths
        for (let r = 0; r < rows; r++) {
          const from = was[r] as number
          const to = lengths[r] as number
          if (to > from) ones(mask, r * w + from, r * w + to)
          else if (to < from) zeros(mask, r * w + to, r * w + from)
          was[r] = to
        }
        return
      }
      for (let r = 0; r < rows; r++) {
        mark(mask, r, r * w)
        ones(mask, r * w + capacity, (r + 1) * w)
      }
      if (lent) {
        maskHolds.set(mask.buffer, {
          at: mask.byteOffset,
          length: mask.length,
          past: capacity,
          w,
          lengths: lengths.slice(0, rows),
        })
      }
    },
  )
}

/**
 * What the memory of each lent fixed-cache mask holds, by its buffer: the view last written
 * (`at`, `length`), for rows at `lengths` over `past` positions and `w - past` new tokens. The
 * next call that gets the same view then writes only the positions whose rows moved (one per row
 * on a one-token step) instead of the whole capacity; any other view of the buffer (a lender
 * hands out shorter views of its array for fewer rows) writes the whole mask and replaces the
 * record.
 */
const maskHolds = new WeakMap<
  ArrayBufferLike,
  { at: number; length: number; past: number; w: number; lengths: Int32Array }
>()

/** Each row's length after the call's new tokens, written into `into` (the held lengths or new). */
function lengthsAfter(call: RuleCall, tokens: string, into: Int32Array): Int32Array {
  const lengths = (call.state[LENGTH] as HostTensor).data as Int32Array
  const s = newTokens(call, tokens)
  // A loop, not `Int32Array.from` with a map function (many times slower).
  for (let r = 0; r < into.length; r++) into[r] = (lengths[r] as number) + s
  return into
}

function fixedRule(dim: string, tokens: string, names: readonly string[]): InputRule & Advancing {
  return {
    name: "kvCache",
    inputs: names,
    reads: [tokens],
    state: { [LENGTH]: { row: [], dtype: "int32" } },
    derive(call) {
      const refused = refuseTokens(call, tokens)
      if (refused !== undefined) return refused
      return asHost(
        fixedCacheInputs(
          names,
          (call.state[LENGTH] as HostTensor).data as Int32Array,
          call.batchSize,
          call.dims[dim] as number,
          newTokens(call, tokens),
          (call as { [SCRATCH]?: Lend })[SCRATCH],
        ),
      )
    },
    next(call) {
      const next = lengthsAfter(call, tokens, new Int32Array(call.batchSize))
      return { [LENGTH]: new Host("int32", [call.batchSize], next) }
    },
    [ADVANCE](call) {
      lengthsAfter(call, tokens, (call.state[LENGTH] as HostTensor).data as Int32Array)
    },
  }
}

/** Errors `rewind` can return besides a busy or disposed session. */
export type RewindError = OptionError | RowIndexError | ShapeMismatchError | StructureMismatchError

/**
 * Refuses a rewind of a session whose state holds more than the cache's positions: a hybrid
 * model's recurrent state, or another rule's bookkeeping leaf (of `rules`), has no positions to
 * drop, so dropping the cache's alone would leave the two out of step.
 */
export function refuseRewind(
  plan: CachePlan,
  rules: { readonly spec: Readonly<Record<string, unknown>> },
): StructureMismatchError | undefined {
  const name = plan.recurrent[0] ?? Object.keys(rules.spec).find((leaf) => leaf !== plan.leaf)
  if (name === undefined) return undefined
  return new StructureMismatchError({
    path: formatPath([name]),
    expected: "only state a rewind can roll back (KV caches and their bookkeeping)",
    actual: plan.recurrent.includes(name) ? "recurrent state (no positions)" : "a rule's state",
    detail:
      "a rewind drops cache positions only: snapshot the state before the tokens to drop and restore it instead",
  })
}

/** The error of `rewind` on a session without a cache. */
export const noCache = (): OptionError =>
  new OptionError({
    path: "cache",
    expected: "a session created with the cache option",
    actual: undefined,
  })

/**
 * The bookkeeping leaf after dropping the last `n` positions of `rows`: a fixed cache's
 * lengths go down by `n`; a growing cache's mask loses its last `n` set positions per row
 * (the keys stay, masked). Checked first: rows in range and distinct, `n` a non-negative
 * integer no larger than any of those rows' lengths.
 */
export function rewound(
  plan: CachePlan,
  leaf: HostTensor,
  rows: unknown,
  n: unknown,
): E.Either<RewindError, { name: string; next: Host }> {
  const isCount = (x: unknown) => Number.isSafeInteger(x) && (x as number) >= 0
  const perRow = Array.isArray(n)
  if (
    perRow
      ? n.length !== (Array.isArray(rows) ? rows.length : -1) || !n.every(isCount)
      : !isCount(n)
  ) {
    return E.left(
      new OptionError({
        path: "n",
        expected: "a non-negative integer, or one per row of rows",
        actual: n,
      }),
    )
  }
  const batch = leaf.shape[0] as number
  if (!Array.isArray(rows)) {
    return E.left(new RowIndexError({ expected: "an array of row indices", actual: rows }))
  }
  const seen = new Set<number>()
  for (const r of rows as unknown[]) {
    if (
      !Number.isSafeInteger(r) ||
      (r as number) < 0 ||
      (r as number) >= batch ||
      seen.has(r as number)
    ) {
      return E.left(
        new RowIndexError({
          path: "",
          expected: `distinct row indices in [0, ${batch})`,
          actual: rows,
          detail: `${String(r)} is not one`,
        }),
      )
    }
    seen.add(r as number)
  }
  const order = [...seen]
  const countOf = (r: number): number => (perRow ? (n[order.indexOf(r)] as number) : (n as number))
  if (plan.lengthLeaf !== undefined) {
    const lengths = Int32Array.from(leaf.data as Int32Array)
    for (const r of seen) {
      const k = countOf(r)
      if ((lengths[r] as number) < k) {
        return E.left(
          new ShapeMismatchError({
            path: plan.lengthLeaf,
            expected: `at least ${k} positions to rewind in row ${r}`,
            actual: lengths[r],
          }),
        )
      }
      lengths[r] = (lengths[r] as number) - k
    }
    return E.right({ name: plan.lengthLeaf, next: new Host("int32", [batch], lengths) })
  }
  const past = leaf.shape[1] as number
  const mask = Uint8Array.from(leaf.data as Uint8Array)
  for (const r of seen) {
    const k = countOf(r)
    let count = 0
    for (let j = 0; j < past; j++) count += mask[r * past + j] as number
    if (count < k) {
      return E.left(
        new ShapeMismatchError({
          path: CACHE_MASK,
          expected: `at least ${k} positions to rewind in row ${r}`,
          actual: count,
        }),
      )
    }
    for (let j = past - 1, left = k; j >= 0 && left > 0; j--) {
      if (mask[r * past + j] === 1) {
        mask[r * past + j] = 0
        left--
      }
    }
  }
  return E.right({ name: CACHE_MASK, next: new Host("uint8", [batch, past], mask) })
}

/**
 * A snapshot's cache bookkeeping, checked before a restore changes anything: a fixed cache's
 * lengths within `[0, capacity]`, a growing cache's mask of 0s and 1s. Returns the decoded
 * snapshot (restored as is), or the `SnapshotFormatError` naming the leaf and the row.
 */
export function checkRestored(
  plan: CachePlan,
  given: Uint8Array | Snapshot,
): E.Either<SnapshotFormatError, Uint8Array | Snapshot> {
  const decoded = given instanceof Uint8Array ? decodeSnapshot(given) : E.right(given)
  if (decoded._tag === "Left") return decoded
  const snap = decoded.right
  const t = snap.tensors instanceof Map ? snap.tensors.get(plan.leaf) : undefined
  // A snapshot without the leaf, or of another shape, is refused by the restore itself.
  if (t === undefined) return E.right(snap)
  const capacity = plan.dims[plan.dim]
  const values = Array.from(t.data as ArrayLike<number>)
  const bad = values.findIndex((v) =>
    capacity === undefined ? v !== 0 && v !== 1 : !(v >= 0 && v <= capacity),
  )
  if (bad < 0) return E.right(snap)
  const row = capacity === undefined ? Math.floor(bad / ((t.shape[1] as number) || 1)) : bad
  return E.left(
    new SnapshotFormatError({
      path: plan.leaf,
      expected:
        capacity === undefined
          ? "a mask of 0s and 1s"
          : `lengths in [0, ${capacity}] (the capacity)`,
      actual: values[bad],
      detail: `row ${row}`,
    }),
  )
}
