import { beforeAll, describe, expect, it } from "vitest"
import {
  HostTensor,
  type StateSaver,
  createStateSaver,
  encodeSnapshot,
  hostBackend,
  hostTensor,
  orThrow,
} from "@statesaver/core"
import { type BadInput, expectRefused } from "./harness.js"
import { type Subject, distinct, probe, spec, subjects } from "./subjects.js"

const B = 4
type Saver = StateSaver<unknown, unknown>

/** Tensors of a valid next state, made by the caller: rnn[0] [4,3], rnn[1] [2,4,2], step [4]. */
function nextState(s: Subject, seed: number) {
  const h = s.make(distinct("float32", [B, 3], seed))
  const c = s.make(distinct("float32", [2, B, 2], seed), { batchAxis: 1 })
  const step = s.make(distinct("int32", [B], seed))
  return { h, c, step }
}

/** Cases for one backend. `fresh` is set per case by the runner. */
function cases(s: Subject): BadInput<Saver>[] {
  const out: BadInput<Saver>[] = []
  const rows = (name: string, category: 1 | 2 | 5, value: unknown, says?: string) =>
    out.push({
      name: `reset(${name})`,
      category,
      call: (saver) => saver.reset(value as never),
      tag: "RowIndexError",
      path: "",
      ...(says === undefined ? {} : { says: [says] }),
    })
  rows("null", 1, null, "null")
  rows("5", 2, 5, "5")
  rows("true", 2, true, "true")
  rows("{}", 2, {}, "{}")
  rows('"0"', 5, "0", '"0"')
  rows("a Float64Array", 2, new Float64Array(B), "Float64Array(4)")
  rows("a Uint16Array", 2, new Uint16Array(B), "Uint16Array(4)")
  rows("a Map", 2, new Map(), "a Map")
  rows("a function", 2, () => 0, "a function")
  rows("[NaN]", 5, [Number.NaN], "NaN")
  rows("[Infinity]", 5, [Number.POSITIVE_INFINITY], "Infinity")
  rows("[-1]", 2, [-1], "-1")
  rows("[4] (out of range)", 2, [B], "4")
  rows("[1.5]", 2, [1.5], "1.5")
  rows('["0"]', 5, ["0"], '"0"')
  rows('[0, "1"]', 5, [0, "1"], '"1"')
  rows("[0, null]", 2, [0, null], "null")
  rows("[2n]", 5, [2n], "2n")
  rows("a boolean mask of length 3", 2, [true, false, true], "length 3")
  rows("a Uint8Array mask of length 5", 2, new Uint8Array(5), "Uint8Array(5)")
  rows("a mask entry 2", 2, new Uint8Array([0, 2, 0, 0]), "2")
  rows("a mask with a string", 2, [true, "x", false, false], '"x"')
  rows("an Int32Array index out of range", 2, new Int32Array([0, 9]), "9")

  const select = (name: string, category: 1 | 2 | 5, value: unknown, says?: string) =>
    out.push({
      name: `select(${name})`,
      category,
      call: (saver) => saver.select(value as never),
      tag: "RowIndexError",
      path: "",
      ...(says === undefined ? {} : { says: [says] }),
    })
  select("null", 1, null, "null")
  select("undefined", 1, undefined, "undefined")
  select("5", 1, 5, "5")
  select('"0,1"', 5, "0,1", '"0,1"')
  select("{}", 1, {}, "{}")
  select("[]", 2, [], "[]")
  select("[4]", 2, [B], "4")
  select("[-1]", 2, [-1], "-1")
  select("[0.5]", 2, [0.5], "0.5")
  select("[NaN]", 5, [Number.NaN], "NaN")
  select("[-Infinity]", 5, [Number.NEGATIVE_INFINITY], "-Infinity")
  select('["0"]', 5, ["0"], '"0"')
  select("[undefined]", 2, [undefined], "undefined")
  select("[0, true]", 2, [0, true], "true")
  select("an Int32Array", 2, new Int32Array([0, 1]), "Int32Array(2)")

  const save = (
    name: string,
    category: 1 | 2 | 5,
    tag: BadInput<Saver>["tag"],
    path: string,
    tree: () => unknown,
    says?: string,
  ) => {
    let made: unknown
    out.push({
      name: `save(${name})`,
      category,
      given: () => {
        made = tree()
        return flatTensors(made)
      },
      call: (saver) => saver.save(made as never),
      tag,
      path,
      ...(says === undefined ? {} : { says: [says] }),
    })
  }
  const flatTensors = (x: unknown): unknown[] =>
    Array.isArray(x)
      ? x.flatMap(flatTensors)
      : x !== null && typeof x === "object" && Object.getPrototypeOf(x) === Object.prototype
        ? Object.values(x).flatMap(flatTensors)
        : x !== null && typeof x === "object" && !ArrayBuffer.isView(x)
          ? [x]
          : []
  save("null", 1, "StructureMismatchError", "", () => null, "null")
  save("undefined", 1, "StructureMismatchError", "", () => undefined, "undefined")
  save("5", 1, "StructureMismatchError", "", () => 5)
  save("[]", 1, "StructureMismatchError", "", () => [])
  save("a record missing step", 2, "StructureMismatchError", "step", () => {
    const n = nextState(s, 1)
    return { rnn: [n.h, n.c] }
  })
  save("a record with an extra key", 2, "StructureMismatchError", "extra", () => {
    const n = nextState(s, 1)
    return { rnn: [n.h, n.c], step: n.step, extra: n.h }
  })
  save("rnn of length 1", 2, "StructureMismatchError", "rnn", () => {
    const n = nextState(s, 1)
    return { rnn: [n.h], step: n.step }
  })
  save(
    "a number where a tensor goes",
    2,
    "StructureMismatchError",
    "rnn[0]",
    () => {
      const n = nextState(s, 1)
      return { rnn: [7, n.c], step: n.step }
    },
    "7",
  )
  save(
    "NaN where a tensor goes",
    5,
    "StructureMismatchError",
    "step",
    () => {
      const n = nextState(s, 1)
      return { rnn: [n.h, n.c], step: Number.NaN }
    },
    "NaN",
  )
  save(
    "a string where a tensor goes",
    5,
    "StructureMismatchError",
    "step",
    () => {
      const n = nextState(s, 1)
      return { rnn: [n.h, n.c], step: "0" }
    },
    '"0"',
  )
  save("a typed array where a tensor goes", 1, "StructureMismatchError", "rnn[0]", () => {
    const n = nextState(s, 1)
    return { rnn: [new Float32Array(12), n.c], step: n.step }
  })
  save(
    "a wrong shape",
    2,
    "ShapeMismatchError",
    "rnn[0]",
    () => {
      const n = nextState(s, 1)
      return { rnn: [s.make(distinct("float32", [B, 5])), n.c], step: n.step }
    },
    "[4,5]",
  )
  save("a wrong rank", 2, "ShapeMismatchError", "step", () => {
    const n = nextState(s, 1)
    return { rnn: [n.h, n.c], step: s.make(distinct("int32", [B, 1])) }
  })
  save("a wrong batch size", 2, "BatchSizeMismatchError", "rnn[0]", () => {
    const n = nextState(s, 1)
    return { rnn: [s.make(distinct("float32", [3, 3])), n.c], step: n.step }
  })
  save(
    "a wrong batch size on axis 1",
    2,
    "BatchSizeMismatchError",
    "rnn[1]",
    () => {
      const n = nextState(s, 1)
      return { rnn: [n.h, s.make(distinct("float32", [2, 3, 2]), { batchAxis: 1 })], step: n.step }
    },
    "axis 1",
  )
  save(
    "a wrong dtype",
    2,
    "DTypeMismatchError",
    "step",
    () => {
      const n = nextState(s, 1)
      return { rnn: [n.h, n.c], step: s.make(distinct("float32", [B])) }
    },
    "int32",
  )
  save("one tensor at two leaves", 2, "AliasedLeafError", "rnn[1]", () => {
    const n = nextState(s, 1)
    return { rnn: [n.h, n.h], step: n.step }
  })
  const saveLeaves = (
    name: string,
    category: 1 | 2 | 5,
    value: () => unknown,
    tag: BadInput<Saver>["tag"],
    path: string,
  ) => {
    let made: unknown
    out.push({
      name: `saveLeaves(${name})`,
      category,
      given: () => {
        made = value()
        return flatTensors(made)
      },
      call: (saver) => saver.saveLeaves(made as never),
      tag,
      path,
    })
  }
  saveLeaves("null", 1, () => null, "StructureMismatchError", "")
  saveLeaves("5", 1, () => 5, "StructureMismatchError", "")
  saveLeaves("{}", 1, () => ({}), "StructureMismatchError", "")
  saveLeaves("a string", 1, () => "abc", "StructureMismatchError", "")
  saveLeaves(
    "two leaves of three",
    2,
    () => {
      const n = nextState(s, 2)
      return [n.h, n.c]
    },
    "StructureMismatchError",
    "",
  )
  saveLeaves(
    "leaves out of order",
    2,
    () => {
      const n = nextState(s, 2)
      return [n.c, n.h, n.step]
    },
    "ShapeMismatchError",
    "rnn[0]",
  )
  saveLeaves("[null, null, null]", 1, () => [null, null, null], "StructureMismatchError", "rnn[0]")

  const restore = (
    name: string,
    category: 1 | 2 | 7,
    value: () => unknown,
    tag: BadInput<Saver>["tag"],
    path?: string,
    says?: string,
  ) =>
    out.push({
      name: `restore(${name})`,
      category,
      call: async (saver) => saver.restore((await value()) as never),
      tag,
      ...(path === undefined ? {} : { path }),
      ...(says === undefined ? {} : { says: [says] }),
    })
  restore("null", 1, () => null, "SnapshotFormatError", "", "null")
  restore("undefined", 1, () => undefined, "SnapshotFormatError", "")
  restore("5", 1, () => 5, "SnapshotFormatError", "")
  restore("a string", 1, () => "bytes", "SnapshotFormatError", "", '"bytes"')
  restore("{}", 1, () => ({}), "SnapshotFormatError", "")
  restore("an ArrayBuffer", 1, () => new ArrayBuffer(64), "SnapshotFormatError", "")
  restore("3 bytes", 2, () => new Uint8Array(3), "SnapshotFormatError", "")
  restore("64 zero bytes", 2, () => new Uint8Array(64), "SnapshotFormatError", "")
  restore(
    "a header length past the end",
    2,
    () => {
      const b = new Uint8Array(16)
      new DataView(b.buffer).setBigUint64(0, 1000n, true)
      return b
    },
    "SnapshotFormatError",
    "",
  )
  restore(
    "a 2**64-1 header length",
    2,
    () => {
      const b = new Uint8Array(16)
      new DataView(b.buffer).setBigUint64(0, 2n ** 64n - 1n, true)
      return b
    },
    "SnapshotFormatError",
    "",
  )
  restore("a header that is not JSON", 2, () => header("{nope"), "SnapshotFormatError", "")
  restore("a header that is an array", 2, () => header("[]"), "SnapshotFormatError", "")
  restore("a header without metadata", 2, () => header("{}"), "SnapshotFormatError", "")
  restore(
    "another format",
    2,
    () => header('{"__metadata__":{"format":"pt"}}'),
    "SnapshotFormatError",
    "",
  )
  restore("a snapshot of another spec", 2, otherSpecSnapshot, "SnapshotFormatError")
  restore(
    "a snapshot of batch size 2",
    2,
    () => batchSnapshot(2),
    "BatchSizeMismatchError",
    "rnn[0]",
  )
  restore(
    "a decoded Snapshot with a swapped data array",
    2,
    swappedSnapshot,
    "SnapshotFormatError",
    "rnn[0]",
  )
  restore("a snapshot with 80,000 leaves", 7, manyLeaves, "SnapshotFormatError")
  restore(
    "a decoded Snapshot whose leaves hold null",
    1,
    () => ({ batchDim: "batch", leaves: [null], tensors: new Map() }),
    "SnapshotFormatError",
  )
  restore(
    "a decoded Snapshot whose tensors are not a Map",
    1,
    () => ({ batchDim: "batch", leaves: [], tensors: {} }),
    "SnapshotFormatError",
  )
  return out
}

