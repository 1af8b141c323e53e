import * as tf from "@tensorflow/tfjs"
import {
  BatchSizeMismatchError,
  type DType,
  type ResolvedSpec,
  RowIndexError,
  type StateError,
  type StateTree,
  StructureMismatchError,
  flatten,
  unflatten,
} from "@statesaver/core"
import * as E from "fp-ts/lib/Either.js"
import { gatherRows, initTensor, maskAlong, whereRows } from "./internal/rows.js"

/**
 * A per-row mask: a `[batch]` tensor (bool or 0/1), booleans, or 0/1 numbers.
 *
 * @category training
 * @since 0.1.0
 */
export type RowMask = tf.Tensor | readonly boolean[] | readonly number[] | Uint8Array

/** The spec's leaves paired with the tree's tensors, after checking count and batch size. */
function leavesOf(
  spec: ResolvedSpec,
  state: StateTree<tf.Tensor>,
): E.Either<StateError, { tensors: tf.Tensor[]; batchSize: number }> {
  const { leaves } = flatten<tf.Tensor>(state)
  if (leaves.length !== spec.leaves.length) {
    return E.left(
      new StructureMismatchError("", `${spec.leaves.length} state leaves`, leaves.length),
    )
  }
  let batchSize = -1
  for (let i = 0; i < leaves.length; i++) {
    const t = leaves[i]
    const leaf = spec.leaves[i]
    if (leaf === undefined) continue
    if (!(t instanceof tf.Tensor) || t.isDisposed) {
      return E.left(new StructureMismatchError(leaf.pathString, "a live tf.Tensor", typeof t))
    }
    if (t.rank !== leaf.shape.length) {
      return E.left(
        new StructureMismatchError(leaf.pathString, `rank ${leaf.shape.length}`, t.rank),
      )
    }
    const rows = t.shape[leaf.batchAxis] as number
    if (batchSize === -1) batchSize = rows
    else if (rows !== batchSize)
      return E.left(new BatchSizeMismatchError(leaf.pathString, batchSize, rows, leaf.batchAxis))
  }
  return E.right({ tensors: leaves, batchSize })
}

/**
 * Sets the masked rows of a state tree back to their init, as tf ops inside a training step:
 * `tf.where(mask, init, state)`, so the reset rows also receive no gradient. The given tensors
 * are not disposed; the result is new tensors.
 *
 * @example
 * const loss = optimizer.minimize(() => {
 *   const start = orThrow(resetWhere(saver.spec, saver.state(), episodeStarts))
 *   const { output, state } = orThrow(runRnn(rnn, x, start))
 *   ...
 * })
 * @category training
 * @since 0.1.0
 */
export function resetWhere(
  spec: ResolvedSpec,
  state: StateTree<tf.Tensor>,
  mask: RowMask,
): E.Either<StateError, StateTree<tf.Tensor>> {
  const checked = leavesOf(spec, state)
  if (checked._tag === "Left") return checked
  const { tensors, batchSize } = checked.right
  const length = mask instanceof tf.Tensor ? mask.size : mask.length
  if (length !== batchSize || (mask instanceof tf.Tensor && mask.rank !== 1)) {
    return E.left(
      new RowIndexError(
        `a [${batchSize}] mask`,
        mask instanceof tf.Tensor ? mask.shape : `length ${length}`,
      ),
    )
  }
  const out = tf.tidy(() => {
    const flags =
      mask instanceof tf.Tensor
        ? mask.dtype === "bool"
          ? mask
          : tf.notEqual(mask, 0)
        : tf.tensor1d(
            Uint8Array.from(mask as ArrayLike<number | boolean>, (v) => (v ? 1 : 0)),
            "bool",
          )
    return tensors.map((t, i) => {
      const leaf = spec.leaves[i]
      if (leaf === undefined) return t
      const fresh = initTensor(t.shape, t.dtype as DType, leaf.init, leaf.batchAxis)
      return whereRows(maskAlong(flags, t.rank, leaf.batchAxis), fresh, t)
    })
  })
  return E.right(unflatten(spec.def, out))
}

/**
 * Gathers rows of a state tree into a new batch as tf ops (differentiable): drop, reorder,
 * duplicate; `null` makes an init row. The given tensors are not disposed. (The gradient of a
 * gather needs the `UnsortedSegmentSum` kernel: cpu, webgl and webgpu have it, wasm does not.)
 *
 * @example
 * const smaller = orThrow(selectRows(saver.spec, state, [0, 1, 2]))
 * @category training
 * @since 0.1.0
 */
export function selectRows(
  spec: ResolvedSpec,
  state: StateTree<tf.Tensor>,
  rows: readonly (number | null)[],
): E.Either<StateError, StateTree<tf.Tensor>> {
  const checked = leavesOf(spec, state)
  if (checked._tag === "Left") return checked
  const { tensors, batchSize } = checked.right
  if (rows.length === 0) return E.left(new RowIndexError("at least one row", "[]"))
  for (const r of rows) {
    if (r !== null && (!Number.isInteger(r) || r < 0 || r >= batchSize)) {
      return E.left(new RowIndexError(`row indices in [0, ${batchSize}) or null`, r))
    }
  }
  const out = tf.tidy(() =>
    tensors.map((t, i) => {
      const leaf = spec.leaves[i]
      return leaf === undefined ? t : gatherRows(t, rows, leaf.init, leaf.batchAxis)
    }),
  )
  return E.right(unflatten(spec.def, out))
}
