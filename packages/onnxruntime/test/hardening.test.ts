// Every bad input to the package's public calls, tried as a hostile user would: each is a typed
// StateError naming the option, feed or leaf, with the expected and the actual value; the state
// (snapshot bytes, live ORT tensors) is exactly as before, and the caller's tensors are intact.
import { type StateError, init, isStateError, orThrow } from "@statesaver/core"
import * as ortNode from "onnxruntime-node"
import { beforeAll, describe, expect, it } from "vitest"
import {
  type OrtTensor,
  type StatefulSession,
  type StreamingSession,
  conventionalInput,
  createStatefulSession,
  createStreamingSession,
  ortBackend,
  pairStateNames,
  sessionStateSpec,
} from "../src/index.js"
import type { Runtime } from "./helpers/harness.js"
import { kvDecoder, lstm2 } from "./helpers/models.js"
import { seededFloats } from "./helpers/onnx-builder.js"

const ort = ortNode as unknown as Runtime
const INPUT = 3
const HIDDEN = 8
const B = 2
const model = lstm2(INPUT, HIDDEN)

/** What a call did: returned a Left, threw, or returned something else. */
interface Outcome {
  readonly via: "left" | "throw" | "right"
  readonly error: unknown
}

async function outcome(call: () => unknown): Promise<Outcome> {
  let result: unknown
  try {
    result = await call()
  } catch (error) {
    return { via: "throw", error }
  }
  const r = result as { _tag?: unknown; left?: unknown }
  if (r !== null && typeof r === "object" && r._tag === "Left")
    return { via: "left", error: r.left }
  return { via: "right", error: result }
}

/** One bad call: the error it must give. `actual` is compared with `Object.is` when present. */
interface Case {
  readonly name: string
  readonly call: () => unknown
  readonly tag: string
  readonly path: string
  readonly actual?: unknown
  readonly via?: "left" | "throw"
}

function expectRefused(o: Outcome, c: Case): StateError {
  expect(o.via, `${c.name}: ${String(o.error)}`).toBe(c.via ?? "left")
  expect(isStateError(o.error), `${c.name}: a StateError, not ${String(o.error)}`).toBe(true)
  const e = o.error as StateError
  expect(e._tag, `${c.name}: ${e.message}`).toBe(c.tag)
  expect(e.path, `${c.name}: ${e.message}`).toBe(c.path)
  expect(e.expected, c.name).toBeDefined()
  if ("actual" in c)
    expect(Object.is(e.actual, c.actual), `${c.name}: actual ${String(e.actual)}`).toBe(true)
  if (c.path !== "") expect(e.message, c.name).toContain(c.path)
  return e
}

const x = (steps = 1, batch = B, seed = 1): OrtTensor =>
  new ort.Tensor("float32", seededFloats(steps * batch * INPUT, seed), [steps, batch, INPUT])

/** The caller's tensors: each must still be live and hold the same values after every case. */
function probe(ts: readonly OrtTensor[]): () => void {
  const copies = ts.map((t) => (t.data as Float32Array).slice())
  return () =>
    ts.forEach((t, i) => {
      expect(t.location).toBe("cpu")
      expect(t.data).toEqual(copies[i])
    })
}

