// Writes ONNX models in code, and reads ONNX TensorProto files, for the tests.
import { ModelProto, TensorProto, DataType, type ElemType } from "./onnx-proto.js"

export type AttrValue =
  | { readonly i: number }
  | { readonly f: number }
  | { readonly s: string }
  | { readonly ints: readonly number[] }
  | { readonly floats: readonly number[] }
  | { readonly t: TensorValue }

/** A constant tensor (initializer or attribute). */
export interface TensorValue {
  readonly dtype: ElemType
  readonly dims: readonly number[]
  readonly values: ArrayLike<number> | ArrayLike<bigint>
}

interface ValueInfo {
  name: string
  dtype: ElemType
  shape: readonly (number | string)[]
}

const ATTR_TYPE = { f: 1, i: 2, s: 3, t: 4, floats: 6, ints: 7 } as const

function tensorProto(name: string, t: TensorValue): Record<string, unknown> {
  const base = { name, dims: [...t.dims], dataType: DataType[t.dtype] }
  switch (t.dtype) {
    case "float32":
      return { ...base, floatData: Array.from(t.values as ArrayLike<number>) }
    case "int64":
      return {
        ...base,
        int64Data: Array.from(t.values as ArrayLike<number | bigint>, (v) => Number(v)),
      }
    default:
      return { ...base, int32Data: Array.from(t.values as ArrayLike<number>) }
  }
}

function attribute(name: string, v: AttrValue): Record<string, unknown> {
  if ("i" in v) return { name, type: ATTR_TYPE.i, i: v.i }
  if ("f" in v) return { name, type: ATTR_TYPE.f, f: v.f }
  if ("s" in v) return { name, type: ATTR_TYPE.s, s: new TextEncoder().encode(v.s) }
  if ("ints" in v) return { name, type: ATTR_TYPE.ints, ints: [...v.ints] }
  if ("floats" in v) return { name, type: ATTR_TYPE.floats, floats: [...v.floats] }
  return { name, type: ATTR_TYPE.t, t: tensorProto("", v.t) }
}

function valueInfo(v: ValueInfo): Record<string, unknown> {
  return {
    name: v.name,
    type: {
      tensorType: {
        elemType: DataType[v.dtype],
        shape: {
          dim: v.shape.map((d) => (typeof d === "number" ? { dimValue: d } : { dimParam: d })),
        },
      },
    },
  }
}

/** Collects a graph's inputs, outputs, initializers and nodes, then encodes the model. */
export class GraphBuilder {
  readonly #inputs: ValueInfo[] = []
  readonly #outputs: ValueInfo[] = []
  readonly #inits: Record<string, unknown>[] = []
  readonly #nodes: Record<string, unknown>[] = []
  #n = 0

  input(name: string, dtype: ElemType, shape: readonly (number | string)[]): string {
    this.#inputs.push({ name, dtype, shape })
    return name
  }

  output(name: string, dtype: ElemType, shape: readonly (number | string)[]): string {
    this.#outputs.push({ name, dtype, shape })
    return name
  }

  /** Adds an initializer and returns its name. */
  init(name: string, t: TensorValue): string {
    this.#inits.push(tensorProto(name, t))
    return name
  }

  /** Adds a node; returns its output names (fresh names where `outputs` is a count). */
  node(
    opType: string,
    inputs: readonly string[],
    outputs: readonly string[] | number,
    attrs: Record<string, AttrValue> = {},
  ): string[] {
    const outs =
      typeof outputs === "number"
        ? Array.from({ length: outputs }, () => `t${this.#n++}`)
        : [...outputs]
    this.#nodes.push({
      opType,
      name: `${opType}_${this.#n++}`,
      input: [...inputs],
      output: outs,
      attribute: Object.entries(attrs).map(([k, v]) => attribute(k, v)),
    })
    return outs
  }

  /** One output of a single-output node. */
  op(opType: string, inputs: readonly string[], attrs: Record<string, AttrValue> = {}): string {
    return this.node(opType, inputs, 1, attrs)[0] as string
  }

  /** Encodes the model (IR version 8, default-domain opset `opset`). */
  build(opset = 14): Uint8Array {
    const model = {
      irVersion: 8,
      producerName: "statesaver-tests",
      opsetImport: [{ domain: "", version: opset }],
      graph: {
        name: "g",
        node: this.#nodes,
        initializer: this.#inits,
        input: this.#inputs.map(valueInfo),
        output: this.#outputs.map(valueInfo),
      },
    }
    const err = ModelProto.verify(model)
    if (err !== null) throw new Error(`invalid model: ${err}`)
    return ModelProto.encode(ModelProto.fromObject(model)).finish()
  }
}

