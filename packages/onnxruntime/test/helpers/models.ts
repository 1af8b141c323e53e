// Stateful test models written in code: a 2-layer LSTM, a GRU, a plain RNN cell and a toy
// decoder whose KV cache grows along `past_sequence_length`.
import { GraphBuilder, seededFloats } from "./onnx-builder.js"

const f32 = (dims: readonly number[], seed: number, scale = 0.5) => ({
  dtype: "float32" as const,
  dims,
  values: seededFloats(
    dims.reduce((a, b) => a * b, 1),
    seed,
    scale,
  ),
})
const i64 = (values: readonly number[]) => ({
  dtype: "int64" as const,
  dims: [values.length],
  values,
})

/**
 * Two stacked ONNX LSTM layers, time-major: `X [seq, batch, I]` → `Y [seq, batch, H]`; state
 * `initial_h.L` / `initial_c.L` `[1, batch, H]` paired with outputs `Y_h.L` / `Y_c.L`.
 */
export function lstm2(inputSize: number, hidden: number): Uint8Array {
  const g = new GraphBuilder()
  let x = g.input("X", "float32", ["seq", "batch", inputSize])
  const axis1 = g.init("axis1", i64([1]))
  for (let l = 0; l < 2; l++) {
    const inSize = l === 0 ? inputSize : hidden
    const h0 = g.input(`initial_h.${l}`, "float32", [1, "batch", hidden])
    const c0 = g.input(`initial_c.${l}`, "float32", [1, "batch", hidden])
    const w = g.init(`W${l}`, f32([1, 4 * hidden, inSize], 10 + l))
    const r = g.init(`R${l}`, f32([1, 4 * hidden, hidden], 20 + l))
    const b = g.init(`B${l}`, f32([1, 8 * hidden], 30 + l, 0.1))
    const [y] = g.node("LSTM", [x, w, r, b, "", h0, c0], [`Y${l}`, `Y_h.${l}`, `Y_c.${l}`], {
      hidden_size: { i: hidden },
    })
    x = g.op("Squeeze", [y as string, axis1])
    g.output(`Y_h.${l}`, "float32", [1, "batch", hidden])
    g.output(`Y_c.${l}`, "float32", [1, "batch", hidden])
  }
  g.node("Identity", [x], ["Y"])
  g.output("Y", "float32", ["seq", "batch", hidden])
  return g.build()
}

/** One ONNX GRU layer, time-major: `X [seq, batch, I]` → `Y`; state `hidden_in` → `hidden_out`. */
export function gru(inputSize: number, hidden: number): Uint8Array {
  const g = new GraphBuilder()
  const x = g.input("X", "float32", ["seq", "batch", inputSize])
  const h0 = g.input("hidden_in", "float32", [1, "batch", hidden])
  const w = g.init("W", f32([1, 3 * hidden, inputSize], 40))
  const r = g.init("R", f32([1, 3 * hidden, hidden], 41))
  const b = g.init("B", f32([1, 6 * hidden], 42, 0.1))
  // Y_h is named hidden_out so that it pairs with hidden_in by the `_out` → `_in` rule.
  const [y] = g.node("GRU", [x, w, r, b, "", h0], ["Y4", "hidden_out"], {
    hidden_size: { i: hidden },
    linear_before_reset: { i: 1 },
  })
  g.node("Squeeze", [y as string, g.init("axis1", i64([1]))], ["Y"])
  g.output("Y", "float32", ["seq", "batch", hidden])
  g.output("hidden_out", "float32", [1, "batch", hidden])
  return g.build()
}

/**
 * A plain (Elman) RNN cell written with MatMul/Add/Tanh, one step per run, batch on axis 0:
 * `x [batch, I]`, `h [batch, H]` → `new_h = tanh(x Wx + h Wh + b)`, `y = new_h Wo`.
 */
export function rnnCell(inputSize: number, hidden: number, outputSize = 3): Uint8Array {
  const g = new GraphBuilder()
  const x = g.input("x", "float32", ["batch", inputSize])
  const h = g.input("h", "float32", ["batch", hidden])
  const wx = g.init("Wx", f32([inputSize, hidden], 50))
  const wh = g.init("Wh", f32([hidden, hidden], 51))
  const b = g.init("b", f32([hidden], 52, 0.1))
  const wo = g.init("Wo", f32([hidden, outputSize], 53))
  const pre = g.op("Add", [g.op("Add", [g.op("MatMul", [x, wx]), g.op("MatMul", [h, wh])]), b])
  g.node("Tanh", [pre], ["new_h"])
  g.node("MatMul", ["new_h", wo], ["y"])
  g.output("y", "float32", ["batch", outputSize])
  g.output("new_h", "float32", ["batch", hidden])
  return g.build()
}

/**
 * A toy causal decoder with a KV cache per layer: `x [batch, T, D]`; each layer appends
 * `x Wk`, `x Wv` to `past_key_values.L.key/value [batch, 1, past_sequence_length, D]` along
 * the sequence and outputs `present.L.key/value`; `logits [batch, T, D]` is the sum over layers
 * of the running sum of key ⊙ value at each new position, so it depends on the whole history.
 */
export function kvDecoder(dim: number, layers = 2): Uint8Array {
  const g = new GraphBuilder()
  const x = g.input("x", "float32", ["batch", "seq", dim])
  const axis1 = g.init("axis1", i64([1]))
  const axis2 = g.init("axis2", i64([2]))
  const one = g.init("one", i64([1]))
  const big = g.init("big", i64([2 ** 40]))
  const seqLen = g.op("Gather", [g.op("Shape", [x]), one], { axis: { i: 0 } })
  const start = g.op("Neg", [seqLen])
  const cumAxis = g.init("cum_axis", { dtype: "int32", dims: [], values: [2] })
  let logits: string | undefined
  for (let l = 0; l < layers; l++) {
    const cache = ["batch", 1, "past_sequence_length", dim] as const
    const pk = g.input(`past_key_values.${l}.key`, "float32", cache)
    const pv = g.input(`past_key_values.${l}.value`, "float32", cache)
    const k = g.op("Unsqueeze", [
      g.op("MatMul", [x, g.init(`Wk${l}`, f32([dim, dim], 60 + l))]),
      axis1,
    ])
    const v = g.op("Unsqueeze", [
      g.op("MatMul", [x, g.init(`Wv${l}`, f32([dim, dim], 70 + l))]),
      axis1,
    ])
    const [presentK] = g.node("Concat", [pk, k], [`present.${l}.key`], { axis: { i: 2 } })
    const [presentV] = g.node("Concat", [pv, v], [`present.${l}.value`], { axis: { i: 2 } })
    const running = g.op("CumSum", [g.op("Mul", [presentK as string, presentV as string]), cumAxis])
    const out = g.op("Squeeze", [g.op("Slice", [running, start, big, axis2]), axis1])
    logits = logits === undefined ? out : g.op("Add", [logits, out])
    const present = ["batch", 1, "total_sequence_length", dim] as const
    g.output(`present.${l}.key`, "float32", present)
    g.output(`present.${l}.value`, "float32", present)
  }
  g.node("Identity", [logits as string], ["logits"])
  g.output("logits", "float32", ["batch", "seq", dim])
  return g.build()
}
