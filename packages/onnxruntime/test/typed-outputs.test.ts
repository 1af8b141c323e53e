// Typed outputs: the `outputs` option types what `run` resolves to (and is checked against the
// model), and `tensorData` / `tensorScalar` read a tensor as its dtype's typed array without a cast.
import {
  type DTypeMismatchError,
  type DisposedError,
  type OptionError,
  type ShapeMismatchError,
  type StreamKey,
  type StructureMismatchError,
  orThrow,
} from "@statesaver/core"
import type * as common from "onnxruntime-common"
import * as ortNode from "onnxruntime-node"
import { describe, expect, expectTypeOf, it } from "vitest"
import {
  type OrtSession,
  type OrtTensor,
  type StatefulSession,
  type StreamingSession,
  type TensorDataError,
  createStatefulSession,
  createStreamingSession,
  ortBackend,
  tensorData,
  tensorScalar,
} from "../src/index.js"
import type { Runtime } from "./helpers/harness.js"
import { rnnCell } from "./helpers/models.js"
import { GraphBuilder, seededFloats } from "./helpers/onnx-builder.js"

const ort = ortNode as unknown as Runtime
const INPUT = 3
const HIDDEN = 4

/**
 * A plain RNN cell with two non-state outputs: `x [batch, I]`, `h [batch, H]` →
 * `new_h = tanh(x Wx + h Wh)` (state), `y = new_h Wo` and `pre` (the pre-activation).
 */
function twoOutputCell(): Uint8Array {
  const g = new GraphBuilder()
  const x = g.input("x", "float32", ["batch", INPUT])
  const h = g.input("h", "float32", ["batch", HIDDEN])
  const wx = g.init("Wx", { dtype: "float32", dims: [INPUT, HIDDEN], values: seededFloats(12, 1) })
  const wh = g.init("Wh", {
    dtype: "float32",
    dims: [HIDDEN, HIDDEN],
    values: seededFloats(16, 2),
  })
  const wo = g.init("Wo", { dtype: "float32", dims: [HIDDEN, 2], values: seededFloats(8, 3) })
  g.node("Add", [g.op("MatMul", [x, wx]), g.op("MatMul", [h, wh])], ["pre"])
  g.node("Tanh", ["pre"], ["new_h"])
  g.node("MatMul", ["new_h", wo], ["y"])
  g.output("y", "float32", ["batch", 2])
  g.output("pre", "float32", ["batch", HIDDEN])
  g.output("new_h", "float32", ["batch", HIDDEN])
  return g.build()
}

const model = twoOutputCell()
const xs = (batch: number, seed: number): OrtTensor =>
  new ort.Tensor("float32", seededFloats(batch * INPUT, seed), [batch, INPUT])

type RightOf<R> = [R] extends [Promise<infer P>]
  ? RightOf<P>
  : R extends { _tag: "Right"; right: infer A }
    ? A
    : never

/** The real session, with every output record `run` resolved to kept in `seen`. */
function recording(session: common.InferenceSession): {
  session: OrtSession
  seen: Record<string, OrtTensor>[]
} {
  const seen: Record<string, OrtTensor>[] = []
  const wrapped: OrtSession = {
    inputNames: session.inputNames,
    outputNames: session.outputNames,
    inputMetadata: session.inputMetadata,
    outputMetadata: session.outputMetadata,
    run: (async (feeds: common.InferenceSession.FeedsType) => {
      const out = await session.run(feeds)
      seen.push(out)
      return out
    }) as OrtSession["run"],
  }
  return { session: wrapped, seen }
}

