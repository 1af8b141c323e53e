import * as tf from "@tensorflow/tfjs"
import {
  BackendError,
  BatchSizeMismatchError,
  DTypeMismatchError,
  DisposedError,
  KeyError,
  OptionError,
  type ResolvedSpec,
  ShapeMismatchError,
  SpecError,
  type StateSaver,
  type StateSpec,
  type StateStore,
  type StateTree,
  type StreamKey,
  type StructureMismatchError,
  disposeTree,
  resolveSpec,
  unflatten,
} from "@statesaver/core"
import type { CellLayout } from "./cell-spec.js"
import { isRnnLayer, readCellLayout } from "./internal/cell-layout.js"
import {
  type LeftOf,
  checkBooleanOption,
  checkOptionsObject,
  checkSpecAgrees,
  checkStateTree,
  checkTensor,
  isResolvedSpec,
} from "./internal/checks.js"
import * as E from "./internal/either.js"

/**
 * Options of `StatefulRnn.run` and `StatefulRnn.apply`.
 *
 * @category layers
 * @since 0.1.0
 */
export interface RunOptions {
  /** Passed to the layer (dropout). A boolean; default false. */
  readonly training?: boolean
}

/**
 * What `StatefulRnn.run` returns: the layer's output and its final state (first layer first).
 *
 * @category layers
 * @since 0.1.0
 */
export interface RnnResult {
  readonly output: tf.Tensor
  readonly state: StateTree<tf.Tensor>
}

/**
 * An RNN layer paired with its state layout: feeds a state tree as `initialState` and returns
 * the final states in the same tree order, whatever order tfjs-layers uses inside.
 *
 * @category layers
 * @since 0.1.0
 */
export interface StatefulRnn {
  readonly layer: tf.RNN
  readonly layout: CellLayout
  /** The state spec of the layer (`cellLayout(layer).spec`). */
  readonly spec: StateSpec
  /**
   * Runs the layer from `state` (`[batch, time, features]` inputs) and returns the output with
   * the final state as new tensors; nothing is saved. Use it inside a training step.
   */
  run(
    inputs: tf.Tensor,
    state: StateTree<tf.Tensor>,
    options?: RunOptions,
  ): E.Either<RunError, RnnResult>
  /**
   * Runs the layer from the saver's state, saves the final state and returns the output. The
   * saver must hold this layer's spec (as `createStateSaver({ spec: rnn.spec, ... })` gives) on a
   * tfjs backend, and have one row per input row.
   */
  apply(
    inputs: tf.Tensor,
    saver: StateSaver<tf.Variable, tf.Tensor>,
    options?: RunOptions,
  ): E.Either<ApplyError, tf.Tensor>
  /**
   * Runs one batch of independent streams: row `i` of `inputs` belongs to `keys[i]`. Their state
   * is gathered from the store (a new key starts at init), the layer runs once, and each row's
   * final state is scattered back to its stream. Returns the batched output, rows in key order.
   * Everything is checked before the store is touched; should the layer still fail, keys this
   * call added are deleted again.
   */
  applyStreams(
    inputs: tf.Tensor,
    store: StateStore<tf.Variable, tf.Tensor>,
    keys: readonly StreamKey[],
    options?: RunOptions,
  ): E.Either<ApplyStreamsError, tf.Tensor>
}

/**
 * What `createStatefulRnn` can return on a bad layer.
 *
 * @category layers
 * @since 0.2.0
 */
export type CreateStatefulRnnError = SpecError

/**
 * Errors of `StatefulRnn.run`: inputs that are not a live float32 `[batch, time, features]`
 * tensor of the layer's features, a state that does not match the layer's spec at the inputs'
 * batch size, bad options, or the layer throwing.
 *
 * @category layers
 * @since 0.2.0
 */
export type RunError =
  | StructureMismatchError
  | ShapeMismatchError
  | DTypeMismatchError
  | BatchSizeMismatchError
  | OptionError
  | BackendError

