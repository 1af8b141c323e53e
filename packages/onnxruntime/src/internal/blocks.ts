/*
 * A fixed-capacity KV cache takes each step's keys and values in place: the model's block
 * outputs are checked against the held cache, then written at each row's length.
 */
import {
  BackendError,
  DTypeMismatchError,
  type LeafContext,
  type ResolvedLeaf,
  ShapeMismatchError,
  type StateBackend,
} from "@statesaver/core"
import type { CachePlan } from "../kv-cache.js"
import type { OrtTensor } from "../ort-backend.js"
import * as E from "./either.js"
import { leafContext } from "./session-state.js"

/** One block to write: into `dst` along `axis`, from `block`. */
export interface BlockWrite {
  readonly dst: OrtTensor
  readonly block: OrtTensor
  readonly axis: number
  readonly leaf: LeafContext
}

/** Where a block output goes: the cache leaf (its index in spec order), and its cache axis. */
export interface BlockTarget {
  readonly input: string
  readonly output: string
  readonly index: number
  readonly axis: number
  readonly leaf: LeafContext
}

/** A fixed cache's block targets, found once when the session is made. */
export function blockTargets(plan: CachePlan, leaves: readonly ResolvedLeaf[]): BlockTarget[] {
  return plan.blocks.map(({ input, output }) => {
    const index = leaves.findIndex((l) => l.path[0] === input)
    const leaf = leaves[index] as ResolvedLeaf
    const axis = [...leaf.growing].find(([, name]) => name === plan.dim)?.[0] as number
    return { input, output, index, axis, leaf: leafContext(leaf) }
  })
}

/** Whether a block's dims are the cache's `dims` with `k` positions along `axis` (no array built). */
function fitsBlock(
  block: readonly number[],
  dims: readonly number[],
  axis: number,
  k: number,
): boolean {
  if (block.length !== dims.length) return false
  for (let i = 0; i < dims.length; i++) if (block[i] !== (i === axis ? k : dims[i])) return false
  return true
}

/**
 * The writes of a fixed cache's block outputs into the held cache leaves (`held(target)`), each
 * checked first: the cache's dtype, and its shape but `new` positions along the cache's dim.
 */
export function planWrites(
  targets: readonly BlockTarget[],
  held: (target: BlockTarget) => OrtTensor,
  outputs: Readonly<Record<string, OrtTensor>>,
  newTokens: number,
): E.Either<ShapeMismatchError | DTypeMismatchError, BlockWrite[]> {
  const writes: BlockWrite[] = []
  for (const target of targets) {
    const { input, output, axis, leaf } = target
    const dst = held(target)
    const block = outputs[output] as OrtTensor
    if (block.type !== dst.type) {
      return E.left(
        new DTypeMismatchError({
          path: output,
          expected: `${dst.type}, the dtype of cache ${input}`,
          actual: block.type,
        }),
      )
    }
    if (!fitsBlock(block.dims, dst.dims, axis, newTokens)) {
      const want = dst.dims.map((d, i) => (i === axis ? newTokens : d))
      return E.left(
        new ShapeMismatchError({
          path: output,
          expected: `[${want.join(", ")}]: cache ${input} with this step's ${newTokens} positions`,
          actual: block.dims,
          detail:
            'a fixed cache takes only the new keys and values; a model that outputs the whole cache needs { kind: "growing" }',
        }),
      )
    }
    writes.push({ dst, block, axis, leaf })
  }
  return E.right(writes)
}

/**
 * A lean step's end: the step's blocks checked (`planWrites`) and written at each row's length,
 * then `lengths` advanced by `tokens`, only once every block is written (a refusal leaves them
 * as they were). `offsets` takes the lengths before the step.
 */
export function writeAtLengths(
  backend: StateBackend<OrtTensor>,
  targets: readonly BlockTarget[],
  held: (target: BlockTarget) => OrtTensor,
  outputs: Readonly<Record<string, OrtTensor>>,
  tokens: number,
  lengths: Int32Array,
  offsets: number[],
): E.Either<ShapeMismatchError | DTypeMismatchError | BackendError, void> {
  const planned = planWrites(targets, held, outputs, tokens)
  if (planned._tag === "Left") return planned
  offsets.length = lengths.length
  for (let r = 0; r < lengths.length; r++) offsets[r] = lengths[r] as number
  const written = writeBlocks(backend, planned.right, offsets)
  if (written._tag === "Left") return written
  for (let r = 0; r < lengths.length; r++) lengths[r] = (lengths[r] as number) + tokens
  return E.right(undefined)
}

/** Writes the blocks at `offsets` (each row's length before the step). */
export function writeBlocks(
  backend: StateBackend<OrtTensor>,
  writes: readonly BlockWrite[],
  offsets: readonly number[],
): E.Either<BackendError, void> {
  for (const w of writes) {
    try {
      ;(backend.writeAt as NonNullable<typeof backend.writeAt>)(
        w.dst,
        w.axis,
        offsets,
        w.block,
        w.leaf,
      )
    } catch (cause) {
      return E.left(
        new BackendError({ backend: backend.name, operation: "writeAt", path: w.leaf.path, cause }),
      )
    }
  }
  return E.right(undefined)
}