describe("types of typed outputs", () => {
  it("`outputs` makes run resolve to a record of exactly those names, each an OrtTensor", () => {
    type Stateful = ReturnType<typeof createStatefulSession<"y">>
    expectTypeOf<RightOf<Stateful>>().toEqualTypeOf<StatefulSession<"y">>()
    type Out = RightOf<ReturnType<StatefulSession<"y">["run"]>>
    expectTypeOf<Out>().toEqualTypeOf<Record<"y", OrtTensor>>()
    expectTypeOf<Out["y"]>().toEqualTypeOf<OrtTensor>()
    type StreamOut = RightOf<ReturnType<StreamingSession<"y" | "pre">["run"]>>
    expectTypeOf<StreamOut>().toEqualTypeOf<Map<StreamKey, Record<"y" | "pre", OrtTensor>>>()
    // Without `outputs`, a record by any name, which strict TypeScript reads as possibly absent.
    type Loose = RightOf<ReturnType<StatefulSession["run"]>>
    expectTypeOf<Loose>().toEqualTypeOf<Record<string, OrtTensor>>()
  })

  it("the type parameter is inferred from the option, without `as const`", async () => {
    const session = await ort.InferenceSession.create(model)
    const typed = orThrow(
      createStatefulSession({
        session,
        backend: ortBackend({ ort }),
        batchSize: 1,
        outputs: ["y"],
      }),
    )
    expectTypeOf(typed).toEqualTypeOf<StatefulSession<"y">>()
    const loose = orThrow(
      createStatefulSession({ session, backend: ortBackend({ ort }), batchSize: 1 }),
    )
    expectTypeOf(loose).toEqualTypeOf<StatefulSession>()
    const streaming = orThrow(
      createStreamingSession({ session, ort, backend: ortBackend({ ort }), outputs: ["y", "pre"] }),
    )
    expectTypeOf(streaming).toEqualTypeOf<StreamingSession<"y" | "pre">>()
    const out = orThrow(await typed.run({ x: xs(1, 1) }))
    const y: Float32Array = orThrow(tensorData(out.y, "float32"))
    expect(y).toHaveLength(2)
    // @ts-expect-error `pre` was not asked for
    expect(out.pre).toBeUndefined()
    out.y.dispose()
    for (const s of [typed, loose, streaming]) s.dispose()
  })

  it("tensorData and tensorScalar return the dtype's array and element types", () => {
    const t = new ort.Tensor("float32", [1], [1])
    expectTypeOf(orThrow(tensorData(t, "float32"))).toEqualTypeOf<Float32Array>()
    type Data<D extends common.Tensor.Type> = RightOf<ReturnType<typeof tensorData<D>>>
    expectTypeOf<Data<"int64">>().toEqualTypeOf<BigInt64Array>()
    expectTypeOf<Data<"float16">>().toEqualTypeOf<Uint16Array>()
    expectTypeOf<Data<"string">>().toEqualTypeOf<string[]>()
    type Scalar<D extends common.Tensor.Type> = RightOf<ReturnType<typeof tensorScalar<D>>>
    expectTypeOf<Scalar<"float32">>().toEqualTypeOf<number>()
    expectTypeOf<Scalar<"float16">>().toEqualTypeOf<number>()
    expectTypeOf<Scalar<"int64">>().toEqualTypeOf<bigint>()
    expectTypeOf<Scalar<"bool">>().toEqualTypeOf<boolean>()
    type LeftOf<R> = R extends { _tag: "Left"; left: infer L } ? L : never
    expectTypeOf<LeftOf<ReturnType<typeof tensorData>>>().toEqualTypeOf<TensorDataError>()
    expectTypeOf<LeftOf<ReturnType<typeof tensorScalar>>>().toEqualTypeOf<
      TensorDataError | ShapeMismatchError
    >()
    expectTypeOf<
      DisposedError | DTypeMismatchError | StructureMismatchError
    >().toExtend<TensorDataError>()
  })
})