const header = (json: string): Uint8Array => {
  const text = new TextEncoder().encode(json)
  const b = new Uint8Array(8 + text.length)
  new DataView(b.buffer).setBigUint64(0, BigInt(text.length), true)
  b.set(text, 8)
  return b
}

async function batchSnapshot(batchSize: number): Promise<Uint8Array> {
  const saver = orThrow(createStateSaver({ spec, backend: hostBackend(), batchSize }))
  return orThrow(await saver.snapshot())
}

function otherSpecSnapshot(): Uint8Array {
  return encodeSnapshot({
    batchDim: "batch",
    batchSize: B,
    leaves: [{ path: "other", batchAxis: 0, dtype: "float32", spec: ["batch", 3], init: "zeros" }],
    tensors: new Map([["other", new HostTensor("float32", [B, 3])]]),
  })
}

function swappedSnapshot(): unknown {
  // A HostTensor look-alike whose data is shorter than its shape, as a swapped `data` would be.
  const t = Object.create(HostTensor.prototype, {
    dtype: { value: "float32" },
    shape: { value: [B, 3] },
    data: { value: new Float32Array(2) },
  }) as HostTensor
  const tensors = new Map<string, HostTensor>([
    ["rnn[0]", t],
    ["rnn[1]", new HostTensor("float32", [2, B, 2])],
    ["step", new HostTensor("int32", [B])],
  ])
  return {
    version: 1,
    batchDim: "batch",
    batchSize: B,
    leaves: [
      { path: "rnn[0]", batchAxis: 0, dtype: "float32", spec: ["batch", 3], init: "zeros" },
      { path: "rnn[1]", batchAxis: 1, dtype: "float32", spec: [2, "batch", 2], init: "constant" },
      { path: "step", batchAxis: 0, dtype: "int32", spec: ["batch"], init: "zeros" },
    ],
    tensors,
  }
}

