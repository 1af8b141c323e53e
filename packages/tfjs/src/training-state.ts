import * as tf from "@tensorflow/tfjs"
import {
  BackendError,
  type BatchSizeMismatchError,
  type DType,
  type DTypeMismatchError,
  type ShapeMismatchError,
  type StructureMismatchError,
  type ResolvedSpec,
  type RowIndexError,
  type SpecError,
  type StateTree,
  unflatten,
} from "@statesaver/core"
import { checkMask, checkResolvedSpec, checkSelection, checkStateTree } from "./internal/checks.js"
import * as E from "./internal/either.js"
import { gatherRows, initTensor, maskAlong, whereRows } from "./internal/rows.js"

/**
 * A per-row mask: a `[batch]` tensor (bool, or int32/float32 where nonzero means true), booleans,
 * or 0/1 numbers (an array or a `Uint8Array`).
 *
 * @category training
 * @since 0.1.0
 */
export type RowMask = tf.Tensor | readonly boolean[] | readonly number[] | Uint8Array

/**
 * A `[batch, n]` mask: for each row, one flag per time step (`TbpttBatch.starts`) or per window
 * (`TbpttBatch.windowStarts`). A rank-2 tensor (bool, or int32/float32 where nonzero means true),
 * or one array per row of booleans or 0/1 numbers (an array or a `Uint8Array`).
 *
 * @example
 * // 2 rows, 4 steps: row 1's next document begins at step 2
 * const starts: StepMask = [[0, 0, 0, 0], [0, 0, 1, 0]]
 * @category training
 * @since 0.2.0
 */
export type StepMask = tf.Tensor | readonly (readonly boolean[] | readonly number[] | Uint8Array)[]

/**
 * The errors `resetWhere` and `selectRows` can return: a spec that is not resolved, a state that
 * does not match it, bad rows, or a tf op that threw.
 *
 * @category training
 * @since 0.2.0
 */
export type RowOpError =
  | SpecError
  | StructureMismatchError
  | DTypeMismatchError
  | ShapeMismatchError
  | BatchSizeMismatchError
  | RowIndexError
  | BackendError

/**
 * Sets the masked rows of a state tree back to their init, as tf ops inside a training step:
 * `tf.where(mask, init, state)`, so the reset rows also receive no gradient. The given tensors
 * are not disposed; the result is new tensors. `Left` on a spec that is not resolved, a state
 * that does not match it (structure, live tensors, dtype, shape, one batch size) or a mask that
 * is not one entry per row.
 *
 * @example
 * const loss = optimizer.minimize(() => {
 *   const start = orThrow(resetWhere(saver.spec, saver.state(), episodeStarts))
 *   const { output } = orThrow(rnn.run(x, start, { training: true }))
 *   return tf.mean(tf.square(output)) as tf.Scalar
 * })
 * @category training
 * @since 0.1.0
 */
export function resetWhere(
  spec: ResolvedSpec,
  state: StateTree<tf.Tensor>,
  mask: RowMask,
): E.Either<RowOpError, StateTree<tf.Tensor>> {
  const resolved = checkResolvedSpec(spec)
  if (resolved._tag === "Left") return resolved
  const checked = checkStateTree(spec, state)
  if (checked._tag === "Left") return checked
  const { tensors, batchSize } = checked.right
  const valid = checkMask(mask, batchSize)
  if (valid._tag === "Left") return valid
  const m = valid.right
  return attempt(
    "resetWhere",
    () =>
      tf.tidy(() => {
        const flags =
          m instanceof tf.Tensor
            ? m.dtype === "bool"
              ? m
              : tf.notEqual(m, 0)
            : tf.tensor1d(
                Uint8Array.from(m as ArrayLike<number | boolean>, (v) => (v ? 1 : 0)),
                "bool",
              )
        return tensors.map((t, i) => {
          const leaf = spec.leaves[i]
          if (leaf === undefined) return t
          const fresh = initTensor(t.shape, t.dtype as DType, leaf.init, leaf.batchAxis)
          return whereRows(maskAlong(flags, t.rank, leaf.batchAxis), fresh, t)
        })
      }),
    (out) => unflatten(spec.def, out),
  )
}

/**
 * Gathers rows of a state tree into a new batch as tf ops (differentiable): drop, reorder,
 * duplicate; `null` makes an init row. The given tensors are not disposed. `Left` as
 * `resetWhere`, or on rows that are not integers in `[0, batch)` or null (at least one). (The gradient of a
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
): E.Either<RowOpError, StateTree<tf.Tensor>> {
  const resolved = checkResolvedSpec(spec)
  if (resolved._tag === "Left") return resolved
  const checked = checkStateTree(spec, state)
  if (checked._tag === "Left") return checked
  const { tensors, batchSize } = checked.right
  const valid = checkSelection(rows, batchSize)
  if (valid._tag === "Left") return valid
  const picked = valid.right
  return attempt(
    "selectRows",
    () =>
      tf.tidy(() =>
        tensors.map((t, i) => {
          const leaf = spec.leaves[i]
          return leaf === undefined ? t : gatherRows(t, picked, leaf.init, leaf.batchAxis)
        }),
      ),
    (out) => unflatten(spec.def, out),
  )
}

/** Runs tf ops (inside `tidy`), turning a throw into a `BackendError`. */
function attempt(
  operation: string,
  run: () => tf.Tensor[],
  wrap: (out: tf.Tensor[]) => StateTree<tf.Tensor>,
): E.Either<BackendError, StateTree<tf.Tensor>> {
  try {
    return E.right(wrap(run()))
  } catch (e) {
    return E.left(new BackendError({ backend: `tfjs(${tf.getBackend()})`, operation, cause: e }))
  }
}