describe("the outputs option (onnxruntime-node)", () => {
  it("StatefulSession: run hands back only the listed outputs, equal to an unfiltered session's, and frees the rest", async () => {
    const real = await ort.InferenceSession.create(model)
    const { session, seen } = recording(real)
    const backend = ortBackend({ ort })
    const typed = orThrow(createStatefulSession({ session, backend, batchSize: 2, outputs: ["y"] }))
    const all = orThrow(createStatefulSession({ session: real, backend, batchSize: 2 }))
    for (let step = 0; step < 3; step++) {
      const out = orThrow(await typed.run({ x: xs(2, step) }))
      const ref = orThrow(await all.run({ x: xs(2, step) }))
      expect(Object.keys(out)).toEqual(["y"])
      expect(Object.keys(ref).sort()).toEqual(["pre", "y"])
      expect(Array.from(orThrow(tensorData(out.y, "float32")))).toEqual(
        Array.from(orThrow(tensorData(ref["y"] ?? out.y, "float32"))),
      )
      const raw = seen[step]
      expect(raw?.["y"]).toBe(out.y) // handed over as ONNX Runtime returned it
      expect(raw?.["pre"]?.location).toBe("none") // not asked for: disposed
      expect(raw?.["new_h"]?.location).toBe("cpu") // state: kept by the session
      for (const t of [out.y, ...Object.values(ref)]) t.dispose()
    }
    typed.dispose()
    all.dispose()
    expect(backend.liveTensors()).toBe(0)
  })

  it("StreamingSession: each stream gets only the listed outputs, equal to a session's of batch 1; the rest are freed", async () => {
    const real = await ort.InferenceSession.create(model)
    const { session, seen } = recording(real)
    const backend = ortBackend({ ort })
    const streaming = orThrow(createStreamingSession({ session, ort, backend, outputs: ["y"] }))
    const refs = ["a", "b"].map(() =>
      orThrow(createStatefulSession({ session: real, backend: ortBackend({ ort }), batchSize: 1 })),
    )
    for (let step = 0; step < 3; step++) {
      const outs = orThrow(
        await streaming.run([
          { key: "a", feeds: { x: xs(1, 10 + step) } },
          { key: "b", feeds: { x: xs(1, 20 + step) } },
        ]),
      )
      expect(seen[step]?.["pre"]?.location).toBe("none")
      let i = 0
      for (const [key, out] of outs) {
        expect(Object.keys(out), String(key)).toEqual(["y"])
        const ref = orThrow(
          await (refs[i] as StatefulSession).run({ x: xs(1, (i + 1) * 10 + step) }),
        )
        expect(out.y.dims).toEqual([1, 2])
        const got = orThrow(tensorData(out.y, "float32"))
        const want = orThrow(tensorData(ref["y"] ?? out.y, "float32"))
        got.forEach((v, j) => expect(v).toBeCloseTo(want[j] ?? NaN, 6))
        for (const t of [out.y, ...Object.values(ref)]) t.dispose()
        i++
      }
      expect(i).toBe(2)
    }
    // One stream: ONNX Runtime's outputs are handed over, the unlisted one freed.
    const one = orThrow(await streaming.run([{ key: "a", feeds: { x: xs(1, 99) } }]))
    const raw = seen[3]
    expect(one.get("a")?.y).toBe(raw?.["y"])
    expect(raw?.["pre"]?.location).toBe("none")
    one.get("a")?.y.dispose()
    streaming.dispose()
    for (const r of refs) r.dispose()
    expect(backend.liveTensors()).toBe(0)
  })

  it("refuses outputs that are not distinct non-state outputs of the model, naming the entry", async () => {
    const session = await ort.InferenceSession.create(model)
    const cases: [unknown, string, unknown, RegExp][] = [
      [["new_h"], "outputs[0]", "new_h", /new_h is a state output.*its outputs: y, pre/],
      [["y", "nope"], "outputs[1]", "nope", /its outputs: y, pre/],
      [["y", "y"], "outputs[1]", "y", /a name not listed before/],
      ["y", "outputs", "y", /an array of names/],
      [[7], "outputs[0]", 7, /a name \(a string\)/],
    ]
    for (const [outputs, path, actual, message] of cases) {
      const backend = ortBackend({ ort })
      const options = { session, backend, batchSize: 1, outputs: outputs as string[] }
      for (const r of [
        createStatefulSession(options),
        createStreamingSession({ ...options, ort }),
      ]) {
        expect(r._tag, path).toBe("Left")
        if (r._tag === "Right") continue
        expect(r.left._tag).toBe("OptionError")
        expect(r.left.path).toBe(path)
        expect(r.left.actual).toBe(actual)
        expect(r.left.message).toMatch(message)
      }
      expect(backend.liveTensors()).toBe(0) // nothing allocated
    }
    const cell = await ort.InferenceSession.create(rnnCell(INPUT, HIDDEN, 2))
    const r = createStatefulSession({
      session: cell,
      backend: ortBackend({ ort }),
      batchSize: 1,
      outputs: [],
    })
    expect(r._tag).toBe("Right") // an empty list: run hands back nothing
    if (r._tag === "Right") {
      const out = orThrow(await r.right.run({ x: xs(1, 1) }))
      expect(Object.keys(out)).toEqual([])
      r.right.dispose()
    }
  })
})

