import { describe, expect, it } from "vitest"
import {
  BackendError,
  DTypeMismatchError,
  DisposedError,
  type DType,
  HostTensor,
  OptionError,
  ShapeMismatchError,
  SpecError,
  type StateSpec,
  createStateSaver,
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

/** The value `f` throws (failing the test when it returns). */
function thrown(f: () => unknown): unknown {
  try {
    f()
  } catch (e) {
    return e
  }
  throw new Error("expected a throw")
}

/** Asserts `f` throws a StateError of class `cls` (never a plain TypeError/RangeError). */
function throwsTyped<C extends abstract new (...args: never[]) => Error>(
  f: () => unknown,
  cls: C,
): InstanceType<C> {
  const e = thrown(f)
  expect(isStateError(e), String(e)).toBe(true)
  expect(e).toBeInstanceOf(cls)
  return e as InstanceType<C>
}

/** Detaches a typed array's buffer (as `postMessage` with a transfer list does). */
function detach(data: { buffer: ArrayBufferLike }): void {
  structuredClone(data.buffer, { transfer: [data.buffer as ArrayBuffer] })
}

describe("new HostTensor", () => {
  it("refuses data of the wrong length with a ShapeMismatchError naming shape and data", () => {
    const data = new Float32Array(5)
    const e = throwsTyped(() => new HostTensor("float32", [2, 3], data), ShapeMismatchError)
    expect(e.expected).toEqual([2, 3])
    expect(e.actual).toBe(data)
    expect(e.message).toContain("Float32Array(5)")
    expect(e.message).toContain("6 elements")
  })

  it("refuses data of another typed array with a DTypeMismatchError", () => {
    const data = new Int32Array(2)
    const e = throwsTyped(() => new HostTensor("float32", [2], data as never), DTypeMismatchError)
    expect(e.expected).toBe("float32")
    expect(e.actual).toBe(data)
    expect(e.message).toContain("Int32Array(2)")
    throwsTyped(
      () => new HostTensor("float16", [2], new Float32Array(2) as never),
      DTypeMismatchError,
    )
    throwsTyped(() => new HostTensor("int64", [1], [0n] as never), DTypeMismatchError)
    throwsTyped(
      () => new HostTensor("uint8", [1], new Uint8ClampedArray(1) as never),
      DTypeMismatchError,
    )
  })

  it.each([
    ["a negative dim", [2, -1]],
    ["a fractional dim", [1.5]],
    ["a NaN dim", [Number.NaN]],
    ["an infinite dim", [Infinity]],
    ["a string dim", ["2"]],
    ["a shape that is not an array", "2,3"],
    ["a null shape", null],
    ["a number shape", 6],
  ])("refuses %s with a ShapeMismatchError holding the shape as given", (_, shape) => {
    const e = throwsTyped(() => new HostTensor("float32", shape as never), ShapeMismatchError)
    expect(e.actual).toBe(shape)
  })

  it("refuses a shape too large to allocate with a ShapeMismatchError, not a RangeError", () => {
    const e = throwsTyped(() => new HostTensor("float32", [2 ** 26, 2 ** 26]), ShapeMismatchError)
    expect(e.actual).toEqual([2 ** 26, 2 ** 26])
    throwsTyped(() => new HostTensor("float32", [2 ** 40, 2 ** 40]), ShapeMismatchError)
  })

  it("refuses an unknown dtype with a DTypeMismatchError holding the dtype as given", () => {
    for (const dtype of ["float64", "", undefined, 3, null]) {
      const e = throwsTyped(() => new HostTensor(dtype as never, [1]), DTypeMismatchError)
      expect(e.actual).toBe(dtype)
      expect(String(e.expected)).toContain("float32")
    }
  })

  it("is frozen: dtype, shape and data cannot be reassigned; the shape is a copy", () => {
    const shape = [2, 2]
    const data = new Float32Array(4)
    const t = new HostTensor("float32", shape, data)
    shape[0] = 7
    expect(t.shape).toEqual([2, 2])
    expect(Object.isFrozen(t)).toBe(true)
    expect(Object.isFrozen(t.shape)).toBe(true)
    expect(() => {
      ;(t as { data: unknown }).data = new Float32Array(1)
    }).toThrow(TypeError)
    expect(() => {
      ;(t as { dtype: unknown }).dtype = "int32"
    }).toThrow(TypeError)
    expect(() => {
      ;(t.shape as number[])[0] = 1
    }).toThrow(TypeError)
    expect(t.data).toBe(data)
    expect(t.dtype).toBe("float32")
    t.data[3] = 1.5 // the elements stay writable
    expect(data[3]).toBe(1.5)
  })

  it("accepts each dtype's typed array, bool in a Uint8Array, and allocates zeros", () => {
    expect(new HostTensor("bool", [3], new Uint8Array([0, 1, 0])).data).toEqual(
      new Uint8Array([0, 1, 0]),
    )
    expect(new HostTensor("int64", [2]).data).toEqual(new BigInt64Array(2))
    expect(new HostTensor("float16", [0, 5]).data.length).toBe(0)
    expect(new HostTensor("float32", []).data.length).toBe(1)
  })
})

describe("hostTensor values", () => {
  const refused: [DType, unknown][] = [
    ["int32", 1.5],
    ["int32", 2 ** 31],
    ["int32", -(2 ** 31) - 1],
    ["int32", Number.NaN],
    ["int32", Infinity],
    ["int32", 2n ** 31n],
    ["int32", "1"],
    ["uint8", 300],
    ["uint8", -1],
    ["uint8", 0.5],
    ["uint8", 256n],
    ["bool", 2],
    ["bool", -1],
    ["bool", 0.5],
    ["bool", true],
    ["int64", 2n ** 70n],
    ["int64", 2n ** 63n],
    ["int64", -(2n ** 63n) - 1n],
    ["int64", 1.5],
    ["int64", 2 ** 53],
    ["int64", Number.NaN],
    ["float32", 1e39],
    ["float32", -1e39],
    ["float32", 2n ** 24n + 1n],
    ["float32", 2n ** 200n],
    ["float32", null],
    ["float16", 65520],
    ["float16", -70000],
    ["float16", 2049n],
    ["float16", 65520n],
  ]
  it.each(refused)(
    "%s refuses %s with a DTypeMismatchError holding the value as given",
    (dtype, v) => {
      const values = [0, v, 0].map((x) => (typeof v === "bigint" && x === 0 ? 0n : x))
      const e = throwsTyped(() => hostTensor(dtype, [3], values as never), DTypeMismatchError)
      expect(Object.is(e.actual, v)).toBe(true)
      expect(e.expected).toBe(dtype)
      expect(e.message).toContain("values[1]")
    },
  )

  it("prints the actual value as given: NaN, bigints, strings", () => {
    const nan = throwsTyped(() => hostTensor("int32", [1], [Number.NaN]), DTypeMismatchError)
    expect(nan.message).toContain("got NaN")
    const big = throwsTyped(() => hostTensor("int64", [1], [2n ** 70n]), DTypeMismatchError)
    expect(big.message).toContain(`got ${2n ** 70n}n`)
  })

  it("accepts the range edges of every dtype and stores them exactly", () => {
    expect(Array.from(hostTensor("int32", [3], [-(2 ** 31), 2 ** 31 - 1, -5]).data)).toEqual([
      -(2 ** 31),
      2 ** 31 - 1,
      -5,
    ])
    expect(Array.from(hostTensor("int32", [1], [-5n]).data)).toEqual([-5])
    expect(Array.from(hostTensor("uint8", [2], [0, 255]).data)).toEqual([0, 255])
    expect(Array.from(hostTensor("bool", [2], [0, 1]).data)).toEqual([0, 1])
    expect(
      Array.from(hostTensor("int64", [3], [-(2n ** 63n), 2n ** 63n - 1n, 2n ** 53n]).data),
    ).toEqual([-(2n ** 63n), 2n ** 63n - 1n, 2n ** 53n])
    expect(Array.from(hostTensor("int64", [1], [2 ** 53 - 1]).data)).toEqual([2n ** 53n - 1n])
    const f = hostTensor("float32", [4], [Infinity, -Infinity, Number.NaN, 3.4028234663852886e38])
    expect(Array.from(f.data)).toEqual([Infinity, -Infinity, Number.NaN, 3.4028234663852886e38])
    expect(Array.from(hostTensor("float32", [1], [2n ** 24n]).data)).toEqual([2 ** 24])
    expect(Array.from(hostTensor("float16", [2], [2048n, Infinity] as never).data)).toEqual([
      0x6800, 0x7c00,
    ])
  })

  it("refuses values that are not an array or typed array of the shape's size", () => {
    for (const values of ["abc", { length: 3 }, 7, new DataView(new ArrayBuffer(3))]) {
      const e = throwsTyped(() => hostTensor("uint8", [3], values as never), ShapeMismatchError)
      expect(e.actual).toBe(values)
    }
    const short = [1, 2]
    const e = throwsTyped(() => hostTensor("float32", [3], short), ShapeMismatchError)
    expect(e.expected).toEqual([3])
    expect(e.actual).toBe(short)
    expect(Array.from(hostTensor("int32", [2], new Int32Array([4, 5])).data)).toEqual([4, 5])
  })
})

describe("the host backend and inconsistent or disposed HostTensors", () => {
  const spec: StateSpec = { h: { shape: ["batch", 4], dtype: "float32" } }
  const setup = () => {
    const backend = hostBackend()
    const saver = orThrow(createStateSaver({ spec, backend, batchSize: 2 }))
    const h = (saver.state() as { h: HostTensor }).h
    ;(h.data as Float32Array).set([1, 2, 3, 4, 5, 6, 7, 8])
    return { backend, saver }
  }
  const unchanged = async (
    saver: ReturnType<typeof setup>["saver"],
    backend: ReturnType<typeof hostBackend>,
    before: { bytes: Uint8Array; live: number },
  ) => {
    expect(orThrow(await saver.snapshot())).toEqual(before.bytes)
    expect(backend.liveTensors()).toBe(before.live)
  }

  it("save refuses a HostTensor whose buffer was detached, naming the leaf, before changing anything", async () => {
    const { backend, saver } = setup()
    const before = { bytes: orThrow(await saver.snapshot()), live: backend.liveTensors() }
    const next = new HostTensor("float32", [2, 4])
    detach(next.data)
    const r = saver.save({ h: next })
    expect(r._tag).toBe("Left")
    if (r._tag !== "Left") return
    expect(r.left).toBeInstanceOf(BackendError)
    expect(r.left.path).toBe("h")
    expect(r.left.cause).toBeInstanceOf(ShapeMismatchError)
    expect(r.left.message).toContain("leaf h")
    await unchanged(saver, backend, before)
    saver.dispose()
  })

  it("save refuses a HostTensor whose data was swapped for a shorter or another typed array", async () => {
    const { backend, saver } = setup()
    const before = { bytes: orThrow(await saver.snapshot()), live: backend.liveTensors() }
    // A subclass is not frozen, so its data can be swapped after construction.
    class Swappable extends HostTensor<"float32"> {}
    const shorter = new Swappable("float32", [2, 4])
    ;(shorter as { data: unknown }).data = new Float32Array(3)
    const retyped = new Swappable("float32", [2, 4])
    ;(retyped as { data: unknown }).data = new Int32Array(8)
    // A look-alike object passes `instanceof`.
    const lookalike = Object.create(HostTensor.prototype, {
      dtype: { value: "float32" },
      shape: { value: [2, 4] },
      data: { value: new Float32Array(2) },
    }) as HostTensor
    for (const [next, cause] of [
      [shorter, ShapeMismatchError],
      [retyped, DTypeMismatchError],
      [lookalike, ShapeMismatchError],
    ] as const) {
      const r = saver.save({ h: next })
      expect(r._tag === "Left" && r.left._tag).toBe("BackendError")
      expect(r._tag === "Left" && r.left.path).toBe("h")
      expect(r._tag === "Left" && r.left.cause).toBeInstanceOf(cause)
      const leaves = saver.saveLeaves([next])
      expect(leaves._tag === "Left" && leaves.left.path).toBe("h")
      await unchanged(saver, backend, before)
    }
    saver.dispose()
  })

  it("a disposed HostTensor gives DisposedError from the backend primitives and is not live for save", async () => {
    const { backend, saver } = setup()
    const leaf = { path: "h", batchAxis: 0, init: init.zeros }
    const t = backend.allocate([2, 4], "float32", leaf)
    backend.dispose(t)
    expect(backend.describe(t)).toBeUndefined()
    throwsTyped(() => backend.toHost(t), DisposedError)
    throwsTyped(() => backend.gather(t, [0], leaf), DisposedError)
    throwsTyped(() => backend.fill(t, [0], leaf), DisposedError)
    throwsTyped(() => backend.fromHost(t, leaf), DisposedError)
    const before = { bytes: orThrow(await saver.snapshot()), live: backend.liveTensors() }
    const r = saver.save({ h: t })
    expect(r._tag === "Left" && r.left.path).toBe("h")
    expect(r._tag === "Left" && isStateError(r.left)).toBe(true)
    await unchanged(saver, backend, before)
    saver.dispose()
  })
})

describe("init constants in specs", () => {
  const leafWith = (dtype: DType, value: unknown): StateSpec => ({
    a: { shape: ["batch"], dtype: "float32" },
    x: { shape: ["batch", 2], dtype, init: init.constant(value as number) },
  })
  const refused: [DType, unknown, string][] = [
    ["int32", 1.5, "[-2147483648, 2147483647]"],
    ["int32", 2 ** 31, "[-2147483648, 2147483647]"],
    ["int32", Number.NaN, "[-2147483648, 2147483647]"],
    ["uint8", 300, "[0, 255]"],
    ["uint8", -1, "[0, 255]"],
    ["bool", 2, "[0, 1]"],
    ["int64", 2n ** 70n, "bigint"],
    ["int64", 1.5, "bigint"],
    ["int64", 2 ** 60, "safe integer"],
    ["float32", 1e39, "float32"],
    ["float32", 2n ** 24n + 1n, "exactly"],
    ["float16", 65520, "65520"],
    ["float16", 2049n, "exactly"],
    ["float32", "0.5", "float32"],
  ]
  it.each(refused)(
    "%s refuses %s with a SpecError naming the leaf, the range and the value as given",
    (dtype, value, range) => {
      const r = resolveSpec(leafWith(dtype, value))
      expect(r._tag).toBe("Left")
      if (r._tag !== "Left") return
      expect(r.left).toBeInstanceOf(SpecError)
      expect(r.left.path).toBe("x")
      expect(Object.is(r.left.actual, value)).toBe(true)
      expect(String(r.left.expected)).toContain(range)
      expect(r.left.message).toContain("leaf x")
    },
  )

  it("a refused constant creates no saver and allocates nothing", () => {
    const backend = hostBackend()
    const r = createStateSaver({ spec: leafWith("uint8", 300), backend, batchSize: 2 })
    expect(r._tag === "Left" && r.left._tag).toBe("SpecError")
    expect(backend.liveTensors()).toBe(0)
  })

  it("NaN and ±Infinity are fine for float dtypes; range edges and exact bigints are kept", () => {
    const cases: [DType, unknown, unknown][] = [
      ["float32", Number.NaN, Number.NaN],
      ["float32", -Infinity, -Infinity],
      ["float16", Infinity, 0x7c00],
      ["float32", 2n ** 24n, 2 ** 24],
      ["int32", -(2 ** 31), -(2 ** 31)],
      ["int32", 7n, 7],
      ["uint8", 255, 255],
      ["bool", 1, 1],
      ["int64", 2n ** 63n - 1n, 2n ** 63n - 1n],
      ["int64", -3, -3n],
    ]
    for (const [dtype, value, stored] of cases) {
      const saver = orThrow(
        createStateSaver({ spec: leafWith(dtype, value), backend: hostBackend(), batchSize: 2 }),
      )
      const x = (saver.state() as { x: HostTensor }).x
      expect(Array.from(x.data as ArrayLike<unknown>)).toEqual([stored, stored, stored, stored])
      saver.dispose()
    }
  })

  it("refuses an init that is not an init, and init tensors that are inconsistent or not bool", () => {
    for (const bad of [5, null, "zeros", { kind: "ones" }]) {
      const r = resolveSpec({ x: { shape: ["batch"], dtype: "float32", init: bad as never } })
      expect(r._tag === "Left" && r.left).toMatchObject({ _tag: "SpecError", path: "x" })
      expect(r._tag === "Left" && r.left.actual).toBe(bad)
    }
    const two = resolveSpec({
      m: {
        shape: ["batch", 2],
        dtype: "bool",
        init: init.tensor(hostTensor("uint8", [2], [1, 2])),
      },
    })
    expect(two._tag === "Left" && two.left).toMatchObject({
      _tag: "SpecError",
      path: "m",
      actual: 2,
    })
    const detached = hostTensor("float32", [2], [1, 2])
    detach(detached.data)
    const gone = resolveSpec({
      h: { shape: ["batch", 2], dtype: "float32", init: init.tensor(detached) },
    })
    expect(gone._tag === "Left" && gone.left).toMatchObject({ _tag: "SpecError", path: "h" })
  })

  it("refuses bad batchDim and dims options with a SpecError holding the value", () => {
    const kv: StateSpec = { k: { shape: ["batch", "seq"], dtype: "float32" } }
    for (const [options, actual] of [
      [{ batchDim: "" }, ""],
      [{ batchDim: 5 }, 5],
      [{ dims: { seq: -1 } }, -1],
      [{ dims: { seq: "3" } }, "3"],
      [{ dims: { seq: Number.NaN } }, Number.NaN],
      [{ dims: 4 }, 4],
    ] as const) {
      const r = resolveSpec(kv, options as never)
      expect(r._tag === "Left" && r.left._tag).toBe("SpecError")
      expect(r._tag === "Left" && Object.is(r.left.actual, actual)).toBe(true)
    }
  })
})

describe("spec builders", () => {
  const builders = { lstmSpec, gruSpec, rnnSpec }
  // [widths, the value the error holds as actual]
  const record = {}
  const none: number[] = []
  const badWidths: [unknown, unknown][] = [
    [64, 64],
    ["64", "64"],
    [null, null],
    [undefined, undefined],
    [record, record],
    [none, none],
    [[Number.NaN], Number.NaN],
    [["64"], "64"],
    [[-1], -1],
    [[0], 0],
    [[1.5], 1.5],
    [[Infinity], Infinity],
    [[64, "32"], "32"],
  ]
  for (const [name, build] of Object.entries(builders)) {
    it(`${name} throws a SpecError holding each bad width as given`, () => {
      for (const [widths, actual] of badWidths) {
        const e = throwsTyped(() => build(widths as never), SpecError)
        expect(Object.is(e.actual, actual)).toBe(true)
      }
    })

    it(`${name} throws an OptionError naming each bad option`, () => {
      const cases: [unknown, string][] = [
        [null, "options"],
        ["time-major", "options"],
        [{ layout: "batch-first" }, "layout"],
        [{ dtype: "float64" }, "dtype"],
        [{ directions: 3 }, "directions"],
        [{ directions: 2 }, "directions"],
        [{ layout: "time-major", directions: "2" }, "directions"],
        [{ batchDim: "" }, "batchDim"],
        [{ batchDim: 1 }, "batchDim"],
      ]
      for (const [options, path] of cases) {
        const e = throwsTyped(() => build([4], options as never), OptionError)
        expect(e.path).toBe(path)
      }
      expect(build([4], { layout: "time-major", directions: 2, dtype: "float16" })).toHaveLength(1)
    })
  }
})
