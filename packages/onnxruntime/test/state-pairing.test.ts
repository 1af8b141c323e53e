import { orThrow } from "@statesaver/core"
import * as ortWeb from "onnxruntime-web"
import { describe, expect, it } from "vitest"
import {
  conventionalInput,
  createStatefulSession,
  ortBackend,
  pairStateNames,
  sessionStateSpec,
  stateOutputLocations,
} from "../src/index.js"
import { GraphBuilder, seededFloats } from "./helpers/onnx-builder.js"

ortWeb.env.wasm.numThreads = 1

describe("pairing state outputs with state inputs", () => {
  it("follows the naming conventions of real models", () => {
    const cases: [string, string[], string][] = [
      ["present.0.key", ["input_ids", "past_key_values.0.key"], "past_key_values.0.key"],
      ["present.3.value", ["past.3.value"], "past.3.value"],
      ["hn", ["input", "h", "c"], "h"],
      ["cn", ["input", "h", "c"], "c"],
      ["Y_h", ["X", "initial_h"], "initial_h"],
      ["Y_c.1", ["initial_c.1"], "initial_c.1"],
      ["stateN", ["input", "state", "sr"], "state"],
      ["conv_state_out", ["conv_state_in"], "conv_state_in"],
      ["new_h", ["x", "h"], "h"],
    ]
    for (const [output, inputs, expected] of cases)
      expect(conventionalInput(output, inputs), output).toBe(expected)
    expect(conventionalInput("logits", ["x"])).toBeUndefined()
    expect(conventionalInput("hn", ["x"])).toBeUndefined()
  })

  it("an explicit map overrides the conventions", () => {
    const pairs = orThrow(
      pairStateNames(["x", "h", "mem"], ["y", "hn", "mem_next"], { mem_next: "mem" }),
    )
    expect(pairs).toEqual([
      { input: "h", output: "hn" },
      { input: "mem", output: "mem_next" },
    ])
  })

  it("a state input left unpaired is a StructureMismatchError naming it", () => {
    const r = pairStateNames(["x", "h", "c"], ["y", "hn"])
    expect(r._tag === "Left" && r.left._tag).toBe("StructureMismatchError")
    expect(r._tag === "Left" && r.left.path).toBe("c")
  })

  it("an explicit pair naming a missing input or output is an OptionError naming the pair", () => {
    const r = pairStateNames(["x", "h"], ["y", "hn"], { hn: "hidden" })
    expect(r).toMatchObject({
      _tag: "Left",
      left: { _tag: "OptionError", path: "explicit.hn", actual: "hidden" },
    })
    expect(r._tag === "Left" && r.left.message).toContain('got "hidden"')
    const r2 = pairStateNames(["x", "h"], ["y", "hn"], { nope: "h" })
    expect(r2).toMatchObject({
      _tag: "Left",
      left: { _tag: "OptionError", path: "explicit.nope", actual: "nope" },
    })
  })

  it("two outputs feeding one input are refused", () => {
    const r = pairStateNames(["x", "h"], ["hn", "new_h"])
    expect(r._tag === "Left" && r.left._tag).toBe("StructureMismatchError")
  })
})

/** A one-op model `h [batch, 4]` → `new_h` with the given output tail. */
async function session(build: (g: GraphBuilder, h: string) => void) {
  const g = new GraphBuilder()
  g.input("x", "float32", ["batch", 4])
  const h = g.input("h", "float32", ["batch", 4])
  build(g, h)
  g.node("Identity", ["x"], ["y"])
  g.output("y", "float32", ["batch", 4])
  return ortWeb.InferenceSession.create(g.build())
}

describe("stateOutputLocations", () => {
  it("keeps exactly the paired state outputs on the GPU", () => {
    const inputs = ["input", "sr", "state", "past_key_values.0.key"]
    const outputs = ["output", "stateN", "present.0.key", "logits"]
    expect(stateOutputLocations(inputs, outputs)).toEqual({
      stateN: "gpu-buffer",
      "present.0.key": "gpu-buffer",
    })
    const explicit = stateOutputLocations(["h"], ["h_next", "y"], { h_next: "h" })
    expect(explicit).toEqual({ h_next: "gpu-buffer" })
  })

  it("throws the typed pairing error (it returns a plain record, not an Either)", () => {
    expect(() => stateOutputLocations(["state"], ["output"])).toThrow(
      expect.objectContaining({ _tag: "StructureMismatchError", path: "state" }),
    )
    expect(() => stateOutputLocations(["h"], "hn" as never)).toThrow(
      expect.objectContaining({ _tag: "OptionError", path: "outputs", actual: "hn" }),
    )
  })
})