describe("tensorData and tensorScalar", () => {
  it("read a CPU tensor's data and single value by dtype", () => {
    const f = new ort.Tensor("float32", Float32Array.from([0.25, 0.5]), [1, 2])
    expect(orThrow(tensorData(f, "float32"))).toBe(f.data)
    expect(orThrow(tensorScalar(new ort.Tensor("float32", [0.75], [1, 1]), "float32"))).toBe(0.75)
    expect(orThrow(tensorScalar(new ort.Tensor("int64", [7n], []), "int64"))).toBe(7n)
    expect(orThrow(tensorScalar(new ort.Tensor("int32", [-3], [1]), "int32"))).toBe(-3)
    expect(orThrow(tensorScalar(new ort.Tensor("bool", [true], [1]), "bool"))).toBe(true)
    expect(orThrow(tensorScalar(new ort.Tensor("bool", [false], [1]), "bool"))).toBe(false)
    // 0x3c00 is 1.0 and 0xc000 is -2.0 in half precision.
    expect(
      orThrow(tensorScalar(new ort.Tensor("float16", Uint16Array.from([0x3c00]), [1]), "float16")),
    ).toBe(1)
    expect(
      orThrow(tensorScalar(new ort.Tensor("float16", Uint16Array.from([0xc000]), []), "float16")),
    ).toBe(-2)
    expect(orThrow(tensorScalar(new ort.Tensor("string", ["hi"], [1]), "string"))).toBe("hi")
  })

  it("refuse another dtype, a disposed or GPU tensor, a non-tensor, an unknown dtype and (scalar) more than one element, with typed errors", () => {
    const f = new ort.Tensor("float32", Float32Array.from([0.25, 0.5]), [1, 2])
    const expectLeft = (
      r:
        | {
            _tag: "Left"
            left: OptionError | { _tag: string; path: string; actual: unknown; message: string }
          }
        | { _tag: "Right" },
      tag: string,
      path: string,
      actual: unknown,
    ) => {
      expect(r._tag).toBe("Left")
      if (r._tag === "Right") return
      expect(r.left._tag).toBe(tag)
      expect(r.left.path).toBe(path)
      if (actual !== undefined) expect(r.left.actual).toEqual(actual)
    }
    expectLeft(tensorData(f, "int64", "output"), "DTypeMismatchError", "output", "float32")
    expect(orThrow.bind(null, tensorData(f, "int64", "output"))).toThrow(
      "leaf output: expected dtype int64, got float32",
    )
    expectLeft(tensorData(f, "float16"), "DTypeMismatchError", "tensor", "float32")
    expectLeft(tensorScalar(f, "float32", "y"), "ShapeMismatchError", "y", [1, 2])
    expectLeft(
      tensorScalar(new ort.Tensor("float32", [], [0]), "float32"),
      "ShapeMismatchError",
      "tensor",
      [0],
    )
    expectLeft(tensorData(f, "float" as "float32"), "OptionError", "dtype", "float")
    expectLeft(
      tensorData({ data: [1] } as unknown as OrtTensor, "float32"),
      "StructureMismatchError",
      "tensor",
      { data: [1] },
    )
    const gpu = ortNode.Tensor.fromGpuBuffer(
      { size: 16 } as unknown as common.Tensor.GpuBufferType,
      {
        dataType: "float32",
        dims: [1],
      },
    )
    expectLeft(tensorData(gpu, "float32", "logits"), "StructureMismatchError", "logits", undefined)
    expect(orThrow.bind(null, tensorData(gpu, "float32", "logits"))).toThrow(/getData/)
    const gone = new ort.Tensor("float32", [1], [1])
    gone.dispose()
    expectLeft(tensorScalar(gone, "float32", "output"), "DisposedError", "output", "disposed")
  })
})
