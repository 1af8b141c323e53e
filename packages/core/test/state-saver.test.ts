import { describe, expect, it } from "vitest"
import {
  DTypeMismatchError,
  HostTensor,
  SpecError,
  type StateBackend,
  createStateSaver,
  float16BitsToFloat32,
  float32ToFloat16Bits,
  gruSpec,
  hostBackend,
  hostTensor,
  init,
  isStateError,
  lstmSpec,
  orThrow,
  resolveSpec,
  rnnSpec,
} from "@statesaver/core"

describe("specs", () => {
  it("lstmSpec builds [h, c] per layer in both layouts", () => {
    expect(lstmSpec([4, 2])).toEqual([
      [
        { shape: ["batch", 4], dtype: "float32" },
        { shape: ["batch", 4], dtype: "float32" },
      ],
      [
        { shape: ["batch", 2], dtype: "float32" },
        { shape: ["batch", 2], dtype: "float32" },
      ],
    ])
    const tm = orThrow(resolveSpec(lstmSpec([8], { layout: "time-major", directions: 2 })))
    expect(tm.leaves.map((l) => [l.pathString, l.batchAxis, l.shape])).toEqual([
      ["[0][0]", 1, [2, "batch", 8]],
      ["[0][1]", 1, [2, "batch", 8]],
    ])
    expect(gruSpec([3], { batchDim: "N", dtype: "float16" })).toEqual([
      { shape: ["N", 3], dtype: "float16" },
    ])
    expect(rnnSpec([5, 6])).toHaveLength(2)
    expect(() => lstmSpec([0])).toThrowError(SpecError)
  })

  it("resolveSpec refuses a leaf without exactly one batch dim, naming it", () => {
    const r = resolveSpec({
      h: { shape: ["batch", 2], dtype: "float32" },
      c: { shape: [1, 2], dtype: "float32" },
    })
    expect(r._tag === "Left" && r.left).toMatchObject({
      _tag: "SpecError",
      path: "c",
      expected: 'exactly one "batch" dim',
    })
    const two = resolveSpec({ shape: ["batch", "batch"], dtype: "float32" })
    expect(two._tag === "Left" && two.left.actual).toEqual(["batch", "batch"])
  })

  it("resolveSpec refuses unknown dtypes, bad dims and init tensors of the wrong row shape", () => {
    const dtype = resolveSpec([{ shape: ["batch"], dtype: "float64" as never }])
    expect(dtype._tag === "Left" && dtype.left).toMatchObject({ path: "[0]", actual: "float64" })
    const dim = resolveSpec([{ shape: ["batch", -1], dtype: "float32" }])
    expect(dim._tag === "Left" && dim.left._tag).toBe("SpecError")
    const row = resolveSpec({
      h: {
        shape: ["batch", 3],
        dtype: "float32",
        init: init.tensor(hostTensor("float32", [2], [1, 2])),
      },
    })
    expect(row._tag === "Left" && row.left).toMatchObject({ path: "h", actual: [2] })
  })

  it("named dims start at 0, take sizes from options, and must agree across leaves", () => {
    const kv = {
      k: { shape: ["batch", 2, "seq", 4], dtype: "float32" as const },
      v: { shape: ["batch", 2, "seq", 4], dtype: "float32" as const },
    }
    expect(orThrow(resolveSpec(kv)).leaves[0]?.shape).toEqual(["batch", 2, 0, 4])
    expect(orThrow(resolveSpec(kv, { dims: { seq: 3 } })).leaves[1]?.shape).toEqual([
      "batch",
      2,
      3,
      4,
    ])
  })
})