describe("StatefulSession refuses bad input with typed errors and changes nothing", () => {
  let stateful: StatefulSession
  let live: () => number

  beforeAll(async () => {
    const session = await ort.InferenceSession.create(model)
    const backend = ortBackend({ ort })
    stateful = orThrow(createStatefulSession({ session, backend, batchSize: B }))
    live = () => backend.liveTensors()
    for (const t of Object.values(orThrow(await stateful.run({ X: x(2) })))) t.dispose()
  })

  it("run: non-record feeds, non-tensor feeds, disposed, unknown, missing and state feeds, bad options", async () => {
    const X = x()
    const other = x(1, B, 5)
    const disposed = x()
    disposed.dispose()
    const intact = probe([X, other])
    const cases: Case[] = [
      {
        name: "feeds null",
        call: () => stateful.run(null as never),
        tag: "StructureMismatchError",
        path: "",
        actual: null,
      },
      {
        name: "feeds undefined",
        call: () => stateful.run(undefined as never),
        tag: "StructureMismatchError",
        path: "",
        actual: undefined,
      },
      {
        name: "feeds a number",
        call: () => stateful.run(42 as never),
        tag: "StructureMismatchError",
        path: "",
        actual: 42,
      },
      {
        name: "feeds a string",
        call: () => stateful.run("X" as never),
        tag: "StructureMismatchError",
        path: "",
        actual: "X",
      },
      {
        name: "feeds an array",
        call: () => stateful.run([X] as never),
        tag: "StructureMismatchError",
        path: "",
      },
      {
        name: "feeds a Map",
        call: () => stateful.run(new Map([["X", X]]) as never),
        tag: "StructureMismatchError",
        path: "",
      },
      {
        name: "feeds a tensor",
        call: () => stateful.run(X as never),
        tag: "StructureMismatchError",
        path: "",
        actual: X,
      },
      {
        name: "a raw Float32Array feed",
        call: () => stateful.run({ X: X.data } as never),
        tag: "StructureMismatchError",
        path: "X",
        actual: X.data,
      },
      {
        name: "a null feed",
        call: () => stateful.run({ X: null } as never),
        tag: "StructureMismatchError",
        path: "X",
        actual: null,
      },
      {
        name: "a tensor-like record feed",
        call: () => stateful.run({ X: { dims: [1, B, INPUT], data: X.data } } as never),
        tag: "StructureMismatchError",
        path: "X",
      },
      {
        name: "a disposed tensor feed",
        call: () => stateful.run({ X: disposed }),
        tag: "DisposedError",
        path: "X",
      },
      {
        name: "a feed the model does not take",
        call: () => stateful.run({ X, Z: other }),
        tag: "StructureMismatchError",
        path: "Z",
      },
      {
        name: "a feed of a state input",
        call: () => stateful.run({ X, "initial_c.1": other }),
        tag: "StructureMismatchError",
        path: '["initial_c.1"]',
      },
      {
        name: "a missing feed",
        call: () => stateful.run({}),
        tag: "StructureMismatchError",
        path: "X",
      },
      {
        name: "a __proto__ feed",
        call: () => stateful.run(JSON.parse('{"__proto__": 1}') as never),
        tag: "StructureMismatchError",
        path: "__proto__",
        actual: 1,
      },
      {
        name: "run options a number",
        call: () => stateful.run({ X }, 5 as never),
        tag: "OptionError",
        path: "options",
        actual: 5,
      },
      {
        name: "run options a string",
        call: () => stateful.run({ X }, "fast" as never),
        tag: "OptionError",
        path: "options",
        actual: "fast",
      },
      {
        name: "run options null",
        call: () => stateful.run({ X }, null as never),
        tag: "OptionError",
        path: "options",
        actual: null,
      },
      {
        name: "a feed of another element type than the model declares",
        call: () =>
          stateful.run({ X: new ort.Tensor("int32", new Int32Array(B * INPUT), [1, B, INPUT]) }),
        tag: "DTypeMismatchError",
        path: "X",
      },
      {
        name: "a feed of the wrong batch size (the model throws)",
        call: () => stateful.run({ X: x(1, B + 1) }),
        tag: "BackendError",
        path: "",
      },
    ]
    const before = orThrow(await stateful.snapshot())
    const count = live()
    for (const c of cases) {
      expectRefused(await outcome(c.call), c)
      expect(orThrow(await stateful.snapshot()), c.name).toEqual(before)
      expect(live(), c.name).toBe(count)
      expect(stateful.busy, c.name).toBe(false)
      intact()
    }
    // Still usable: a good run after all of them.
    const out = orThrow(await stateful.run({ X }))
    expect(out["Y"]?.dims).toEqual([1, B, HIDDEN])
    for (const t of Object.values(out)) t.dispose()
  })

  it("reset, select, save and restore through the session and its saver: nulls, non-arrays, bad rows and bytes", async () => {
    const mine = x()
    const intact = probe([mine])
    const h = (dims: number[]) =>
      new ort.Tensor("float32", new Float32Array(dims.reduce((a, b) => a * b, 1)), dims)
    const shapes: Record<string, OrtTensor> = {
      "initial_h.0": h([1, B, HIDDEN]),
      "initial_c.0": h([1, B, HIDDEN]),
      "initial_h.1": h([1, B, HIDDEN]),
      "initial_c.1": h([1, B, HIDDEN + 1]),
    }
    const batch3 = orThrow(
      createStatefulSession({
        session: stateful.session,
        backend: ortBackend({ ort }),
        batchSize: 3,
      }),
    )
    const otherBatch = orThrow(await batch3.snapshot())
    batch3.dispose()
    const cases: Case[] = []
    for (const [via, s] of [
      ["session", stateful],
      ["saver", stateful.saver],
    ] as const) {
      cases.push(
        {
          name: `${via}.reset(null)`,
          call: () => s.reset(null as never),
          tag: "RowIndexError",
          path: "",
          actual: null,
        },
        {
          name: `${via}.reset(5)`,
          call: () => s.reset(5 as never),
          tag: "RowIndexError",
          path: "",
          actual: 5,
        },
        {
          name: `${via}.reset(true)`,
          call: () => s.reset(true as never),
          tag: "RowIndexError",
          path: "",
          actual: true,
        },
        {
          name: `${via}.reset({})`,
          call: () => s.reset({} as never),
          tag: "RowIndexError",
          path: "",
        },
        {
          name: `${via}.reset("0")`,
          call: () => s.reset("0" as never),
          tag: "RowIndexError",
          path: "",
          actual: "0",
        },
        { name: `${via}.reset([2])`, call: () => s.reset([2]), tag: "RowIndexError", path: "" },
        {
          name: `${via}.reset([NaN])`,
          call: () => s.reset([Number.NaN]),
          tag: "RowIndexError",
          path: "",
        },
        {
          name: `${via}.select(null)`,
          call: () => s.select(null as never),
          tag: "RowIndexError",
          path: "",
          actual: null,
        },
        {
          name: `${via}.select("01")`,
          call: () => s.select("01" as never),
          tag: "RowIndexError",
          path: "",
          actual: "01",
        },
        {
          name: `${via}.select([0.5])`,
          call: () => s.select([0.5]),
          tag: "RowIndexError",
          path: "",
        },
        { name: `${via}.select([7])`, call: () => s.select([7]), tag: "RowIndexError", path: "" },
        {
          name: `${via}.save(null)`,
          call: () => s.save(null as never),
          tag: "StructureMismatchError",
          path: "",
        },
        {
          name: `${via}.save(a Float32Array)`,
          call: () => s.save(mine.data as never),
          tag: "StructureMismatchError",
          path: "",
        },
        {
          name: `${via}.save({ h: raw arrays })`,
          call: () =>
            s.save(Object.fromEntries(Object.keys(shapes).map((k) => [k, mine.data])) as never),
          tag: "StructureMismatchError",
          // Leaves of a record are checked in sorted key order.
          path: '["initial_c.0"]',
        },
        {
          name: `${via}.save(a leaf of the wrong shape)`,
          call: () => s.save(shapes),
          tag: "ShapeMismatchError",
          path: '["initial_c.1"]',
        },
        {
          name: `${via}.restore(null)`,
          call: () => s.restore(null as never),
          tag: "SnapshotFormatError",
          path: "",
        },
        {
          name: `${via}.restore("bytes")`,
          call: () => s.restore("bytes" as never),
          tag: "SnapshotFormatError",
          path: "",
        },
        {
          name: `${via}.restore(garbage)`,
          call: () => s.restore(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9])),
          tag: "SnapshotFormatError",
          path: "",
        },
        {
          name: `${via}.restore(another batch size)`,
          call: () => s.restore(otherBatch),
          tag: "BatchSizeMismatchError",
          path: '["initial_c.0"]',
        },
      )
    }
    const before = orThrow(await stateful.snapshot())
    const count = live()
    for (const c of cases) {
      expectRefused(await outcome(c.call), c)
      expect(orThrow(await stateful.snapshot()), c.name).toEqual(before)
      expect(live(), c.name).toBe(count)
      expect(stateful.batchSize, c.name).toBe(B)
      intact()
    }
    // The tensors refused by save are still the caller's.
    for (const t of Object.values(shapes)) expect(t.location).toBe("cpu")
  })
})