function manyLeaves(): Uint8Array {
  const n = 80_000
  const leaves = Array.from({ length: n }, (_, i) => ({
    path: `l${i}`,
    batchAxis: 0,
    dtype: "float32" as const,
    spec: ["batch"],
    init: "zeros" as const,
  }))
  const tensors = new Map(leaves.map((l) => [l.path, hostTensor("float32", [1], [0])]))
  return encodeSnapshot({ batchDim: "batch", batchSize: 1, leaves, tensors })
}

describe("barrage: StateSaver on every backend", async () => {
  const all = await subjects()
  for (const s of all) {
    describe(s.name, () => {
      let seed = 10
      const fresh = (): Saver => {
        const saver = orThrow(createStateSaver({ spec, backend: s.backend, batchSize: B }))
        const n = nextState(s, seed++)
        orThrow(saver.save({ rnn: [n.h, n.c], step: n.step }))
        return saver
      }
      for (const c of cases(s)) {
        it(`[${c.category}] ${c.name} is refused with ${c.tag}, nothing changed`, async () => {
          const saver = fresh()
          await expectRefused(
            saver,
            {
              state: async () => orThrow(await saver.snapshot()),
              live: s.live,
              probe: (x) => probe(s, x),
            },
            { ...c, ...(c.given ? { given: c.given } : {}) },
          )
          saver.dispose()
        })
      }
      it("[2] dims(), state() and leaves() after dispose throw DisposedError", () => {
        const saver = fresh()
        saver.dispose()
        for (const f of [() => saver.dims(), () => saver.state(), () => saver.leaves()]) {
          expect(f).toThrow(expect.objectContaining({ _tag: "DisposedError" }))
        }
      })
    })
  }
})