describe("createStatefulSession checks each pair against the model's metadata", () => {
  it("a state output whose fixed dims disagree with its input is a ShapeMismatchError", async () => {
    const s = await session((g, h) => {
      g.node(
        "MatMul",
        [h, g.init("W", { dtype: "float32", dims: [4, 5], values: seededFloats(20, 1) })],
        ["new_h"],
      )
      g.output("new_h", "float32", ["batch", 5])
    })
    const r = createStatefulSession({
      session: s,
      backend: ortBackend({ ort: ortWeb }),
      batchSize: 2,
    })
    expect(r._tag === "Left" && r.left._tag).toBe("ShapeMismatchError")
    expect(r._tag === "Left" && r.left.path).toBe("h")
    expect(r._tag === "Left" && r.left.expected).toEqual(["batch", 4])
    expect(r._tag === "Left" && r.left.actual).toEqual(["batch", 5])
  })

  it("a state output whose dtype disagrees with its input is a DTypeMismatchError", async () => {
    const s = await session((g, h) => {
      g.node("Cast", [h], ["new_h"], { to: { i: 6 } })
      g.output("new_h", "int32", ["batch", 4])
    })
    const r = createStatefulSession({
      session: s,
      backend: ortBackend({ ort: ortWeb }),
      batchSize: 2,
    })
    expect(r._tag === "Left" && r.left._tag).toBe("DTypeMismatchError")
    expect(r._tag === "Left" && r.left.path).toBe("h")
    expect(r._tag === "Left" && r.left.expected).toBe("float32")
  })

  it("a state input without a paired output is refused when the session is created", async () => {
    const s = await session((g, h) => {
      g.node("Identity", [h], ["h_next"])
      g.output("h_next", "float32", ["batch", 4])
    })
    const r = createStatefulSession({
      session: s,
      backend: ortBackend({ ort: ortWeb }),
      batchSize: 2,
    })
    expect(r._tag === "Left" && r.left._tag).toBe("StructureMismatchError")
    expect(r._tag === "Left" && r.left.path).toBe("h")
    const ok = orThrow(
      createStatefulSession({
        session: s,
        backend: ortBackend({ ort: ortWeb }),
        batchSize: 2,
        pairs: { h_next: "h" },
      }),
    )
    expect(ok.pairs).toEqual([{ input: "h", output: "h_next" }])
    ok.dispose()
  })

  it("finds the batch dim named batch_size or N, or takes the one given", async () => {
    for (const name of ["batch_size", "N", "rows"]) {
      const g = new GraphBuilder()
      const h = g.input("h", "float32", [2, name, 3])
      g.node("Neg", [h], ["hn"])
      g.output("hn", "float32", [2, name, 3])
      const s = await ortWeb.InferenceSession.create(g.build())
      const r = createStatefulSession({
        session: s,
        backend: ortBackend({ ort: ortWeb }),
        batchSize: 5,
        ...(name === "rows" ? { batchDim: "rows" } : {}),
      })
      const stateful = orThrow(r)
      expect(stateful.saver.spec.leaves[0]?.batchAxis).toBe(1)
      expect(stateful.state()["h"]?.dims).toEqual([2, 5, 3])
      stateful.dispose()
    }
  })
})

describe("sessionStateSpec", () => {
  const meta = (shape: (number | string)[]) => ({
    inputMetadata: [{ name: "state", isTensor: true as const, type: "float32" as const, shape }],
    outputMetadata: [
      { name: "stateN", isTensor: true as const, type: "float32" as const, shape: [] },
    ],
  })
  const pairs = [{ input: "state", output: "stateN" }]

  it("takes the only unnamed dim as the batch (4294967295 on web, an empty name on node)", () => {
    for (const unknown of [4294967295, ""]) {
      const r = orThrow(sessionStateSpec(meta([2, unknown, 128]), pairs))
      expect(r).toEqual({
        batchDim: "batch",
        spec: { state: { shape: [2, "batch", 128], dtype: "float32" } },
      })
    }
  })

  it("refuses a state input with two unnamed dims unless its shape is given", () => {
    const r = sessionStateSpec(meta([4294967295, 4294967295, 128]), pairs)
    expect(r._tag === "Left" && r.left._tag).toBe("SpecError")
    expect(r._tag === "Left" && r.left.path).toBe("state")
    const given = orThrow(
      sessionStateSpec(meta([4294967295, 4294967295, 128]), pairs, {
        shapes: { state: [2, "batch", 128] },
      }),
    )
    expect(given.spec).toEqual({ state: { shape: [2, "batch", 128], dtype: "float32" } })
  })
})

describe("crossed pairs", () => {
  const inputs = ["X", "h", "c"]
  const outputs = ["Y", "hn", "cn"]

  it("an override that swaps two conventional pairs is refused, naming both", () => {
    const r = pairStateNames(inputs, outputs, { hn: "c", cn: "h" })
    expect(r).toMatchObject({
      _tag: "Left",
      left: { _tag: "StructureMismatchError", path: "explicit.hn" },
    })
    const message = (r as { left: Error }).left.message
    expect(message).toContain("hn → h and cn → c")
    expect(message).toContain("crossedPairs: true")
  })

  it("is allowed when asked for, and overrides that cross nothing stay allowed", () => {
    expect(
      orThrow(pairStateNames(inputs, outputs, { hn: "c", cn: "h" }, { crossedPairs: true })),
    ).toEqual([
      { input: "c", output: "hn" },
      { input: "h", output: "cn" },
    ])
    expect(orThrow(pairStateNames(inputs, outputs, { hn: "h" }))).toEqual([
      { input: "h", output: "hn" },
      { input: "c", output: "cn" },
    ])
  })
})
