// Writes ONNX models in code, with subgraphs (the `If` node's branches) and typed constants.
// onnx-builder.ts covers flat graphs; this one adds the GraphProto attribute (`g`).
import type { TensorValue } from "./onnx-builder.js"
import { DataType, type ElemType, ModelProto } from "./onnx-proto.js"

/** A node attribute: the scalar and list kinds of onnx-builder.ts, plus a subgraph. */
export type GraphAttr =
  | { readonly i: number }
  | { readonly f: number }
  | { readonly s: string }
  | { readonly ints: readonly number[] }
  | { readonly floats: readonly number[] }
  | { readonly t: TensorValue }
  | { readonly g: Graph }

/** A dim: a size, a symbolic name, or (for a whole shape) `undefined` for "rank unknown". */
export type Shape = readonly (number | string)[] | undefined

const ATTR_TYPE = { f: 1, i: 2, s: 3, t: 4, g: 5, floats: 6, ints: 7 } as const

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
      return { ...base, int32Data: Array.from(t.values as ArrayLike<number>, (v) => Number(v)) }
  }
}

function valueInfo(name: string, dtype: ElemType, shape: Shape): Record<string, unknown> {
  const tensorType: Record<string, unknown> = { elemType: DataType[dtype] }
  if (shape !== undefined)
    tensorType.shape = {
      dim: shape.map((d) => (typeof d === "number" ? { dimValue: d } : { dimParam: d })),
    }
  return { name, type: { tensorType } }
}

/**
 * A graph under construction: inputs, outputs, initializers and nodes. A subgraph made with
 * {@link Graph.subgraph} shares its parent's fresh-name counter, since ONNX forbids a subgraph
 * from reusing a name of an enclosing scope.
 */
export class Graph {
  readonly #inputs: Record<string, unknown>[] = []
  readonly #outputs: Record<string, unknown>[] = []
  readonly #inits: Record<string, unknown>[] = []
  readonly #nodes: Record<string, unknown>[] = []
  readonly #counter: { n: number }

  constructor(
    readonly name = "g",
    counter: { n: number } = { n: 0 },
  ) {
    this.#counter = counter
  }

  /** A branch graph (no inputs; it reads its enclosing scope by name). */
  subgraph(name: string): Graph {
    return new Graph(name, this.#counter)
  }

  /** A name no other value of this graph family uses. */
  fresh(prefix = "t"): string {
    return `${prefix}_${this.#counter.n++}`
  }

  input(name: string, dtype: ElemType, shape: Shape): string {
    this.#inputs.push(valueInfo(name, dtype, shape))
    return name
  }

  /** Declares `value` as an output of this graph. */
  output(name: string, dtype: ElemType, shape: Shape): string {
    this.#outputs.push(valueInfo(name, dtype, shape))
    return name
  }

  /** Adds an initializer (a fresh name unless one is given) and returns its name. */
  init(t: TensorValue, name = this.fresh("c")): string {
    this.#inits.push(tensorProto(name, t))
    return name
  }

  /** An int64 constant, 1-D by default (`dims: []` for a scalar). */
  i64(values: readonly number[], dims: readonly number[] = [values.length]): string {
    return this.init({ dtype: "int64", dims, values })
  }

  /** A float32 constant, scalar by default. */
  f32(values: readonly number[] | Float32Array, dims: readonly number[] = []): string {
    return this.init({ dtype: "float32", dims, values })
  }

  /** Adds a node; returns its outputs (fresh names where `outputs` is a count). */
  node(
    opType: string,
    inputs: readonly string[],
    outputs: readonly string[] | number,
    attrs: Record<string, GraphAttr> = {},
  ): string[] {
    const outs =
      typeof outputs === "number"
        ? Array.from({ length: outputs }, () => this.fresh())
        : [...outputs]
    this.#nodes.push({
      opType,
      name: this.fresh(opType),
      input: [...inputs],
      output: outs,
      attribute: Object.entries(attrs).map(([k, v]) => attribute(k, v)),
    })
    return outs
  }

  /** The output of a single-output node (named `name` when given). */
  op(
    opType: string,
    inputs: readonly string[],
    attrs: Record<string, GraphAttr> = {},
    name?: string,
  ): string {
    return this.node(opType, inputs, name === undefined ? 1 : [name], attrs)[0] as string
  }

  /** The GraphProto as a plain object. */
  toProto(): Record<string, unknown> {
    return {
      name: this.name,
      node: this.#nodes,
      initializer: this.#inits,
      input: this.#inputs,
      output: this.#outputs,
    }
  }
}

function attribute(name: string, v: GraphAttr): Record<string, unknown> {
  if ("i" in v) return { name, type: ATTR_TYPE.i, i: v.i }
  if ("f" in v) return { name, type: ATTR_TYPE.f, f: v.f }
  if ("s" in v) return { name, type: ATTR_TYPE.s, s: new TextEncoder().encode(v.s) }
  if ("ints" in v) return { name, type: ATTR_TYPE.ints, ints: [...v.ints] }
  if ("floats" in v) return { name, type: ATTR_TYPE.floats, floats: [...v.floats] }
  if ("g" in v) return { name, type: ATTR_TYPE.g, g: v.g.toProto() }
  return { name, type: ATTR_TYPE.t, t: tensorProto("", v.t) }
}

/** Encodes a model (IR version 8, default-domain opset `opset`). */
export function encodeModel(graph: Graph, opset = 17): Uint8Array {
  const model = {
    irVersion: 8,
    producerName: "statesaver-tests",
    opsetImport: [{ domain: "", version: opset }],
    graph: graph.toProto(),
  }
  const err = ModelProto.verify(model)
  if (err !== null) throw new Error(`invalid model: ${err}`)
  return ModelProto.encode(ModelProto.fromObject(model)).finish()
}