describe("StateSaver", () => {
  const spec = lstmSpec([3, 2])

  it("orThrow throws the very error object held by the Left", () => {
    const saver = orThrow(createStateSaver({ spec, backend: hostBackend(), batchSize: 2 }))
    const r = saver.reset([5])
    expect(r._tag).toBe("Left")
    try {
      orThrow(r)
      expect.unreachable()
    } catch (e) {
      expect(r._tag === "Left" && e).toBe(r._tag === "Left" ? r.left : undefined)
      expect(isStateError(e)).toBe(true)
      expect((e as Error).name).toBe("RowIndexError")
      expect((e as Error).message).toBe("rows: expected row indices in [0, 2), got 5")
    }
  })

  it("refuses a dtype the backend does not declare, naming the leaf", () => {
    const backend: StateBackend<HostTensor> = {
      ...hostBackend(),
      capabilities: { dtypes: ["float32"], onDevice: false },
    }
    const r = createStateSaver({
      spec: { x: { shape: ["batch"], dtype: "int64" } },
      backend,
      batchSize: 1,
    })
    expect(r._tag === "Left" && r.left).toBeInstanceOf(DTypeMismatchError)
    expect(r._tag === "Left" && r.left.path).toBe("x")
  })

  it("refuses a batch size that is not a positive integer with an OptionError naming it", () => {
    for (const batchSize of [0, -1, 1.5, Number.NaN, "2" as unknown as number]) {
      const r = createStateSaver({ spec, backend: hostBackend(), batchSize })
      expect(r._tag === "Left" && r.left._tag).toBe("OptionError")
      expect(r._tag === "Left" && r.left.path).toBe("batchSize")
      expect(r._tag === "Left" && r.left.actual).toBe(batchSize)
    }
    const r = createStateSaver({
      spec,
      backend: hostBackend(),
      batchSize: "2" as unknown as number,
    })
    expect(r._tag === "Left" && r.left.message).toBe(
      'option batchSize: expected a positive integer, got "2"',
    )
  })

  it("error messages name the leaf, the expected and the actual value", () => {
    const saver = orThrow(createStateSaver({ spec, backend: hostBackend(), batchSize: 2 }))
    const [[h0, c0], [h1]] = saver.state() as [[HostTensor, HostTensor], [HostTensor, HostTensor]]
    const r = saver.save([
      [h0, c0],
      [h1, new HostTensor("float32", [2, 5])],
    ] as never)
    expect(r._tag === "Left" && r.left.message).toBe(
      'leaf [1][1]: expected shape ["batch",2], got [2,5] (axis 1 must be 2)',
    )
  })

  it("per-row init tensors start every row, and reset(rows) restores them", () => {
    const learned = hostTensor("float32", [2], [0.25, -0.5])
    const saver = orThrow(
      createStateSaver({
        spec: { h: { shape: ["batch", 2], dtype: "float32", init: init.tensor(learned) } },
        backend: hostBackend(),
        batchSize: 3,
      }),
    )
    const h = (saver.state() as { h: HostTensor }).h
    expect(Array.from(h.data as Float32Array)).toEqual([0.25, -0.5, 0.25, -0.5, 0.25, -0.5])
    ;(h.data as Float32Array).fill(9)
    orThrow(saver.reset(new Uint8Array([0, 1, 0])))
    expect(Array.from((saver.state() as { h: HostTensor }).h.data as Float32Array)).toEqual([
      9, 9, 0.25, -0.5, 9, 9,
    ])
  })

  it("leaves() and saveLeaves() work in spec order with the checks of save", () => {
    const backend = hostBackend()
    const saver = orThrow(createStateSaver({ spec, backend, batchSize: 2 }))
    expect(saver.spec.leaves.map((l) => l.pathString)).toEqual([
      "[0][0]",
      "[0][1]",
      "[1][0]",
      "[1][1]",
    ])
    const next = saver.spec.leaves.map((l) => new HostTensor("float32", [2, l.shape[1] as number]))
    orThrow(saver.saveLeaves(next))
    expect(saver.leaves()).toEqual(next)
    expect((saver.state() as HostTensor[][])[1]?.[0]).toBe(next[2])
    expect(backend.liveTensors()).toBe(4)
    const short = saver.saveLeaves(next.slice(1))
    expect(short._tag === "Left" && short.left).toMatchObject({
      _tag: "StructureMismatchError",
      actual: "3 leaves",
    })
    const other = saver.spec.leaves.map((l) => new HostTensor("float32", [2, l.shape[1] as number]))
    const aliased = saver.saveLeaves([other[0], other[1], other[2], other[2]] as HostTensor[])
    expect(aliased._tag === "Left" && aliased.left).toMatchObject({
      _tag: "AliasedLeafError",
      path: "[1][1]",
    })
    const wrong = saver.saveLeaves([other[0], other[2], other[1], other[3]] as HostTensor[])
    expect(wrong._tag === "Left" && wrong.left).toMatchObject({
      _tag: "ShapeMismatchError",
      path: "[0][1]",
    })
    expect(saver.leaves()).toEqual(next)
  })

  it("works with `using`: Symbol.dispose frees the state", () => {
    const backend = hostBackend()
    {
      using saver = orThrow(createStateSaver({ spec, backend, batchSize: 2 }))
      expect(backend.liveTensors()).toBe(4)
      expect(saver.batchSize).toBe(2)
    }
    expect(backend.liveTensors()).toBe(0)
  })

  it("float16 helpers round to nearest even and handle subnormals, infinity and NaN", () => {
    expect(float32ToFloat16Bits(1)).toBe(0x3c00)
    expect(float32ToFloat16Bits(-2)).toBe(0xc000)
    expect(float32ToFloat16Bits(65504)).toBe(0x7bff)
    expect(float32ToFloat16Bits(65520)).toBe(0x7c00)
    expect(float32ToFloat16Bits(2 ** -24)).toBe(1)
    expect(float32ToFloat16Bits(Number.NaN) & 0x7c00).toBe(0x7c00)
    expect(float32ToFloat16Bits(1 + 2 ** -11)).toBe(0x3c00)
    expect(float32ToFloat16Bits(1 + 3 * 2 ** -11)).toBe(0x3c02)
    for (let bits = 0; bits < 0x7c00; bits += 7) {
      expect(float32ToFloat16Bits(float16BitsToFloat32(bits))).toBe(bits)
    }
  })
})