/** Deterministic pseudo-random floats in [-scale, scale) (a 32-bit LCG). */
export function seededFloats(n: number, seed: number, scale = 0.5): Float32Array {
  let s = (seed * 2654435761) >>> 0 || 1
  const out = new Float32Array(n)
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0
    out[i] = (s / 2 ** 32 - 0.5) * 2 * scale
  }
  return out
}

/** A decoded ONNX TensorProto: name, dims and float32 values. */
export interface DecodedTensor {
  readonly name: string
  readonly dims: number[]
  readonly dtype: number
  readonly data: Float32Array | BigInt64Array | Int32Array
}

/** Reads an ONNX TensorProto (`input_0.pb`, `output_0.pb` of ONNX's node tests). */
export function decodeTensor(bytes: Uint8Array): DecodedTensor {
  const msg = TensorProto.toObject(TensorProto.decode(bytes), {
    longs: Number,
    bytes: Uint8Array,
  }) as {
    name?: string
    dims?: number[]
    dataType?: number
    floatData?: number[]
    int32Data?: number[]
    int64Data?: number[]
    rawData?: Uint8Array
  }
  const dims = msg.dims ?? []
  const dtype = msg.dataType ?? 0
  const n = dims.reduce((a, b) => a * b, 1)
  // protobufjs hands out views into the input buffer: copy before reinterpreting.
  const raw =
    msg.rawData !== undefined && msg.rawData.length > 0
      ? Uint8Array.from(msg.rawData).buffer
      : undefined
  let data: Float32Array | BigInt64Array | Int32Array
  if (dtype === DataType.float32)
    data = raw ? new Float32Array(raw) : Float32Array.from(msg.floatData ?? [])
  else if (dtype === DataType.int64)
    data = raw ? new BigInt64Array(raw) : BigInt64Array.from((msg.int64Data ?? []).map(BigInt))
  else if (dtype === DataType.int32)
    data = raw ? new Int32Array(raw) : Int32Array.from(msg.int32Data ?? [])
  else throw new Error(`decodeTensor: data type ${dtype} is not supported by this helper`)
  if (data.length !== n)
    throw new Error(`decodeTensor: ${msg.name ?? ""} has ${data.length} values for dims ${dims}`)
  return { name: msg.name ?? "", dims, dtype, data }
}

/** The first node of an ONNX model: op type, input names and attributes (for ONNX's node tests). */
export function readFirstNode(bytes: Uint8Array): {
  opType: string
  inputs: string[]
  attrs: Record<string, AttrValue>
} {
  const model = ModelProto.toObject(ModelProto.decode(bytes), {
    longs: Number,
    bytes: Uint8Array,
  }) as {
    graph?: {
      node?: {
        opType?: string
        input?: string[]
        attribute?: {
          name: string
          type: number
          i?: number
          f?: number
          s?: Uint8Array
          ints?: number[]
          floats?: number[]
        }[]
      }[]
    }
  }
  const node = model.graph?.node?.[0]
  if (node === undefined) throw new Error("readFirstNode: the model has no node")
  const attrs: Record<string, AttrValue> = {}
  for (const a of node.attribute ?? []) {
    if (a.type === ATTR_TYPE.i) attrs[a.name] = { i: a.i ?? 0 }
    else if (a.type === ATTR_TYPE.f) attrs[a.name] = { f: a.f ?? 0 }
    else if (a.type === ATTR_TYPE.s) attrs[a.name] = { s: new TextDecoder().decode(a.s) }
    else if (a.type === ATTR_TYPE.ints) attrs[a.name] = { ints: a.ints ?? [] }
    else if (a.type === ATTR_TYPE.floats) attrs[a.name] = { floats: a.floats ?? [] }
  }
  return { opType: node.opType ?? "", inputs: node.input ?? [], attrs }
}