describe("createStatefulSession refuses bad options with OptionError naming the option", () => {
  it("options, session, pairs, batchDim, init, shapes, backend, batchSize, dims", async () => {
    const session = await ort.InferenceSession.create(model)
    const backend = ortBackend({ ort })
    const base = { session, backend, batchSize: B }
    const meta = {
      inputMetadata: session.inputMetadata,
      outputMetadata: session.outputMetadata,
      run: session.run.bind(session),
    }
    const names = { inputNames: session.inputNames, outputNames: session.outputNames }
    const make = (o: unknown) => () => createStatefulSession(o as never)
    const kv = await ort.InferenceSession.create(kvDecoder(4))
    const makeKv = (o: object) => make({ session: kv, backend, batchSize: B, ...o })
    const cases: Case[] = [
      {
        name: "no options",
        call: make(undefined),
        tag: "OptionError",
        path: "options",
        actual: undefined,
      },
      { name: "options null", call: make(null), tag: "OptionError", path: "options", actual: null },
      { name: "options an array", call: make([base]), tag: "OptionError", path: "options" },
      {
        name: "session missing",
        call: make({ ...base, session: undefined }),
        tag: "OptionError",
        path: "session",
        actual: undefined,
      },
      {
        name: "session a string",
        call: make({ ...base, session: "model.onnx" }),
        tag: "OptionError",
        path: "session",
        actual: "model.onnx",
      },
      {
        name: "session without inputNames",
        call: make({ ...base, session: { ...meta, outputNames: names.outputNames } }),
        tag: "OptionError",
        path: "session.inputNames",
        actual: undefined,
      },
      {
        name: "session without outputNames",
        call: make({ ...base, session: { ...meta, inputNames: names.inputNames } }),
        tag: "OptionError",
        path: "session.outputNames",
        actual: undefined,
      },
      {
        name: "inputNames a string",
        call: make({ ...base, session: { ...meta, ...names, inputNames: "X" } }),
        tag: "OptionError",
        path: "session.inputNames",
        actual: "X",
      },
      {
        name: "an inputName that is a number",
        call: make({ ...base, session: { ...meta, ...names, inputNames: ["X", 5] } }),
        tag: "OptionError",
        path: "session.inputNames[1]",
        actual: 5,
      },
      {
        name: "session without run",
        call: make({
          ...base,
          session: {
            ...names,
            inputMetadata: meta.inputMetadata,
            outputMetadata: meta.outputMetadata,
          },
        }),
        tag: "OptionError",
        path: "session.run",
        actual: undefined,
      },
      {
        name: "session without inputMetadata",
        call: make({
          ...base,
          session: { ...names, run: meta.run, outputMetadata: meta.outputMetadata },
        }),
        tag: "OptionError",
        path: "session.inputMetadata",
        actual: undefined,
      },
      {
        name: "inputMetadata with a null entry",
        call: make({ ...base, session: { ...names, ...meta, inputMetadata: [null] } }),
        tag: "OptionError",
        path: "session.inputMetadata[0]",
        actual: null,
      },
      {
        name: "pairs a string",
        call: make({ ...base, pairs: "Y_h.0" }),
        tag: "OptionError",
        path: "pairs",
        actual: "Y_h.0",
      },
      {
        name: "a pair to a number",
        call: make({ ...base, pairs: { "Y_h.0": 5 } }),
        tag: "OptionError",
        path: 'pairs["Y_h.0"]',
        actual: 5,
      },
      {
        name: "a pair from a missing output",
        call: make({ ...base, pairs: { nope: "initial_h.0" } }),
        tag: "OptionError",
        path: "pairs.nope",
        actual: "nope",
      },
      {
        name: "a pair to a missing input",
        call: make({ ...base, pairs: { "Y_h.0": "nope" } }),
        tag: "OptionError",
        path: 'pairs["Y_h.0"]',
        actual: "nope",
      },
      {
        name: "two outputs to one input",
        call: make({ ...base, pairs: { "Y_h.1": "initial_h.0" } }),
        tag: "StructureMismatchError",
        path: '["initial_h.0"]',
      },
      {
        name: "batchDim a number",
        call: make({ ...base, batchDim: 1 }),
        tag: "OptionError",
        path: "batchDim",
        actual: 1,
      },
      {
        name: "batchDim empty",
        call: make({ ...base, batchDim: "" }),
        tag: "OptionError",
        path: "batchDim",
        actual: "",
      },
      {
        name: "init a number",
        call: make({ ...base, init: 0 }),
        tag: "OptionError",
        path: "init",
        actual: 0,
      },
      {
        name: "init of a non-state input",
        call: make({ ...base, init: { X: init.constant(1) } }),
        tag: "OptionError",
        path: "init.X",
        actual: "X",
      },
      {
        name: "shapes of a non-state input",
        call: make({ ...base, shapes: { X: [1, "batch", 3] } }),
        tag: "OptionError",
        path: "shapes.X",
        actual: "X",
      },
      {
        name: "a shape that is a string",
        call: make({ ...base, shapes: { "initial_h.0": "1xBx8" } }),
        tag: "OptionError",
        path: 'shapes["initial_h.0"]',
        actual: "1xBx8",
      },
      {
        name: "a shape with a negative dim",
        call: make({ ...base, shapes: { "initial_h.0": [-1, "batch", 8] } }),
        tag: "OptionError",
        path: 'shapes["initial_h.0"]',
      },
      {
        name: "backend missing",
        call: make({ ...base, backend: undefined }),
        tag: "OptionError",
        path: "backend",
        actual: undefined,
      },
      {
        name: "backend a string",
        call: make({ ...base, backend: "onnxruntime" }),
        tag: "OptionError",
        path: "backend",
        actual: "onnxruntime",
      },
      {
        name: "batchSize 0",
        call: make({ ...base, batchSize: 0 }),
        tag: "OptionError",
        path: "batchSize",
        actual: 0,
      },
      {
        name: "batchSize 1.5",
        call: make({ ...base, batchSize: 1.5 }),
        tag: "OptionError",
        path: "batchSize",
        actual: 1.5,
      },
      {
        name: "batchSize NaN",
        call: make({ ...base, batchSize: Number.NaN }),
        tag: "OptionError",
        path: "batchSize",
        actual: Number.NaN,
      },
      {
        name: 'batchSize "4"',
        call: make({ ...base, batchSize: "4" }),
        tag: "OptionError",
        path: "batchSize",
        actual: "4",
      },
      {
        name: "batchSize Infinity",
        call: make({ ...base, batchSize: Number.POSITIVE_INFINITY }),
        tag: "OptionError",
        path: "batchSize",
        actual: Number.POSITIVE_INFINITY,
      },
      {
        name: "dims a string",
        call: make({ ...base, dims: "x" }),
        tag: "OptionError",
        path: "dims",
        actual: "x",
      },
      {
        name: "dims of a model without named dims",
        call: make({ ...base, dims: { seq: 1 } }),
        tag: "OptionError",
        path: "dims.seq",
        actual: "seq",
      },
      {
        name: "dims of a KV cache of size -1",
        call: makeKv({ dims: { past_sequence_length: -1 } }),
        tag: "OptionError",
        path: "dims.past_sequence_length",
        actual: -1,
      },
      {
        name: "dims of a KV cache of size 1.5",
        call: makeKv({ dims: { past_sequence_length: 1.5 } }),
        tag: "OptionError",
        path: "dims.past_sequence_length",
        actual: 1.5,
      },
      {
        name: "dims of an unknown dim",
        call: makeKv({ dims: { seq: 2 } }),
        tag: "OptionError",
        path: "dims.seq",
        actual: "seq",
      },
      {
        name: "an init that is not an Init",
        call: make({ ...base, init: { "initial_h.0": 5 } }),
        tag: "SpecError",
        path: '["initial_h.0"]',
        actual: 5,
      },
    ]
    for (const c of cases) {
      expectRefused(await outcome(c.call), c)
      expect(backend.liveTensors(), c.name).toBe(0)
    }
    // The message prints the value as given: NaN as NaN, a string quoted.
    const nan = await outcome(make({ ...base, batchSize: Number.NaN }))
    expect((nan.error as Error).message).toContain("got NaN")
    const str = await outcome(make({ ...base, batchSize: "4" }))
    expect((str.error as Error).message).toContain('got "4"')
  })
})