type Saver = StateSaver<tf.Variable, tf.Tensor>
type Store = StateStore<tf.Variable, tf.Tensor>

/**
 * Errors of `StatefulRnn.apply`: those of `run`, a saver that is not a saver (`OptionError`),
 * disposed (`DisposedError`) or of another spec (`SpecError`), and those of `saver.save`.
 *
 * @category layers
 * @since 0.2.0
 */
export type ApplyError = RunError | DisposedError | SpecError | LeftOf<ReturnType<Saver["save"]>>

/**
 * Errors of `StatefulRnn.applyStreams`: those of `run`, keys that are not an array (`KeyError`),
 * a store that is not a store or of another spec, and those of `store.gather` / `store.scatter`.
 *
 * @category layers
 * @since 0.2.0
 */
export type ApplyStreamsError =
  | RunError
  | KeyError
  | DisposedError
  | SpecError
  | LeftOf<ReturnType<Store["gather"]>>
  | LeftOf<ReturnType<Store["scatter"]>>

const INPUT_DIMS = ["batch", "time", "features"]

const hasMethods = (x: unknown, names: readonly string[]): boolean =>
  typeof x === "object" &&
  x !== null &&
  names.every((n) => typeof (x as Record<string, unknown>)[n] === "function")

const backendName = (): string => `tfjs(${tf.getBackend()})`

/**
 * Wraps an RNN layer built with `returnState: true` (and not `stateful`) so its state is carried
 * by a `StateSaver`: `apply` feeds the saved state and saves the final one in the right order.
 *
 * Factories named `create*` validate and return an `Either`: a value that is not an RNN layer, a
 * layer without `returnState: true`, a `stateful: true` layer (it keeps its own state) or a cell
 * without a readable state size is a `Left(SpecError)`; nothing throws.
 *
 * @example
 * const cell = [tf.layers.lstmCell({ units: 64 }), tf.layers.lstmCell({ units: 32 })]
 * const rnn = orThrow(createStatefulRnn(tf.layers.rnn({ cell, returnSequences: true, returnState: true }) as tf.RNN))
 * const saver = orThrow(createStateSaver({ spec: rnn.spec, backend: tfjsBackend(), batchSize: 8 }))
 * const y = orThrow(rnn.apply(x, saver)) // state carried to the next call
 * @category layers
 * @since 0.2.0
 */
