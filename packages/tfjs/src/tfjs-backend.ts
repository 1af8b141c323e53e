import * as tf from "@tensorflow/tfjs"
import {
  type DType,
  DTypeMismatchError,
  HostTensor,
  type LeafContext,
  OptionError,
  type StateBackend,
  type TensorInfo,
} from "@statesaver/core"
import { isPlainRecord } from "./internal/checks.js"
import {
  TF_DTYPES,
  gatherRows,
  initTensor,
  isTfDType,
  rowMask,
  tensorFromHost,
  whereRows,
} from "./internal/rows.js"

/**
 * Options of `tfjsBackend`.
 *
 * @category backend
 * @since 0.1.0
 */
export interface TfjsBackendOptions {
  /** Prefix of every variable name; each name is `<prefix>/<leaf path>/<serial>`. Default `"statesaver"`. */
  readonly namePrefix?: string
}

/**
 * The tfjs backend's type: state held in non-trainable `tf.Variable`s; `save` and `scatter`
 * also take any `tf.Tensor` (assigned into the variables).
 *
 * @category backend
 * @since 0.1.0
 */
export type TfjsBackend = StateBackend<tf.Variable, tf.Tensor>

const ON_DEVICE = new Set(["webgl", "webgpu"])

let serial = 0

/**
 * A backend that keeps each state leaf in a non-trainable `tf.Variable` named after its path.
 * `save` assigns (the variable shares the new tensor's data, nothing is copied), row operations
 * run as tf ops inside `tidy`, and the gradient stops at saved state.
 *
 * Backends are nouns that return a plain value: bad options throw an `OptionError` (the factories
 * that validate state, `create*`, return an `Either` instead).
 *
 * @example
 * const saver = orThrow(createStateSaver({ spec: lstmSpec([64, 32]), backend: tfjsBackend(), batchSize: 8 }))
 * @throws OptionError when `options` is not an object or `namePrefix` is not a string.
 * @category backend
 * @since 0.1.0
 */
export function tfjsBackend(options: TfjsBackendOptions = {}): TfjsBackend {
  if (!isPlainRecord(options)) {
    throw new OptionError({
      path: "options",
      expected: "an options object or nothing",
      actual: options,
    })
  }
  const prefix: unknown = options.namePrefix === undefined ? "statesaver" : options.namePrefix
  if (typeof prefix !== "string") {
    throw new OptionError({ path: "namePrefix", expected: "a string", actual: options.namePrefix })
  }
  // tfjs keeps one global registry of variable names: every allocation gets a fresh serial.
  const variable = (t: tf.Tensor, leaf: LeafContext): tf.Variable =>
    tf.variable(t, false, `${prefix}/${leaf.path === "" ? "state" : leaf.path}/${serial++}`)
  // Core refuses a spec with another dtype first; this guards direct use of the primitives.
  const checkDType = (dtype: DType, path: string): void => {
    if (!isTfDType(dtype))
      throw new DTypeMismatchError({ path, expected: TF_DTYPES.join(", "), actual: dtype })
  }
  return {
    // Read at use: the tfjs backend may be chosen after this backend is created.
    get name() {
      return `tfjs(${tf.getBackend()})`
    },
    get capabilities() {
      return { dtypes: TF_DTYPES, onDevice: ON_DEVICE.has(tf.getBackend()) }
    },
    describe(x: unknown): TensorInfo | undefined {
      if (!(x instanceof tf.Tensor) || x.isDisposed || !isTfDType(x.dtype)) return undefined
      return { shape: x.shape, dtype: x.dtype }
    },
    allocate(shape, dtype, leaf) {
      checkDType(dtype, leaf.path)
      return tf.tidy(() => variable(initTensor(shape, dtype, leaf.init, leaf.batchAxis), leaf))
    },
    gather(src, rows, leaf) {
      return tf.tidy(() => variable(gatherRows(src, rows, leaf.init, leaf.batchAxis), leaf))
    },
    scatter(dst, rows, src, leaf) {
      const axis = leaf.batchAxis
      const n = dst.shape[axis] as number
      const m = src.shape[axis] as number
      // Nothing to write into a 0-sized tensor (and tfjs-wasm's gather mis-shapes one).
      if (dst.size === 0) return
      tf.tidy(() => {
        // Row j of the result is row i of src when rows[i] === j, else row j of dst (offset by m).
        const index = Int32Array.from({ length: n }, (_, j) => m + j)
        rows.forEach((r, i) => {
          index[r] = i
        })
        const merged = tf.gather(tf.concat([src, dst], axis), tf.tensor1d(index, "int32"), axis)
        dst.assign(merged)
      })
    },
    fill(t, rows, leaf) {
      const axis = leaf.batchAxis
      const n = t.shape[axis] as number
      tf.tidy(() => {
        const fresh = initTensor(t.shape, t.dtype as DType, leaf.init, axis)
        t.assign(rows.length === n ? fresh : whereRows(rowMask(rows, n, t.rank, axis), fresh, t))
      })
    },
    adopt(held, next, leaf) {
      if (held.dtype === next.dtype && tf.util.arraysEqual(held.shape, next.shape)) {
        held.assign(next)
        next.dispose()
        return held
      }
      // A new batch size (or a grown named dim): a variable cannot change shape.
      const fresh = variable(next, leaf)
      next.dispose()
      held.dispose()
      return fresh
    },
    toHost(t) {
      const shape = [...t.shape]
      const dtype = t.dtype as DType
      // The read starts now, from a clone: it shares the data (reference-counted), so assigning
      // to or freeing the variable before an asynchronous GPU read resolves cannot reach it.
      const copy = tf.clone(t)
      const pending = copy.data().finally(() => copy.dispose())
      return pending.then((data) => {
        switch (dtype) {
          case "float32":
            return new HostTensor(
              "float32",
              shape,
              data instanceof Float32Array
                ? data.slice()
                : Float32Array.from(data as ArrayLike<number>),
            )
          case "int32":
            return new HostTensor(
              "int32",
              shape,
              data instanceof Int32Array
                ? data.slice()
                : Int32Array.from(data as ArrayLike<number>),
            )
          default:
            return new HostTensor(
              "bool",
              shape,
              Uint8Array.from(data as ArrayLike<number>, (v) => (v ? 1 : 0)),
            )
        }
      })
    },
    fromHost(host, leaf) {
      return tf.tidy(() => variable(tensorFromHost(host), leaf))
    },
    dispose(t) {
      t.dispose()
    },
  }
}