describe("StreamingSession refuses bad input with typed errors and changes nothing", () => {
  let streaming: StreamingSession
  let live: () => number
  const keys = ["a", "b"]

  beforeAll(async () => {
    const session = await ort.InferenceSession.create(model)
    const backend = ortBackend({ ort })
    streaming = orThrow(createStreamingSession({ session, ort, backend, capacity: 4 }))
    live = () => backend.liveTensors()
    const outs = orThrow(
      await streaming.run(keys.map((key, i) => ({ key, feeds: { X: x(2, 1, i + 1) } }))),
    )
    for (const o of outs.values()) for (const t of Object.values(o)) t.dispose()
  })

  const snapshots = () => Promise.all(keys.map(async (k) => orThrow(await streaming.snapshot(k))))

  it("run: non-iterables, malformed entries, bad keys, raw-array and null feeds, bad options", async () => {
    const X = x(1, 1, 9)
    const disposed = x(1, 1)
    disposed.dispose()
    const intact = probe([X])
    function* throwing(): Generator<never> {
      yield* []
      throw new Error("the producer failed")
    }
    const run = (streams: unknown, options?: unknown) => () =>
      streaming.run(streams as never, options as never)
    const cases: Case[] = [
      {
        name: "streams null",
        call: run(null),
        tag: "StructureMismatchError",
        path: "",
        actual: null,
      },
      {
        name: "streams undefined",
        call: run(undefined),
        tag: "StructureMismatchError",
        path: "",
        actual: undefined,
      },
      {
        name: "streams a number",
        call: run(5),
        tag: "StructureMismatchError",
        path: "",
        actual: 5,
      },
      {
        name: "streams a string",
        call: run("ab"),
        tag: "StructureMismatchError",
        path: "",
        actual: "ab",
      },
      {
        name: "streams one stream object",
        call: run({ key: "a", feeds: { X } }),
        tag: "StructureMismatchError",
        path: "",
      },
      {
        name: "an iterable that throws",
        call: run(throwing()),
        tag: "StructureMismatchError",
        path: "",
      },
      {
        name: "an entry null",
        call: run([null]),
        tag: "StructureMismatchError",
        path: "streams[0]",
        actual: null,
      },
      {
        name: "an entry without a key",
        call: run([{ key: "a", feeds: { X } }, { feeds: { X } }]),
        tag: "StructureMismatchError",
        path: "streams[1]",
      },
      {
        name: "an entry that is a tensor",
        call: run([X]),
        tag: "StructureMismatchError",
        path: "streams[0]",
        actual: X,
      },
      {
        name: "a key that is an object",
        call: run([{ key: {}, feeds: { X } }]),
        tag: "KeyError",
        path: "",
      },
      {
        name: "a key NaN",
        call: run([{ key: Number.NaN, feeds: { X } }]),
        tag: "KeyError",
        path: "",
        actual: Number.NaN,
      },
      {
        name: "a key null",
        call: run([{ key: null, feeds: { X } }]),
        tag: "KeyError",
        path: "",
        actual: null,
      },
      { name: "no streams", call: run([]), tag: "KeyError", path: "" },
      { name: "an empty Map", call: run(new Map()), tag: "KeyError", path: "" },
      {
        name: "feeds null",
        call: run([{ key: "a", feeds: null }]),
        tag: "StructureMismatchError",
        path: "a",
        actual: null,
      },
      {
        name: "feeds missing",
        call: run([{ key: "a" }]),
        tag: "StructureMismatchError",
        path: "a",
        actual: undefined,
      },
      {
        name: "feeds a raw Float32Array",
        call: run([{ key: "a", feeds: X.data }]),
        tag: "StructureMismatchError",
        path: "a",
        actual: X.data,
      },
      {
        name: "a raw Float32Array feed",
        call: run([{ key: "a", feeds: { X: X.data } }]),
        tag: "StructureMismatchError",
        path: "a.X",
        actual: X.data,
      },
      {
        name: "a null feed",
        call: run([{ key: 7, feeds: { X: null } }]),
        tag: "StructureMismatchError",
        path: "[7].X",
        actual: null,
      },
      {
        name: "a Map entry of null feeds",
        call: run(new Map([["b", null]])),
        tag: "StructureMismatchError",
        path: "b",
        actual: null,
      },
      {
        name: "a disposed feed",
        call: run([{ key: "a", feeds: { X: disposed } }]),
        tag: "DisposedError",
        path: "a.X",
      },
      {
        name: "options a number",
        call: run([{ key: "a", feeds: { X } }], 5),
        tag: "OptionError",
        path: "options",
        actual: 5,
      },
      {
        name: "options.shared a string",
        call: run([{ key: "a", feeds: { X } }], { shared: "sr" }),
        tag: "OptionError",
        path: "shared",
        actual: "sr",
      },
      {
        name: "a raw array in options.shared",
        call: run([{ key: "a", feeds: {} }], { shared: { X: X.data } }),
        tag: "StructureMismatchError",
        path: "X",
        actual: X.data,
      },
      {
        name: "options.runOptions a number",
        call: run([{ key: "a", feeds: { X } }], { runOptions: 1 }),
        tag: "OptionError",
        path: "runOptions",
        actual: 1,
      },
    ]
    const before = await snapshots()
    const count = live()
    for (const c of cases) {
      expectRefused(await outcome(c.call), c)
      expect(await snapshots(), c.name).toEqual(before)
      expect(streaming.keys().sort(), c.name).toEqual(keys)
      expect(live(), c.name).toBe(count)
      intact()
    }
  })

  it("reset, delete, snapshot and restore with bad keys and bytes", async () => {
    const cases: Case[] = [
      {
        name: "reset(null)",
        call: () => streaming.reset(null as never),
        tag: "KeyError",
        path: "",
        actual: null,
      },
      {
        name: 'reset("a")',
        call: () => streaming.reset("a" as never),
        tag: "KeyError",
        path: "",
        actual: "a",
      },
      {
        name: "reset([{}])",
        call: () => streaming.reset([{}] as never),
        tag: "KeyError",
        path: "",
      },
      {
        name: "reset of an unknown key",
        call: () => streaming.reset(["zed"]),
        tag: "KeyError",
        path: "",
        actual: "zed",
      },
      { name: "delete({})", call: () => streaming.delete({} as never), tag: "KeyError", path: "" },
      {
        name: "delete(NaN)",
        call: () => streaming.delete(Number.NaN),
        tag: "KeyError",
        path: "",
        actual: Number.NaN,
      },
      {
        name: "delete(null)",
        call: () => streaming.delete(null as never),
        tag: "KeyError",
        path: "",
        actual: null,
      },
      {
        name: "snapshot of an unknown key",
        call: () => streaming.snapshot("zed"),
        tag: "KeyError",
        path: "",
        actual: "zed",
      },
      {
        name: "snapshot(null)",
        call: () => streaming.snapshot(null as never),
        tag: "KeyError",
        path: "",
        actual: null,
      },
      {
        name: "restore(NaN, bytes)",
        call: async () => streaming.restore(Number.NaN, orThrow(await streaming.snapshot("a"))),
        tag: "KeyError",
        path: "",
        actual: Number.NaN,
      },
      {
        name: "restore(key, null)",
        call: () => streaming.restore("c", null as never),
        tag: "SnapshotFormatError",
        path: "",
      },
      {
        name: "restore(key, garbage)",
        call: () => streaming.restore("c", new Uint8Array(3)),
        tag: "SnapshotFormatError",
        path: "",
      },
      {
        name: "store.reset(null)",
        call: () => streaming.store.reset(null as never),
        tag: "KeyError",
        path: "",
        actual: null,
      },
    ]
    const before = await snapshots()
    const count = live()
    for (const c of cases) {
      expectRefused(await outcome(c.call), c)
      expect(await snapshots(), c.name).toEqual(before)
      expect(streaming.keys().sort(), c.name).toEqual(keys)
      expect(live(), c.name).toBe(count)
    }
  })
})