export function createStatefulRnn(layer: tf.RNN): E.Either<CreateStatefulRnnError, StatefulRnn> {
  if (!isRnnLayer(layer)) {
    return E.left(
      new SpecError({
        expected: "an RNN layer (tf.layers.rnn, lstm, gru or simpleRNN)",
        actual: layer,
      }),
    )
  }
  if (layer.returnState !== true) {
    return E.left(
      new SpecError({
        path: "returnState",
        expected: "an RNN layer with returnState: true",
        actual: layer.returnState,
        detail: "the final state is read from the layer's outputs",
      }),
    )
  }
  if (layer.stateful) {
    return E.left(
      new SpecError({
        path: "stateful",
        expected: "an RNN layer with stateful: false",
        actual: layer.stateful,
        detail: "a stateful layer keeps its own state; statesaver feeds it as initialState",
      }),
    )
  }
  const read = readCellLayout(layer)
  if (read._tag === "Left") return read as E.Either<SpecError, never>
  const layout = read.right
  const { spec } = layout
  const resolvedSpec = resolveSpec(spec)
  if (resolvedSpec._tag === "Left") return resolvedSpec
  const resolved = resolvedSpec.right
  // Specs of savers and stores already found to agree with the layer's.
  const agreeing = new WeakSet<ResolvedSpec>()

  /** The inputs' features once the layer is built (it then refuses any other number). */
  const builtFeatures = (): number | undefined => {
    if (!layer.built) return undefined
    const shape = layer.inputSpec?.[0]?.shape
    const f = shape?.[shape.length - 1]
    return typeof f === "number" ? f : undefined
  }

  const checkInputs = (inputs: unknown): E.Either<RunError, tf.Tensor> => {
    const t = checkTensor(inputs, "inputs")
    if (t._tag === "Left") return t
    const x = t.right
    const features = builtFeatures()
    const expected = [...INPUT_DIMS.slice(0, 2), features ?? "features"]
    if (x.rank !== 3) {
      return E.left(
        new ShapeMismatchError({
          path: "inputs",
          expected,
          actual: x.shape,
          detail: `rank 3, got ${x.rank}`,
        }),
      )
    }
    if ((x.shape[0] as number) < 1 || (x.shape[1] as number) < 1) {
      return E.left(
        new ShapeMismatchError({
          path: "inputs",
          expected,
          actual: x.shape,
          detail: "at least one row and one time step",
        }),
      )
    }
    if (features !== undefined && x.shape[2] !== features) {
      return E.left(
        new ShapeMismatchError({
          path: "inputs",
          expected,
          actual: x.shape,
          detail: `the layer was built for ${features} features`,
        }),
      )
    }
    if (x.dtype !== "float32")
      return E.left(
        new DTypeMismatchError({ path: "inputs", expected: "float32", actual: x.dtype }),
      )
    return E.right(x)
  }

  const checkRunOptions = (options: unknown): E.Either<OptionError, boolean> => {
    const o = checkOptionsObject(options)
    if (o._tag === "Left") return o
    const training = (options as RunOptions | undefined)?.training
    const t = checkBooleanOption(training, "training")
    if (t._tag === "Left") return t
    return E.right(training ?? false)
  }

  /** Runs the layer on checked inputs and leaves (spec order); the layer's errors become Lefts. */
  const runLeaves = (
    inputs: tf.Tensor,
    leaves: readonly tf.Tensor[],
    training: boolean,
  ): E.Either<RunError, RnnResult> => {
    const initialState = layout.tfjsOrder.map((k) => leaves[k] as tf.Tensor)
    let outs: tf.Tensor[]
    try {
      outs = tf.tidy(
        () => layer.apply(inputs, { initialState, training }) as tf.Tensor | tf.Tensor[],
      ) as tf.Tensor[]
    } catch (e) {
      return E.left(new BackendError({ backend: backendName(), operation: "RNN apply", cause: e }))
    }
    if (!Array.isArray(outs) || outs.length !== layout.tfjsOrder.length + 1) {
      tf.dispose(outs)
      return E.left(
        new BackendError({
          backend: backendName(),
          operation: "RNN apply",
          cause: new Error(
            `the layer returned ${Array.isArray(outs) ? outs.length : 1} tensors, expected ${layout.tfjsOrder.length + 1}`,
          ),
        }),
      )
    }
    const [output, ...states] = outs as [tf.Tensor, ...tf.Tensor[]]
    const next = new Array<tf.Tensor>(states.length)
    layout.tfjsOrder.forEach((k, i) => {
      next[k] = states[i] as tf.Tensor
    })
    return E.right({ output, state: unflatten(resolved.def, next) })
  }

  const run = (
    inputs: tf.Tensor,
    state: StateTree<tf.Tensor>,
    options: RunOptions = {},
  ): E.Either<RunError, RnnResult> => {
    const x = checkInputs(inputs)
    if (x._tag === "Left") return x
    const training = checkRunOptions(options)
    if (training._tag === "Left") return training
    const checked = checkStateTree(resolved, state, {
      size: x.right.shape[0] as number,
      path: "inputs",
    })
    if (checked._tag === "Left") return checked
    return runLeaves(x.right, checked.right.tensors, training.right)
  }

  const checkAgrees = (
    holder: Saver | Store,
    whose: "saver" | "store",
  ): E.Either<OptionError | DisposedError | SpecError, void> => {
    const methods =
      whose === "saver" ? ["state", "save", "select"] : ["gather", "scatter", "delete", "has"]
    if (!hasMethods(holder, methods) || !isResolvedSpec((holder as { spec?: unknown }).spec)) {
      return E.left(
        new OptionError({
          path: whose,
          expected: whose === "saver" ? "a StateSaver" : "a StateStore",
          actual: holder,
        }),
      )
    }
    if (holder.disposed)
      return E.left(new DisposedError({ what: whose === "saver" ? "StateSaver" : "StateStore" }))
    if (agreeing.has(holder.spec)) return E.right(undefined)
    const agrees = checkSpecAgrees(resolved, holder.spec, whose)
    if (agrees._tag === "Left") return agrees
    agreeing.add(holder.spec)
    return E.right(undefined)
  }

  return E.right({
    layer,
    layout,
    spec,
    run,
    apply(inputs, saver, options = {}) {
      const x = checkInputs(inputs)
      if (x._tag === "Left") return x
      const training = checkRunOptions(options)
      if (training._tag === "Left") return training
      const ok = checkAgrees(saver, "saver")
      if (ok._tag === "Left") return ok
      const rows = x.right.shape[0] as number
      if (rows !== saver.batchSize) {
        return E.left(
          new BatchSizeMismatchError({
            path: "inputs",
            expected: saver.batchSize,
            actual: rows,
            axis: 0,
            detail: "one input row per saver row",
          }),
        )
      }
      // The saver's tensors follow its spec, which agrees with the layer's: only their kind is
      // left to check (a saver on another backend holds no tf tensors).
      const leaves = checkStateTree(resolved, saver.state(), { size: rows, path: "inputs" })
      if (leaves._tag === "Left") return leaves
      const result = runLeaves(x.right, leaves.right.tensors, training.right)
      if (result._tag === "Left") return result
      const saved = saver.save(result.right.state)
      if (saved._tag === "Left") {
        tf.dispose([result.right.output, ...collect(result.right.state)])
        return saved
      }
      return E.right(result.right.output)
    },
    applyStreams(inputs, store, keys, options = {}) {
      const x = checkInputs(inputs)
      if (x._tag === "Left") return x
      const training = checkRunOptions(options)
      if (training._tag === "Left") return training
      if (!Array.isArray(keys))
        return E.left(new KeyError({ expected: "an array of stream keys", actual: keys }))
      const rows = x.right.shape[0] as number
      if (rows !== keys.length) {
        return E.left(
          new BatchSizeMismatchError({
            path: "inputs",
            expected: keys.length,
            actual: rows,
            axis: 0,
            detail: "one input row per key",
          }),
        )
      }
      const ok = checkAgrees(store, "store")
      if (ok._tag === "Left") return ok
      const fresh = keys.filter((k) => !store.has(k))
      const gathered = store.gather(keys)
      if (gathered._tag === "Left") return gathered
      const leaves = checkStateTree(resolved, gathered.right, { size: rows, path: "inputs" })
      const result =
        leaves._tag === "Left" ? leaves : runLeaves(x.right, leaves.right.tensors, training.right)
      disposeTree(store.backend, gathered.right)
      if (result._tag === "Left") {
        // Only a failing layer (or a store on another backend) gets here: forget the keys this
        // call added, so the store holds what it held before.
        for (const k of fresh) store.delete(k)
        return result
      }
      const scattered = store.scatter(keys, result.right.state)
      if (scattered._tag === "Left") {
        tf.dispose([result.right.output, ...collect(result.right.state)])
        for (const k of fresh) store.delete(k)
        return scattered
      }
      return E.right(result.right.output)
    },
  })
}

/**
 * Former name of `createStatefulRnn`.
 *
 * @deprecated Use `createStatefulRnn` (factories that validate and return an `Either` are named
 * `create*`); this alias goes away in the next minor release.
 * @category layers
 * @since 0.1.0
 */
export const statefulRnn: (layer: tf.RNN) => E.Either<CreateStatefulRnnError, StatefulRnn> =
  createStatefulRnn

function collect(tree: StateTree<tf.Tensor>): tf.Tensor[] {
  if (tree instanceof tf.Tensor) return [tree]
  if (tree === null || typeof tree !== "object") return []
  return Object.values(tree as Record<string, StateTree<tf.Tensor>>).flatMap(collect)
}
