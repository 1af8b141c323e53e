import {
  BackendError,
  DTypeMismatchError,
  DisposedError,
  OptionError,
  ShapeMismatchError,
  StructureMismatchError,
  float16BitsToFloat32,
  formatPath,
} from "@statesaver/core"
import type * as common from "onnxruntime-common"
import type { OrtTensor } from "./ort-backend.js"
import * as E from "./internal/either.js"
import { isOrtTensor } from "./internal/validate.js"

/**
 * An ONNX Runtime tensor type: `"float32"`, `"int64"`, `"bool"`...
 *
 * @category outputs
 * @since 0.2.0
 */
export type OrtDType = common.Tensor.Type

/**
 * The typed array ONNX Runtime keeps the data of a `D` tensor in: `Float32Array` for
 * `"float32"`, `BigInt64Array` for `"int64"`, `Uint16Array` (half-precision bits) for
 * `"float16"`, `Uint8Array` for `"bool"`, `string[]` for `"string"`.
 *
 * @category outputs
 * @since 0.2.0
 */
export type OrtData<D extends OrtDType> = common.Tensor.DataTypeMap[D]

/**
 * One element of a `D` tensor as `tensorScalar` returns it: a `number` (float16 decoded), a
 * `bigint` for 64-bit integers, a `boolean` for `"bool"`, a `string` for `"string"`.
 *
 * @category outputs
 * @since 0.2.0
 */
export type OrtElement<D extends OrtDType> = common.Tensor.ElementTypeMap[D]

/**
 * Errors `tensorData` can return: a `dtype` that is no ONNX Runtime type (`OptionError`), a value
 * that is not a tensor or a tensor not on the CPU (`StructureMismatchError`), a disposed tensor
 * (`DisposedError`), another dtype (`DTypeMismatchError`), data that could not be read
 * (`BackendError`).
 *
 * @category outputs
 * @since 0.2.0
 */
export type TensorDataError =
  OptionError | StructureMismatchError | DisposedError | DTypeMismatchError | BackendError

const TYPES: ReadonlySet<string> = new Set<OrtDType>([
  "float32",
  "float16",
  "float64",
  "int8",
  "int16",
  "int32",
  "int64",
  "uint8",
  "uint16",
  "uint32",
  "uint64",
  "int4",
  "uint4",
  "bool",
  "string",
])

/**
 * A CPU tensor's data as the typed array of `dtype`, after checking that the tensor has that
 * dtype: reads an output under strict TypeScript without a cast. `name` is the path in errors
 * (default `tensor`). GPU tensors are refused: read them with `await tensor.getData()`.
 *
 * @example
 * const logits = new ort.Tensor("float32", new Float32Array(6), [2, 3])
 * const data: Float32Array = orThrow(tensorData(logits, "float32", "logits"))
 * @category outputs
 * @since 0.2.0
 */
export function tensorData<D extends OrtDType>(
  tensor: OrtTensor,
  dtype: D,
  name?: string,
): E.Either<TensorDataError, OrtData<D>> {
  const path = name === undefined ? "tensor" : formatPath([name])
  if (typeof dtype !== "string" || !TYPES.has(dtype)) {
    return E.left(
      new OptionError({
        path: "dtype",
        expected: `an ONNX Runtime tensor type (${[...TYPES].join(", ")})`,
        actual: dtype,
      }),
    )
  }
  if (!isOrtTensor(tensor)) {
    return E.left(
      new StructureMismatchError({ path, expected: "an ONNX Runtime Tensor", actual: tensor }),
    )
  }
  if (tensor.location === "none") return E.left(new DisposedError({ what: "Tensor", path }))
  if (tensor.location !== "cpu" && tensor.location !== "cpu-pinned") {
    return E.left(
      new StructureMismatchError({
        path,
        expected: "a tensor on the CPU",
        actual: `a tensor at location ${JSON.stringify(tensor.location)}`,
        detail: "read a GPU tensor with `await tensor.getData()`",
      }),
    )
  }
  if (tensor.type !== dtype) {
    return E.left(new DTypeMismatchError({ path, expected: dtype, actual: tensor.type }))
  }
  try {
    return E.right(tensor.data as OrtData<D>)
  } catch (cause) {
    return E.left(new BackendError({ backend: "onnxruntime", operation: "data", path, cause }))
  }
}

/**
 * The value of a CPU tensor of one element (any dims of size 1, `[]` or `[1, 1]`), after
 * checking its dtype: a `number` for float types (float16 decoded) and 32-bit or smaller
 * integers, a `bigint` for 64-bit ones, a `boolean` for `"bool"`. `name` is the path in errors.
 *
 * @example
 * const output = new ort.Tensor("float32", Float32Array.from([0.93]), [1, 1])
 * const speech: number = orThrow(tensorScalar(output, "float32", "output"))
 * @category outputs
 * @since 0.2.0
 */
export function tensorScalar<D extends OrtDType>(
  tensor: OrtTensor,
  dtype: D,
  name?: string,
): E.Either<TensorDataError | ShapeMismatchError, OrtElement<D>> {
  const data = tensorData(tensor, dtype, name)
  if (data._tag === "Left") return data
  const size = tensor.dims.reduce((a, b) => a * b, 1)
  if (size !== 1 || data.right.length !== 1) {
    return E.left(
      new ShapeMismatchError({
        path: name === undefined ? "tensor" : formatPath([name]),
        expected: "of one element (every dim 1)",
        actual: tensor.dims,
      }),
    )
  }
  const value = data.right[0] as number | bigint | string
  const element =
    dtype === "bool"
      ? value !== 0
      : dtype === "float16"
        ? float16BitsToFloat32(value as number)
        : value
  return E.right(element as OrtElement<D>)
}