describe("createStreamingSession refuses bad options with OptionError naming the option", () => {
  it("ort, capacity, initialSlots, idleTtlMs, onEvict, clock, batchAxes", async () => {
    const session = await ort.InferenceSession.create(model)
    const backend = ortBackend({ ort })
    const base = { session, ort, backend }
    const make = (o: unknown) => () =>
      createStreamingSession({ ...base, ...(o as object) } as never)
    const cases: Case[] = [
      {
        name: "ort missing",
        call: make({ ort: undefined }),
        tag: "OptionError",
        path: "ort",
        actual: undefined,
      },
      {
        name: "ort a string",
        call: make({ ort: "onnxruntime-node" }),
        tag: "OptionError",
        path: "ort",
        actual: "onnxruntime-node",
      },
      { name: "ort without Tensor", call: make({ ort: {} }), tag: "OptionError", path: "ort" },
      {
        name: 'capacity "10"',
        call: make({ capacity: "10" }),
        tag: "OptionError",
        path: "capacity",
        actual: "10",
      },
      {
        name: "capacity 0",
        call: make({ capacity: 0 }),
        tag: "OptionError",
        path: "capacity",
        actual: 0,
      },
      {
        name: "capacity 2.5",
        call: make({ capacity: 2.5 }),
        tag: "OptionError",
        path: "capacity",
        actual: 2.5,
      },
      {
        name: "capacity NaN",
        call: make({ capacity: Number.NaN }),
        tag: "OptionError",
        path: "capacity",
        actual: Number.NaN,
      },
      {
        name: "initialSlots 0",
        call: make({ initialSlots: 0 }),
        tag: "OptionError",
        path: "initialSlots",
        actual: 0,
      },
      {
        name: "initialSlots -1",
        call: make({ initialSlots: -1 }),
        tag: "OptionError",
        path: "initialSlots",
        actual: -1,
      },
      {
        name: "idleTtlMs -1",
        call: make({ idleTtlMs: -1 }),
        tag: "OptionError",
        path: "idleTtlMs",
        actual: -1,
      },
      {
        name: "idleTtlMs NaN",
        call: make({ idleTtlMs: Number.NaN }),
        tag: "OptionError",
        path: "idleTtlMs",
        actual: Number.NaN,
      },
      {
        name: 'idleTtlMs "5"',
        call: make({ idleTtlMs: "5" }),
        tag: "OptionError",
        path: "idleTtlMs",
        actual: "5",
      },
      {
        name: "onEvict 42",
        call: make({ onEvict: 42 }),
        tag: "OptionError",
        path: "onEvict",
        actual: 42,
      },
      {
        name: 'clock "now"',
        call: make({ clock: "now" }),
        tag: "OptionError",
        path: "clock",
        actual: "now",
      },
      {
        name: "batchAxes a number",
        call: make({ batchAxes: 1 }),
        tag: "OptionError",
        path: "batchAxes",
        actual: 1,
      },
      {
        name: "a batch axis past the rank",
        call: make({ batchAxes: { X: 3 } }),
        tag: "OptionError",
        path: "batchAxes.X",
        actual: 3,
      },
      {
        name: "a batch axis 1.5",
        call: make({ batchAxes: { X: 1.5 } }),
        tag: "OptionError",
        path: "batchAxes.X",
        actual: 1.5,
      },
      {
        name: 'a batch axis "1"',
        call: make({ batchAxes: { X: "1" } }),
        tag: "OptionError",
        path: "batchAxes.X",
        actual: "1",
      },
      {
        name: "a batch axis -1",
        call: make({ batchAxes: { X: -1 } }),
        tag: "OptionError",
        path: "batchAxes.X",
        actual: -1,
      },
      {
        name: "a batch axis of an unknown name",
        call: make({ batchAxes: { Z: 0 } }),
        tag: "OptionError",
        path: "batchAxes.Z",
        actual: "Z",
      },
      {
        name: "a batch axis of a state input",
        call: make({ batchAxes: { "initial_h.0": 1 } }),
        tag: "OptionError",
        path: 'batchAxes["initial_h.0"]',
        actual: "initial_h.0",
      },
      {
        name: "session without outputNames",
        call: make({ session: { inputNames: session.inputNames } }),
        tag: "OptionError",
        path: "session.outputNames",
        actual: undefined,
      },
    ]
    for (const c of cases) {
      expectRefused(await outcome(c.call), c)
      expect(backend.liveTensors(), c.name).toBe(0)
    }
  })
})