describe("barrage: createStateSaver options", () => {
  beforeAll(() => undefined)
  const backend = hostBackend()
  const noDescribe = { ...backend, describe: undefined }
  const bad: [string, 1 | 2 | 5, () => unknown, BadInput<null>["tag"], string, string?][] = [
    ["options null", 1, () => createStateSaver(null as never), "OptionError", "options"],
    ["options 5", 1, () => createStateSaver(5 as never), "OptionError", "options"],
    [
      "no backend",
      1,
      () => createStateSaver({ spec, batchSize: 2 } as never),
      "OptionError",
      "backend",
    ],
    [
      "backend null",
      1,
      () => createStateSaver({ spec, backend: null, batchSize: 2 } as never),
      "OptionError",
      "backend",
    ],
    [
      "backend {}",
      1,
      () => createStateSaver({ spec, backend: {}, batchSize: 2 } as never),
      "OptionError",
      "backend",
    ],
    [
      "a backend without describe",
      1,
      () => createStateSaver({ spec, backend: noDescribe, batchSize: 2 } as never),
      "OptionError",
      "backend",
      "describe",
    ],
    [
      "batchSize 0",
      2,
      () => createStateSaver({ spec, backend, batchSize: 0 }),
      "OptionError",
      "batchSize",
    ],
    [
      "batchSize -1",
      2,
      () => createStateSaver({ spec, backend, batchSize: -1 }),
      "OptionError",
      "batchSize",
    ],
    [
      "batchSize 1.5",
      2,
      () => createStateSaver({ spec, backend, batchSize: 1.5 }),
      "OptionError",
      "batchSize",
      "1.5",
    ],
    [
      "batchSize NaN",
      5,
      () => createStateSaver({ spec, backend, batchSize: Number.NaN }),
      "OptionError",
      "batchSize",
      "NaN",
    ],
    [
      "batchSize Infinity",
      5,
      () => createStateSaver({ spec, backend, batchSize: Number.POSITIVE_INFINITY }),
      "OptionError",
      "batchSize",
      "Infinity",
    ],
    [
      'batchSize "4"',
      5,
      () => createStateSaver({ spec, backend, batchSize: "4" as never }),
      "OptionError",
      "batchSize",
      '"4"',
    ],
    [
      "batchSize 2**53",
      2,
      () => createStateSaver({ spec, backend, batchSize: 2 ** 53 }),
      "OptionError",
      "batchSize",
    ],
    [
      "spec null",
      1,
      () => createStateSaver({ spec: null as never, backend, batchSize: 2 }),
      "SpecError",
      "",
    ],
    [
      "spec 5",
      1,
      () => createStateSaver({ spec: 5 as never, backend, batchSize: 2 }),
      "SpecError",
      "",
    ],
    ["spec []", 2, () => createStateSaver({ spec: [], backend, batchSize: 2 }), "SpecError", ""],
    [
      "dtype float64",
      2,
      () =>
        createStateSaver({
          spec: { x: { shape: ["batch"], dtype: "float64" as never } },
          backend,
          batchSize: 2,
        }),
      "SpecError",
      "x",
      '"float64"',
    ],
    [
      "a negative dim",
      2,
      () =>
        createStateSaver({
          spec: { x: { shape: ["batch", -1], dtype: "float32" } },
          backend,
          batchSize: 2,
        }),
      "SpecError",
      "x",
    ],
    [
      "a fractional dim",
      2,
      () =>
        createStateSaver({
          spec: { x: { shape: ["batch", 1.5], dtype: "float32" } },
          backend,
          batchSize: 2,
        }),
      "SpecError",
      "x",
    ],
    [
      "two batch dims",
      2,
      () =>
        createStateSaver({
          spec: { x: { shape: ["batch", "batch"], dtype: "float32" } },
          backend,
          batchSize: 2,
        }),
      "SpecError",
      "x",
    ],
    [
      "no batch dim",
      2,
      () =>
        createStateSaver({ spec: { x: { shape: [3], dtype: "float32" } }, backend, batchSize: 2 }),
      "SpecError",
      "x",
    ],
    ["init 1.5 for int32", 2, () => constInit("int32", 1.5), "SpecError", "x", "1.5"],
    ["init 2**31 for int32", 2, () => constInit("int32", 2 ** 31), "SpecError", "x", "2147483648"],
    ["init NaN for int32", 5, () => constInit("int32", Number.NaN), "SpecError", "x", "NaN"],
    ["init 300 for uint8", 2, () => constInit("uint8", 300), "SpecError", "x", "300"],
    ["init -1 for uint8", 2, () => constInit("uint8", -1), "SpecError", "x", "-1"],
    ["init 2 for bool", 2, () => constInit("bool", 2), "SpecError", "x", "2"],
    [
      "init 2n**70n for int64",
      2,
      () => constInit("int64", 2n ** 70n),
      "SpecError",
      "x",
      "1180591620717411303424n",
    ],
    ["init 1.5 for int64", 2, () => constInit("int64", 1.5), "SpecError", "x", "1.5"],
    ['init "0" for float32', 5, () => constInit("float32", "0"), "SpecError", "x", '"0"'],
    ["init 70000 for float16", 2, () => constInit("float16", 70000), "SpecError", "x", "70000"],
  ]
  for (const [name, category, call, tag, path, says] of bad) {
    it(`[${category}] ${name} is refused with ${tag} naming ${path || "the state"}`, async () => {
      await expectRefused(
        null,
        { state: async () => new Uint8Array(0), live: () => backend.liveTensors() },
        {
          name,
          category,
          call,
          tag,
          path,
          ...(says === undefined ? {} : { says: [says] }),
        },
      )
    })
  }
  function constInit(dtype: string, value: unknown) {
    return createStateSaver({
      spec: {
        x: { shape: ["batch"], dtype: dtype as never, init: { kind: "constant", value } as never },
      },
      backend,
      batchSize: 2,
    })
  }
})