describe("ortBackend and the pairing helpers throw (or return) typed errors for bad arguments", () => {
  it("ortBackend throws OptionError naming the option, never a TypeError", async () => {
    const gb = (o: unknown) => () => ortBackend(o as never)
    const cases: Case[] = [
      {
        name: "no options",
        call: gb(undefined),
        tag: "OptionError",
        path: "options",
        actual: undefined,
        via: "throw",
      },
      {
        name: "the module itself",
        call: gb(null),
        tag: "OptionError",
        path: "options",
        actual: null,
        via: "throw",
      },
      {
        name: "ort missing",
        call: gb({}),
        tag: "OptionError",
        path: "ort",
        actual: undefined,
        via: "throw",
      },
      {
        name: "ort a number",
        call: gb({ ort: 5 }),
        tag: "OptionError",
        path: "ort",
        actual: 5,
        via: "throw",
      },
      {
        name: "ort without Tensor",
        call: gb({ ort: { InferenceSession: {} } }),
        tag: "OptionError",
        path: "ort",
        via: "throw",
      },
      {
        name: "location gpu",
        call: gb({ ort, location: "gpu" }),
        tag: "OptionError",
        path: "location",
        actual: "gpu",
        via: "throw",
      },
      {
        name: "gpu-buffer without device",
        call: gb({ ort, location: "gpu-buffer" }),
        tag: "OptionError",
        path: "device",
        actual: undefined,
        via: "throw",
      },
      {
        name: "gpu-buffer with a fake device",
        call: gb({ ort, location: "gpu-buffer", device: {} }),
        tag: "OptionError",
        path: "device",
        via: "throw",
      },
      {
        name: "a device that is a string",
        call: gb({ ort, device: "gpu0" }),
        tag: "OptionError",
        path: "device",
        actual: "gpu0",
        via: "throw",
      },
    ]
    for (const c of cases) expectRefused(await outcome(c.call), c)
  })

  it("ort.env.wasm.proxy is refused only on a page: in Node onnxruntime-web ignores it and the backend is made", () => {
    const env = (ortNode as unknown as { env: { wasm: { proxy?: boolean | undefined } } }).env
    const before = env.wasm.proxy
    env.wasm.proxy = true
    try {
      const backend = ortBackend({ ort })
      expect(backend.name).toBe("onnxruntime")
      // The browser test (wasm-proxy.browser.test.ts) shows the refusal on a page.
    } finally {
      env.wasm.proxy = before
    }
  })

  it("pairStateNames and sessionStateSpec return Left(OptionError); conventionalInput throws it", async () => {
    const session = await ort.InferenceSession.create(model)
    const pairs = orThrow(pairStateNames(session.inputNames, session.outputNames))
    const cases: Case[] = [
      {
        name: "pairStateNames(null, ...)",
        call: () => pairStateNames(null as never, []),
        tag: "OptionError",
        path: "inputs",
        actual: null,
      },
      {
        name: "pairStateNames(..., [1])",
        call: () => pairStateNames(["h"], [1] as never),
        tag: "OptionError",
        path: "outputs[0]",
        actual: 1,
      },
      {
        name: "pairStateNames explicit 5",
        call: () => pairStateNames(["h"], ["hn"], 5 as never),
        tag: "OptionError",
        path: "explicit",
        actual: 5,
      },
      {
        name: "sessionStateSpec(null)",
        call: () => sessionStateSpec(null as never, pairs),
        tag: "OptionError",
        path: "session",
        actual: null,
      },
      {
        name: "sessionStateSpec pairs null",
        call: () => sessionStateSpec(session, null as never),
        tag: "OptionError",
        path: "pairs",
        actual: null,
      },
      {
        name: "sessionStateSpec pairs [{ input: 5 }]",
        call: () => sessionStateSpec(session, [{ input: 5 }] as never),
        tag: "OptionError",
        path: "pairs[0]",
      },
      {
        name: "sessionStateSpec options 5",
        call: () => sessionStateSpec(session, pairs, 5 as never),
        tag: "OptionError",
        path: "options",
        actual: 5,
      },
      {
        name: "sessionStateSpec init of an unknown input",
        call: () => sessionStateSpec(session, pairs, { init: { nope: init.constant(0) } }),
        tag: "OptionError",
        path: "init.nope",
        actual: "nope",
      },
      {
        name: "conventionalInput(5, ...)",
        call: () => conventionalInput(5 as never, []),
        tag: "OptionError",
        path: "output",
        actual: 5,
        via: "throw",
      },
      {
        name: "conventionalInput(..., null)",
        call: () => conventionalInput("hn", null as never),
        tag: "OptionError",
        path: "inputs",
        actual: null,
        via: "throw",
      },
    ]
    for (const c of cases) expectRefused(await outcome(c.call), c)
  })
})
