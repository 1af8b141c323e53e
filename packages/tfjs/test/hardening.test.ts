// Every public call of @statesaver/tfjs given bad input, as a hostile user would: each gets a typed
// StateError (never a TypeError) naming what is wrong, with the expected and the actual value, and
// leaves everything as it was: the saver's and store's snapshot bytes, the weights, the live tensor
// count, and the caller's tensors (still alive, same values).
import * as tf from "@tensorflow/tfjs"
import {
  type ResolvedSpec,
  SpecError,
  StateError,
  type StateSaver,
  type StateStore,
  type StateTree,
  createStateSaver,
  createStateStore,
  gruSpec,
  hostBackend,
  init,
  hostTensor,
  orThrow,
  resolveSpec,
} from "@statesaver/core"
import { beforeAll, describe, expect, it } from "vitest"
import {
  type StatefulRnn,
  type TbpttBatch,
  type TbpttOptions,
  type TbpttTrainer,
  cellLayout,
  createStatefulRnn,
  createTbpttTrainer,
  evaluateTbptt,
  fromTfjsStates,
  resetWhere,
  selectRows,
  specFromCells,
  tfjsBackend,
  toTfjsStates,
} from "../src/index.js"
import { type Model, makeCell, makeModel } from "./models.js"
import { randomInputs, useBackend } from "./setup.js"

beforeAll(() => useBackend("wasm"))

type Tag =
  | "StructureMismatchError"
  | "ShapeMismatchError"
  | "DTypeMismatchError"
  | "BatchSizeMismatchError"
  | "RowIndexError"
  | "OptionError"
  | "DisposedError"
  | "SpecError"
  | "KeyError"
  | "BackendError"

/** One bad call: `prepare` builds its arguments (the caller's), `call` makes the call. */
interface Case<F> {
  readonly name: string
  readonly tag: Tag
  /** The error's `path` (the leaf, option or argument); "" for the whole state. */
  readonly path: string
  /** The error's `actual`, compared with `toEqual` (the value the caller gave), when set. */
  readonly actual?: unknown
  /** The API throws (nouns returning a plain value) rather than returning a Left. */
  readonly throws?: boolean
  readonly call: (fx: F) => { run: () => unknown; given: unknown[] }
}

/** Every tf.Tensor reachable from `x` through arrays and plain objects. */
function tensorsIn(x: unknown, out: tf.Tensor[] = []): tf.Tensor[] {
  if (x instanceof tf.Tensor) out.push(x)
  else if (Array.isArray(x)) for (const v of x) tensorsIn(v, out)
  else if (typeof x === "object" && x !== null && Object.getPrototypeOf(x) === Object.prototype)
    for (const v of Object.values(x)) tensorsIn(v, out)
  return out
}

/** Runs the cases against one fixture; `fingerprint` captures everything that must not change. */
function refusals<F>(
  title: string,
  fixture: () => Promise<F> | F,
  fingerprint: (fx: F) => Promise<unknown>,
  cases: readonly Case<F>[],
): void {
  describe(title, () => {
    let fx: F
    beforeAll(async () => {
      fx = await fixture()
    })
    for (const c of cases) {
      it(`${c.name}: ${c.tag}${c.path === "" ? "" : ` at ${c.path}`}, nothing changes`, async () => {
        const { run, given } = c.call(fx)
        const callerTensors = tensorsIn(given).filter((t) => !t.isDisposed)
        const callerValues = callerTensors.map((t) => Array.from(t.dataSync()))
        const before = await fingerprint(fx)
        const live = tf.memory().numTensors
        let error: unknown
        if (c.throws) {
          try {
            run()
          } catch (e) {
            error = e
          }
          expect(error, "the call must throw").toBeDefined()
        } else {
          let result: unknown
          try {
            result = run()
          } catch (e) {
            throw new Error(`the call threw instead of returning a Left: ${String(e)}`, {
              cause: e,
            })
          }
          expect(result).toMatchObject({ _tag: "Left" })
          error = (result as { left: unknown }).left
        }
        expect(error).toBeInstanceOf(StateError)
        const e = error as StateError
        expect(e._tag).toBe(c.tag)
        expect(e.name).toBe(c.tag)
        expect(e.path).toBe(c.path)
        if (c.path !== "") expect(e.message).toContain(c.path)
        expect(e.expected).toBeDefined()
        if ("actual" in c) expect(e.actual).toEqual(c.actual)
        expect(tf.memory().numTensors).toBe(live)
        expect(await fingerprint(fx)).toEqual(before)
        callerTensors.forEach((t, i) => {
          expect(t.isDisposed, "a tensor of the caller was disposed").toBe(false)
          expect(Array.from(t.dataSync())).toEqual(callerValues[i])
        })
      })
    }
  })
}

const bytes = async (saver: StateSaver<tf.Variable, tf.Tensor>) =>
  saver.disposed ? "disposed" : Array.from(orThrow(await saver.snapshot()))

const storeBytes = async (store: StateStore<tf.Variable, tf.Tensor>) => {
  if (store.disposed) return "disposed"
  const out: Record<string, number[]> = {}
  for (const k of store.keys()) out[String(k)] = Array.from(orThrow(await store.snapshot(k)))
  return { keys: store.keys(), out }
}

const weights = (layers: readonly tf.layers.Layer[]) =>
  layers.flatMap((l) => l.getWeights().map((w) => Array.from(w.dataSync())))

const lstm = (units: number[], seed = 1) =>
  tf.layers.rnn({
    cell: units.map((u, i) => makeCell("lstm", u, seed + 10 * i)),
    returnSequences: true,
    returnState: true,
  }) as tf.RNN

// ---------------------------------------------------------------------------------------------
// resetWhere / selectRows: a spec whose leaves have their batch on axis 0 and on axis 1.

interface RowsFx {
  readonly spec: ResolvedSpec
  /** A fresh valid state, `[3, 2]` and `[2, 3]`: the caller's tensors. */
  readonly state: () => tf.Tensor[]
}

const rowsFixture = (): RowsFx => ({
  spec: orThrow(
    resolveSpec([
      {
        shape: ["batch", 2],
        dtype: "float32",
        init: init.tensor(hostTensor("float32", [2], [5, 6])),
      },
      { shape: [2, "batch"], dtype: "float32", init: init.constant(-1) },
    ]),
  ),
  state: () => [tf.tensor2d([1, 2, 3, 4, 7, 8], [3, 2]), tf.tensor2d([1, 2, 3, 4, 5, 6], [2, 3])],
})

const badMasks: [string, (fx: RowsFx) => unknown, unknown][] = [
  ["null", () => null, null],
  ["undefined", () => undefined, undefined],
  ["a number", () => 5, 5],
  ["true", () => true, true],
  ["a plain object", () => ({}), {}],
  ["a Float32Array", () => new Float32Array(3), new Float32Array(3)],
  ["too short", () => [true], [true]],
  ["too long", () => [true, false, true, false], [true, false, true, false]],
  ["an entry 2", () => [1, 2, 0], 2],
  ['an entry "1"', () => ["1", 0, 0], "1"],
  ["an entry NaN", () => [0, Number.NaN, 0], Number.NaN],
  // eslint-disable-next-line no-sparse-arrays -- a hole is what is tested
  ["a hole", () => [true, , false], undefined],
  ["a Uint8Array entry 7", () => Uint8Array.of(0, 7, 1), 7],
]

const badStates: [string, (fx: RowsFx) => unknown, Tag, string][] = [
  ["null", () => null, "StructureMismatchError", ""],
  ["one leaf missing", (fx) => [fx.state()[0]], "StructureMismatchError", ""],
  ["a record instead of a tuple", (fx) => ({ a: fx.state()[0] }), "StructureMismatchError", ""],
  ["a string leaf", (fx) => [fx.state()[0], "x"], "StructureMismatchError", "[1]"],
  [
    "a Float32Array leaf",
    (fx) => [new Float32Array(6), fx.state()[1]],
    "StructureMismatchError",
    "[0]",
  ],
  [
    "a disposed leaf",
    (fx) => {
      const [a, b] = fx.state() as [tf.Tensor, tf.Tensor]
      b.dispose()
      return [a, b]
    },
    "StructureMismatchError",
    "[1]",
  ],
  [
    "an int32 leaf",
    (fx) => [tf.zeros([3, 2], "int32"), fx.state()[1]],
    "DTypeMismatchError",
    "[0]",
  ],
  ["a rank-3 leaf", (fx) => [tf.zeros([3, 2, 1]), fx.state()[1]], "ShapeMismatchError", "[0]"],
  ["a leaf 5 wide", (fx) => [tf.zeros([3, 5]), fx.state()[1]], "ShapeMismatchError", "[0]"],
  [
    "leaves of 3 and 4 rows",
    (fx) => [fx.state()[0], tf.zeros([2, 4])],
    "BatchSizeMismatchError",
    "[1]",
  ],
]

const rowsCases: Case<RowsFx>[] = [
  ...badMasks.map(([name, mask, actual]): Case<RowsFx> => ({
    name: `resetWhere, a mask that is ${name}`,
    tag: "RowIndexError",
    path: "",
    actual,
    call: (fx) => {
      const s = fx.state()
      const m = mask(fx)
      return { run: () => resetWhere(fx.spec, s, m as never), given: [s, m] }
    },
  })),
  ...(
    [
      ["a tensor of 2 rows", () => tf.tensor1d([1, 0]), [2]],
      ["a [3, 1] tensor", () => tf.zeros([3, 1], "bool"), [3, 1]],
      ["a string tensor", () => tf.tensor1d(["a", "b", "c"]), "string"],
    ] as const
  ).map(([name, mask, actual]): Case<RowsFx> => ({
    name: `resetWhere, a mask that is ${name}`,
    tag: "RowIndexError",
    path: "",
    actual,
    call: (fx) => {
      const s = fx.state()
      const m = mask()
      return { run: () => resetWhere(fx.spec, s, m), given: [s, m] }
    },
  })),
  {
    name: "resetWhere, a disposed mask tensor",
    tag: "RowIndexError",
    path: "",
    call: (fx) => {
      const s = fx.state()
      const m = tf.tensor1d([1, 0, 1], "bool")
      m.dispose()
      return { run: () => resetWhere(fx.spec, s, m), given: [s] }
    },
  },
  ...badStates.flatMap(([name, state, tag, path]): Case<RowsFx>[] => [
    {
      name: `resetWhere, a state with ${name}`,
      tag,
      path,
      call: (fx) => {
        const s = state(fx)
        return { run: () => resetWhere(fx.spec, s as never, [true, false, true]), given: [s] }
      },
    },
    {
      name: `selectRows, a state with ${name}`,
      tag,
      path,
      call: (fx) => {
        const s = state(fx)
        return { run: () => selectRows(fx.spec, s as never, [0]), given: [s] }
      },
    },
  ]),
  ...(
    [
      ["null", null, null],
      ["a number", 1, 1],
      ["an Int32Array", Int32Array.of(0), Int32Array.of(0)],
      ["empty", [], []],
      ["row 3 of 3", [0, 3], 3],
      ["row -1", [-1], -1],
      ["row 0.5", [0.5], 0.5],
      ['row "0"', ["0"], "0"],
      ["row NaN", [Number.NaN], Number.NaN],
      ["row Infinity", [Number.POSITIVE_INFINITY], Number.POSITIVE_INFINITY],
      ["row undefined", [0, undefined], undefined],
    ] as const
  ).map(([name, rows, actual]): Case<RowsFx> => ({
    name: `selectRows, rows that are ${name}`,
    tag: "RowIndexError",
    path: "",
    actual,
    call: (fx) => {
      const s = fx.state()
      return { run: () => selectRows(fx.spec, s, rows as never), given: [s] }
    },
  })),
  ...(
    [
      ["null", () => null],
      ["an unresolved spec (rnn.spec)", () => [{ shape: ["batch", 2], dtype: "float32" }]],
      ["a string", () => "spec"],
    ] as const
  ).flatMap(([name, spec]): Case<RowsFx>[] => [
    {
      name: `resetWhere, a spec that is ${name}`,
      tag: "SpecError",
      path: "",
      actual: spec(),
      call: (fx) => {
        const s = fx.state()
        return { run: () => resetWhere(spec() as never, s, [true, false, true]), given: [s] }
      },
    },
    {
      name: `selectRows, a spec that is ${name}`,
      tag: "SpecError",
      path: "",
      actual: spec(),
      call: (fx) => {
        const s = fx.state()
        return { run: () => selectRows(spec() as never, s, [0]), given: [s] }
      },
    },
  ]),
]

refusals("resetWhere and selectRows refuse", rowsFixture, async () => null, rowsCases)

// ---------------------------------------------------------------------------------------------
// Nouns that return a plain value throw a typed error: tfjsBackend, cellLayout, specFromCells.

const throwing = (
  name: string,
  run: () => unknown,
  tag: Tag,
  path: string,
  actual?: unknown,
): Case<null> => ({
  name,
  tag,
  path,
  throws: true,
  ...(actual === undefined ? {} : { actual }),
  call: () => ({ run, given: [] }),
})

/** A GRU cell whose state size was replaced (as a broken custom cell would report it). */
const oddCell = (stateSize: unknown): tf.layers.RNNCell => {
  const cell = tf.layers.gruCell({ units: 2 })
  ;(cell as unknown as { stateSize: unknown }).stateSize = stateSize
  return cell
}

const nounCases: Case<null>[] = [
  throwing("tfjsBackend(null)", () => tfjsBackend(null as never), "OptionError", "options", null),
  throwing("tfjsBackend(5)", () => tfjsBackend(5 as never), "OptionError", "options", 5),
  throwing('tfjsBackend("x")', () => tfjsBackend("x" as never), "OptionError", "options", "x"),
  throwing(
    "tfjsBackend({ namePrefix: 5 })",
    () => tfjsBackend({ namePrefix: 5 as never }),
    "OptionError",
    "namePrefix",
    5,
  ),
  throwing(
    "tfjsBackend({ namePrefix: null })",
    () => tfjsBackend({ namePrefix: null as never }),
    "OptionError",
    "namePrefix",
    null,
  ),
  ...(
    [
      ["null", () => null, ""],
      ["42", () => 42, ""],
      ["a plain object", () => ({}), ""],
      ["an empty list", () => [], ""],
      ["a list holding null", () => [tf.layers.lstmCell({ units: 2 }), null], "[1]"],
      ["a dense layer", () => tf.layers.dense({ units: 2 }), ""],
      ["a cell with state size 0", () => oddCell(0), ""],
      ["a cell with state size 1.5", () => oddCell(1.5), ""],
      ["a cell with state sizes [4, -1]", () => oddCell([4, -1]), "[1]"],
      ["a cell with state sizes []", () => oddCell([]), ""],
    ] as const
  ).flatMap(([name, source, path]) => [
    throwing(`cellLayout(${name})`, () => cellLayout(source() as never), "SpecError", path),
    throwing(`specFromCells(${name})`, () => specFromCells(source() as never), "SpecError", path),
  ]),
  ...(
    [
      ["dtype float64", { dtype: "float64" }, "dtype", "float64"],
      ["dtype int64 (no tfjs tensors)", { dtype: "int64" }, "dtype", "int64"],
      ["dtype 5", { dtype: 5 }, "dtype", 5],
      ["options null", null, "options", null],
      ["options 1", 1, "options", 1],
    ] as const
  ).flatMap(([name, options, path, actual]) => [
    throwing(
      `cellLayout with ${name}`,
      () => cellLayout(tf.layers.gruCell({ units: 2 }), options as never),
      "OptionError",
      path,
      actual,
    ),
    throwing(
      `specFromCells with ${name}`,
      () => specFromCells(tf.layers.gruCell({ units: 2 }), options as never),
      "OptionError",
      path,
      actual,
    ),
  ]),
]

refusals(
  "nouns throw a typed error",
  () => null,
  async () => null,
  nounCases,
)

// ---------------------------------------------------------------------------------------------
// toTfjsStates / fromTfjsStates

const layoutCases: Case<null>[] = (() => {
  const layout = () =>
    cellLayout([tf.layers.lstmCell({ units: 4 }), tf.layers.gruCell({ units: 3 })])
  const tree = [["h0", "c0"], "h1"]
  const cases: [string, () => unknown, Tag, string][] = [
    ["toTfjsStates with a null layout", () => toTfjsStates(null as never, tree), "SpecError", ""],
    [
      "toTfjsStates with a layout whose tfjsOrder repeats an index",
      () => toTfjsStates({ spec: layout().spec, tfjsOrder: [0, 0, 1] }, tree),
      "SpecError",
      "",
    ],
    [
      "toTfjsStates with a layout whose tfjsOrder is short",
      () => toTfjsStates({ spec: layout().spec, tfjsOrder: [0, 1] }, tree),
      "SpecError",
      "",
    ],
    [
      "toTfjsStates with a null state",
      () => toTfjsStates(layout(), null as never),
      "StructureMismatchError",
      "",
    ],
    [
      "toTfjsStates with a layer missing",
      () => toTfjsStates(layout(), [["h0", "c0"]]),
      "StructureMismatchError",
      "",
    ],
    [
      "toTfjsStates with [h, c] where h is expected",
      () =>
        toTfjsStates(layout(), [
          ["h0", "c0"],
          ["h1", "c1"],
        ]),
      "StructureMismatchError",
      "[1]",
    ],
    [
      "toTfjsStates with a flat list of the right length",
      () => toTfjsStates(layout(), ["h0", "c0", "h1"]),
      "StructureMismatchError",
      "",
    ],
    [
      "fromTfjsStates with null",
      () => fromTfjsStates(layout(), null as never),
      "StructureMismatchError",
      "",
    ],
    [
      "fromTfjsStates with 2 of 3 states",
      () => fromTfjsStates(layout(), ["a", "b"]),
      "StructureMismatchError",
      "",
    ],
    [
      "fromTfjsStates with a layout of no spec",
      () => fromTfjsStates({ tfjsOrder: [0] } as never, ["a"]),
      "SpecError",
      "",
    ],
  ]
  return cases.map(([name, run, tag, path]) => ({
    name,
    tag,
    path,
    call: () => ({ run, given: [] }),
  }))
})()

refusals(
  "toTfjsStates and fromTfjsStates refuse",
  () => null,
  async () => null,
  layoutCases,
)

// ---------------------------------------------------------------------------------------------
// createStatefulRnn

const createCases: Case<null>[] = (
  [
    ["null", () => null, "", null],
    ["a plain object", () => ({}), "", {}],
    ["a dense layer", () => tf.layers.dense({ units: 2 }), "", undefined],
    ["a cell (not a layer)", () => tf.layers.lstmCell({ units: 2 }), "", undefined],
    [
      "a bidirectional layer",
      () =>
        tf.layers.bidirectional({
          layer: tf.layers.lstm({ units: 2, returnState: true }) as tf.RNN,
        }),
      "",
      undefined,
    ],
    [
      "an RNN without returnState",
      () => tf.layers.rnn({ cell: tf.layers.gruCell({ units: 2 }) }),
      "returnState",
      false,
    ],
    [
      "a stateful RNN",
      () =>
        tf.layers.rnn({ cell: tf.layers.gruCell({ units: 2 }), returnState: true, stateful: true }),
      "stateful",
      true,
    ],
    [
      "an RNN whose cell has no usable state size",
      () => {
        const rnn = tf.layers.rnn({ cell: tf.layers.gruCell({ units: 2 }), returnState: true })
        ;(rnn.cell as unknown as { stateSize: unknown }).stateSize = -3
        return rnn
      },
      "",
      -3,
    ],
  ] as const
).map(([name, layer, path, actual]) => ({
  name: `createStatefulRnn(${name})`,
  tag: "SpecError",
  path,
  ...(actual === undefined ? {} : { actual }),
  call: () => {
    const l = layer()
    return { run: () => createStatefulRnn(l as never), given: [] }
  },
}))

refusals(
  "createStatefulRnn refuses",
  () => null,
  async () => null,
  createCases,
)

// ---------------------------------------------------------------------------------------------
// StatefulRnn.run / apply / applyStreams

interface RnnFx {
  readonly rnn: StatefulRnn
  readonly saver: StateSaver<tf.Variable, tf.Tensor>
  readonly store: StateStore<tf.Variable, tf.Tensor>
  /** Valid inputs for `rows` rows. */
  readonly x: (rows: number) => tf.Tensor
}

async function rnnFixture(): Promise<RnnFx> {
  const rnn = orThrow(createStatefulRnn(lstm([4, 3])))
  const backend = tfjsBackend()
  const saver = orThrow(createStateSaver({ spec: rnn.spec, backend, batchSize: 2 }))
  const store = orThrow(createStateStore({ spec: rnn.spec, backend, initialSlots: 2 }))
  const x = (rows: number) => randomInputs([rows, 3, 2], rows)
  // Build the layer and give the state non-init values.
  const x2 = x(2)
  tf.dispose([orThrow(rnn.apply(x2, saver)), orThrow(rnn.applyStreams(x2, store, ["a", "b"]))])
  x2.dispose()
  return { rnn, saver, store, x }
}

const rnnFingerprint = async (fx: RnnFx) => ({
  saver: await bytes(fx.saver),
  batchSize: fx.saver.batchSize,
  store: await storeBytes(fx.store),
  weights: weights([fx.rnn.layer]),
})

const badInputs: [string, () => unknown, Tag, unknown][] = [
  ["null", () => null, "StructureMismatchError", null],
  ["a Float32Array", () => new Float32Array(12), "StructureMismatchError", new Float32Array(12)],
  [
    "a disposed tensor",
    () => {
      const t = tf.zeros([2, 3, 2])
      t.dispose()
      return t
    },
    "StructureMismatchError",
    undefined,
  ],
  ["rank 2", () => tf.zeros([2, 2]), "ShapeMismatchError", [2, 2]],
  [
    "5 features for a layer built for 2",
    () => tf.zeros([2, 3, 5]),
    "ShapeMismatchError",
    [2, 3, 5],
  ],
  ["zero time steps", () => tf.zeros([2, 0, 2]), "ShapeMismatchError", [2, 0, 2]],
  ["int32", () => tf.zeros([2, 3, 2], "int32"), "DTypeMismatchError", "int32"],
]

const runStates: [string, (fx: RnnFx) => unknown, Tag, string][] = [
  ["null", () => null, "StructureMismatchError", ""],
  ["one layer", () => [[tf.zeros([2, 4]), tf.zeros([2, 4])]], "StructureMismatchError", ""],
  [
    "the layers flat",
    () => [tf.zeros([2, 4]), tf.zeros([2, 4]), tf.zeros([2, 3]), tf.zeros([2, 3])],
    "StructureMismatchError",
    "",
  ],
  [
    "3 rows for 2 input rows",
    () => [
      [tf.zeros([3, 4]), tf.zeros([3, 4])],
      [tf.zeros([3, 3]), tf.zeros([3, 3])],
    ],
    "BatchSizeMismatchError",
    "[0][0]",
  ],
  [
    "the layers' widths swapped",
    () => [
      [tf.zeros([2, 3]), tf.zeros([2, 3])],
      [tf.zeros([2, 4]), tf.zeros([2, 4])],
    ],
    "ShapeMismatchError",
    "[0][0]",
  ],
  [
    "an int32 leaf",
    () => [
      [tf.zeros([2, 4]), tf.zeros([2, 4], "int32")],
      [tf.zeros([2, 3]), tf.zeros([2, 3])],
    ],
    "DTypeMismatchError",
    "[0][1]",
  ],
  [
    "a disposed leaf",
    () => {
      const c = tf.zeros([2, 3])
      c.dispose()
      return [
        [tf.zeros([2, 4]), tf.zeros([2, 4])],
        [tf.zeros([2, 3]), c],
      ]
    },
    "StructureMismatchError",
    "[1][1]",
  ],
  [
    "a host tensor leaf",
    () => [
      [hostTensor("float32", [2, 4]), tf.zeros([2, 4])],
      [tf.zeros([2, 3]), tf.zeros([2, 3])],
    ],
    "StructureMismatchError",
    "[0][0]",
  ],
]

const badRunOptions: [string, unknown, string][] = [
  ["null", null, "options"],
  ["a string", "train", "options"],
  ['training: "yes"', { training: "yes" }, "training"],
  ["training: 1", { training: 1 }, "training"],
]

const saverCopy = (fx: RnnFx) => fx.saver.state() as StateTree<tf.Tensor>

const rnnCases: Case<RnnFx>[] = [
  ...badInputs.flatMap(([name, inputs, tag, actual]): Case<RnnFx>[] => {
    const a = actual === undefined ? {} : { actual }
    return [
      {
        name: `run, inputs that are ${name}`,
        tag,
        path: "inputs",
        ...a,
        call: (fx) => {
          const x = inputs()
          return { run: () => fx.rnn.run(x as never, saverCopy(fx)), given: [x] }
        },
      },
      {
        name: `apply, inputs that are ${name}`,
        tag,
        path: "inputs",
        ...a,
        call: (fx) => {
          const x = inputs()
          return { run: () => fx.rnn.apply(x as never, fx.saver), given: [x] }
        },
      },
      {
        name: `applyStreams, inputs that are ${name}`,
        tag,
        path: "inputs",
        ...a,
        call: (fx) => {
          const x = inputs()
          return { run: () => fx.rnn.applyStreams(x as never, fx.store, ["a", "c"]), given: [x] }
        },
      },
    ]
  }),
  ...runStates.map(([name, state, tag, path]): Case<RnnFx> => ({
    name: `run, a state that is ${name}`,
    tag,
    path,
    call: (fx) => {
      const x = fx.x(2)
      const s = state(fx)
      return { run: () => fx.rnn.run(x, s as never), given: [x, s] }
    },
  })),
  ...badRunOptions.flatMap(([name, options, path]): Case<RnnFx>[] => [
    {
      name: `run, options that are ${name}`,
      tag: "OptionError",
      path,
      call: (fx) => {
        const x = fx.x(2)
        return { run: () => fx.rnn.run(x, saverCopy(fx), options as never), given: [x] }
      },
    },
    {
      name: `apply, options that are ${name}`,
      tag: "OptionError",
      path,
      call: (fx) => {
        const x = fx.x(2)
        return { run: () => fx.rnn.apply(x, fx.saver, options as never), given: [x] }
      },
    },
    {
      name: `applyStreams, options that are ${name}`,
      tag: "OptionError",
      path,
      call: (fx) => {
        const x = fx.x(1)
        return { run: () => fx.rnn.applyStreams(x, fx.store, ["c"], options as never), given: [x] }
      },
    },
  ]),
  {
    name: "apply, 3 input rows for a saver of 2",
    tag: "BatchSizeMismatchError",
    path: "inputs",
    actual: 3,
    call: (fx) => {
      const x = fx.x(3)
      return { run: () => fx.rnn.apply(x, fx.saver), given: [x] }
    },
  },
  ...(
    [
      ["null", null],
      ["a plain object", {}],
      ["a store", "store"],
    ] as const
  ).map(([name, saver]): Case<RnnFx> => ({
    name: `apply, a saver that is ${name}`,
    tag: "OptionError",
    path: "saver",
    call: (fx) => {
      const x = fx.x(2)
      const s = saver === "store" ? fx.store : saver
      return { run: () => fx.rnn.apply(x, s as never), given: [x] }
    },
  })),
  {
    name: "apply, a saver of a GRU stack's spec",
    tag: "SpecError",
    path: "[0]",
    call: (fx) => {
      const x = fx.x(2)
      const other = orThrow(
        createStateSaver({ spec: gruSpec([4, 3]), backend: tfjsBackend(), batchSize: 2 }),
      )
      return { run: () => fx.rnn.apply(x, other), given: [x] }
    },
  },
  {
    name: "apply, a saver with the layer's spec on the host backend",
    tag: "StructureMismatchError",
    path: "[0][0]",
    call: (fx) => {
      const x = fx.x(2)
      const host = orThrow(
        createStateSaver({ spec: fx.rnn.spec, backend: hostBackend(), batchSize: 2 }),
      )
      return { run: () => fx.rnn.apply(x, host as never), given: [x] }
    },
  },
  {
    name: "apply, a disposed saver",
    tag: "DisposedError",
    path: "",
    call: (fx) => {
      const x = fx.x(2)
      const gone = orThrow(
        createStateSaver({ spec: fx.rnn.spec, backend: tfjsBackend(), batchSize: 2 }),
      )
      gone.dispose()
      return { run: () => fx.rnn.apply(x, gone), given: [x] }
    },
  },
  ...(
    [
      ["null", () => null, "KeyError", "", 1],
      ["a string", () => "a", "KeyError", "", 1],
      ["a duplicate", () => ["a", "a"], "KeyError", "", 2],
      ["a new duplicate", () => ["z", "z"], "KeyError", "", 2],
      ["an object", () => [{}], "KeyError", "", 1],
      ["NaN", () => [Number.NaN], "KeyError", "", 1],
      ["one key for two rows", () => ["a"], "BatchSizeMismatchError", "inputs", 2],
    ] as const
  ).map(([name, keys, tag, path, rows]): Case<RnnFx> => ({
    name: `applyStreams, keys that are ${name}`,
    tag,
    path,
    call: (fx) => {
      const x = fx.x(rows)
      const k = keys()
      return { run: () => fx.rnn.applyStreams(x, fx.store, k as never), given: [x] }
    },
  })),
  ...(
    [
      ["null", () => null],
      ["a saver", (fx: RnnFx) => fx.saver],
    ] as const
  ).map(([name, store]): Case<RnnFx> => ({
    name: `applyStreams, a store that is ${name}`,
    tag: "OptionError",
    path: "store",
    call: (fx) => {
      const x = fx.x(1)
      const s = store(fx)
      return { run: () => fx.rnn.applyStreams(x, s as never, ["c"]), given: [x] }
    },
  })),
  {
    name: "applyStreams, a store of another spec",
    tag: "SpecError",
    path: "[1][0]",
    call: (fx) => {
      const x = fx.x(1)
      const spec = [
        [
          { shape: ["batch", 4], dtype: "float32" },
          { shape: ["batch", 4], dtype: "float32" },
        ],
        [
          { shape: ["batch", 5], dtype: "float32" },
          { shape: ["batch", 5], dtype: "float32" },
        ],
      ] as const
      const other = orThrow(createStateStore({ spec: spec as never, backend: tfjsBackend() }))
      return { run: () => fx.rnn.applyStreams(x, other, ["c"]), given: [x] }
    },
  },
  {
    name: "applyStreams, a disposed store",
    tag: "DisposedError",
    path: "",
    call: (fx) => {
      const x = fx.x(1)
      const gone = orThrow(createStateStore({ spec: fx.rnn.spec, backend: tfjsBackend() }))
      gone.dispose()
      return { run: () => fx.rnn.applyStreams(x, gone, ["c"]), given: [x] }
    },
  },
]

refusals("StatefulRnn.run, apply and applyStreams refuse", rnnFixture, rnnFingerprint, rnnCases)

// ---------------------------------------------------------------------------------------------
// createTbpttTrainer options

interface TrainFx {
  readonly m: Model
  readonly optimizer: tf.Optimizer
  readonly options: () => TbpttOptions
  readonly trainer: TbpttTrainer
  readonly batch: (rows: number, time?: number) => { inputs: tf.Tensor; targets: tf.Tensor }
}

function trainFixture(): TrainFx {
  const m = makeModel("lstm", [4, 3], 1, 2)
  const optimizer = tf.train.sgd(0.1)
  const options = (): TbpttOptions => ({
    saver: m.saver,
    optimizer,
    windowSize: 2,
    step: m.mseStep,
  })
  const trainer = orThrow(createTbpttTrainer(options()))
  const batch = (rows: number, time = 4) => ({
    inputs: randomInputs([rows, time, 2], rows + time),
    targets: tf.ones([rows, time, 1]),
  })
  const first = batch(2)
  orThrow(trainer.trainBatch(first))
  tf.dispose([first.inputs, first.targets])
  return { m, optimizer, options, trainer, batch }
}

const trainFingerprint = async (fx: TrainFx) => ({
  saver: await bytes(fx.m.saver),
  batchSize: fx.m.saver.batchSize,
  weights: weights([fx.m.rnn.layer, fx.m.head]),
  batches: fx.trainer.batches,
})

const badOptions: [string, (fx: TrainFx) => unknown, Tag, string][] = [
  ["null", () => null, "OptionError", "options"],
  ["no saver", (fx) => ({ ...fx.options(), saver: undefined }), "OptionError", "saver"],
  ["a plain object as the saver", (fx) => ({ ...fx.options(), saver: {} }), "OptionError", "saver"],
  [
    "a saver on the host backend",
    (fx) => ({
      ...fx.options(),
      saver: orThrow(
        createStateSaver({ spec: fx.m.rnn.spec, backend: hostBackend(), batchSize: 2 }),
      ),
    }),
    "OptionError",
    "saver",
  ],
  [
    "a disposed saver",
    (fx) => {
      const s = orThrow(
        createStateSaver({ spec: fx.m.rnn.spec, backend: tfjsBackend(), batchSize: 2 }),
      )
      s.dispose()
      return { ...fx.options(), saver: s }
    },
    "DisposedError",
    "",
  ],
  ["an optimizer {}", (fx) => ({ ...fx.options(), optimizer: {} }), "OptionError", "optimizer"],
  ["no step", (fx) => ({ ...fx.options(), step: undefined }), "OptionError", "step"],
  ["a step 5", (fx) => ({ ...fx.options(), step: 5 }), "OptionError", "step"],
  ...([0, -1, 1.5, "4", Number.NaN, Number.POSITIVE_INFINITY, undefined] as const).map(
    (w): [string, (fx: TrainFx) => unknown, Tag, string] => [
      `windowSize ${String(w)}`,
      (fx) => ({ ...fx.options(), windowSize: w }),
      "OptionError",
      "windowSize",
    ],
  ),
  ...([0, -1, 1.5, "1", null] as const).map(
    (a): [string, (fx: TrainFx) => unknown, Tag, string] => [
      `timeAxis ${String(a)}`,
      (fx) => ({ ...fx.options(), timeAxis: a }),
      "OptionError",
      "timeAxis",
    ],
  ),
  ["varList a string", (fx) => ({ ...fx.options(), varList: "all" }), "OptionError", "varList"],
  [
    "varList holding a plain tensor",
    (fx) => ({ ...fx.options(), varList: [tf.zeros([1])] }),
    "OptionError",
    "varList",
  ],
  [
    "varList holding a state variable (not trainable)",
    (fx) => ({ ...fx.options(), varList: [(fx.m.saver.state() as tf.Variable[][])[0]?.[0]] }),
    "OptionError",
    "varList",
  ],
  ["onWindow 42", (fx) => ({ ...fx.options(), onWindow: 42 }), "OptionError", "onWindow"],
  ...(["yes", 1, null] as const).map((v): [string, (fx: TrainFx) => unknown, Tag, string] => [
    `resetEveryWindow ${String(v)}`,
    (fx) => ({ ...fx.options(), resetEveryWindow: v }),
    "OptionError",
    "resetEveryWindow",
  ]),
]

const trainOptionCases: Case<TrainFx>[] = badOptions.map(([name, options, tag, path]) => ({
  name: `createTbpttTrainer, ${name}`,
  tag,
  path,
  call: (fx) => {
    const o = options(fx)
    return { run: () => createTbpttTrainer(o as never), given: [] }
  },
}))

// ---------------------------------------------------------------------------------------------
// TbpttTrainer.trainBatch: bad batches, and steps that fail in the first window

const batchCase = (
  name: string,
  tag: Tag,
  path: string,
  make: (fx: TrainFx) => unknown,
  actual?: unknown,
): Case<TrainFx> => ({
  name: `trainBatch, ${name}`,
  tag,
  path,
  ...(actual === undefined ? {} : { actual }),
  call: (fx) => {
    const b = make(fx)
    return { run: () => fx.trainer.trainBatch(b as never), given: [b] }
  },
})

const stepCase = (
  name: string,
  tag: Tag,
  path: string,
  step: (fx: TrainFx) => TbpttOptions["step"],
  rows = 2,
): Case<TrainFx> => ({
  name: `trainBatch, ${name}`,
  tag,
  path,
  call: (fx) => {
    const trainer = orThrow(createTbpttTrainer({ ...fx.options(), step: step(fx) }))
    const b = fx.batch(rows)
    return { run: () => trainer.trainBatch(b), given: [b] }
  },
})

const trainBatchCases: Case<TrainFx>[] = [
  batchCase("a null batch", "StructureMismatchError", "batch", () => null, null),
  batchCase("a batch without inputs", "StructureMismatchError", "inputs", (fx) => ({
    targets: fx.batch(2).targets,
  })),
  batchCase("inputs that are an array", "StructureMismatchError", "inputs", (fx) => ({
    ...fx.batch(2),
    inputs: [[[1, 2]]],
  })),
  batchCase("disposed targets", "StructureMismatchError", "targets", (fx) => {
    const b = fx.batch(2)
    b.targets.dispose()
    return b
  }),
  batchCase("inputs of rank 1", "ShapeMismatchError", "inputs", (fx) => ({
    ...fx.batch(2),
    inputs: tf.zeros([2]),
  })),
  batchCase("inputs of zero time steps", "ShapeMismatchError", "inputs", (fx) => fx.batch(2, 0)),
  batchCase("inputs of zero rows", "ShapeMismatchError", "inputs", (fx) => fx.batch(0)),
  batchCase(
    "targets of 3 rows for 2",
    "BatchSizeMismatchError",
    "targets",
    (fx) => ({ ...fx.batch(2), targets: tf.ones([3, 4, 1]) }),
    3,
  ),
  batchCase("targets of 3 steps for 4", "ShapeMismatchError", "targets", (fx) => ({
    ...fx.batch(2),
    targets: tf.ones([2, 3, 1]),
  })),
  batchCase("targets of rank 1", "ShapeMismatchError", "targets", (fx) => ({
    ...fx.batch(2),
    targets: tf.ones([2]),
  })),
  ...(
    [
      ["null", () => null, null],
      ["[true]", () => [true], [true]],
      ["[2, 0]", () => [2, 0], 2],
      ["a tensor of 3", () => tf.tensor1d([1, 0, 0], "bool"), [3]],
      ['"all"', () => "all", "all"],
    ] as const
  ).map(([name, starts, actual]) =>
    batchCase(
      `starts ${name}`,
      "RowIndexError",
      "",
      (fx) => ({ ...fx.batch(2), starts: starts() }),
      actual,
    ),
  ),
  batchCase("3 rows whose starts mask has 2 entries", "RowIndexError", "", (fx) => ({
    ...fx.batch(3),
    starts: [true, false],
  })),
  // [batch, time] starts (fixture batches: 2 rows, 4 steps, windows of 2)
  ...(
    [
      [
        "a row of 3 steps for 4",
        () => [
          [0, 0, 0, 0],
          [0, 0, 0],
        ],
        [0, 0, 0],
      ],
      [
        "a 2 among its entries",
        () => [
          [0, 0, 2, 0],
          [0, 0, 0, 0],
        ],
        2,
      ],
      [
        'a "1" among its entries',
        () => [
          [0, 0, "1", 0],
          [0, 0, 0, 0],
        ],
        "1",
      ],
      [
        "3 rows for 2",
        () => [
          [0, 0, 0, 0],
          [0, 0, 0, 0],
          [0, 0, 0, 0],
        ],
        undefined,
      ],
      ["a row that is a number", () => [[0, 0, 0, 0], 1], 1],
      ["a [2, 3] tensor", () => tf.zeros([2, 3], "bool"), [2, 3]],
      [
        "a [2, 4] string tensor",
        () =>
          tf.tensor([
            ["a", "b", "c", "d"],
            ["a", "b", "c", "d"],
          ]),
        "string",
      ],
    ] as const
  ).map(([name, starts, actual]) =>
    batchCase(
      `starts (per time step) ${name}`,
      "RowIndexError",
      "",
      (fx) => ({ ...fx.batch(2), starts: starts() }),
      actual,
    ),
  ),
  batchCase("starts (per time step) a disposed [2, 4] tensor", "RowIndexError", "", (fx) => {
    const m = tf.zeros([2, 4], "bool")
    m.dispose()
    return { ...fx.batch(2), starts: m }
  }),
  // [batch, windows] windowStarts: 2 windows
  ...(
    [
      ["[[1], [0]] (1 window for 2)", () => [[1], [0]], [1]],
      ["one row", () => [[1, 0]], undefined],
      ['"all"', () => "all", "all"],
      ["[true, false] (a row mask)", () => [true, false], undefined],
      ["a [2] tensor", () => tf.tensor1d([1, 0], "bool"), [2]],
      [
        "an entry -1",
        () => [
          [0, -1],
          [0, 0],
        ],
        -1,
      ],
    ] as const
  ).map(([name, windowStarts, actual]) =>
    batchCase(
      `windowStarts ${name}`,
      "RowIndexError",
      "",
      (fx) => ({ ...fx.batch(2), windowStarts: windowStarts() }),
      actual,
    ),
  ),
  // rows: which held rows (2) the batch's rows continue
  ...(
    [
      ["[0] for 2 rows", 2, () => [0], [0]],
      ["[0, 2] (2 rows held)", 2, () => [0, 2], 2],
      ["[0, -1]", 2, () => [0, -1], -1],
      ["[0.5, 1]", 2, () => [0.5, 1], 0.5],
      ['"first"', 2, () => "first", "first"],
      ["[] for 1 row", 1, () => [], []],
      ["[0, 1] for 3 rows", 3, () => [0, 1], [0, 1]],
    ] as const
  ).map(([name, n, rows, actual]) =>
    batchCase(
      `rows ${name}`,
      "RowIndexError",
      "",
      (fx) => ({ ...fx.batch(n), rows: rows() }),
      actual,
    ),
  ),
  stepCase("a step returning {}", "OptionError", "step", () => () => ({}) as never),
  stepCase("a step returning null", "OptionError", "step", () => () => null as never),
  stepCase("a step returning a [2] loss", "ShapeMismatchError", "loss", (fx) => (w) => {
    const out = fx.m.mseStep(w)
    return { loss: tf.ones([2]) as never, state: out.state }
  }),
  stepCase("a step returning a state 5 wide", "ShapeMismatchError", "[0][0]", (fx) => (w) => ({
    loss: fx.m.mseStep(w).loss,
    state: [
      [tf.zeros([2, 5]), tf.zeros([2, 4])],
      [tf.zeros([2, 3]), tf.zeros([2, 3])],
    ],
  })),
  stepCase(
    "a step returning a state of 2 rows for a batch of 3 (no resize happens)",
    "BatchSizeMismatchError",
    "[0][0]",
    (fx) => (w) => ({
      loss: fx.m.mseStep(w).loss,
      state: [
        [tf.zeros([2, 4]), tf.zeros([2, 4])],
        [tf.zeros([2, 3]), tf.zeros([2, 3])],
      ],
    }),
    3,
  ),
  stepCase("a step that throws an Error", "BackendError", "", () => () => {
    throw new Error("boom")
  }),
  stepCase("a step that throws a StateError", "SpecError", "x", () => () => {
    throw new SpecError({ path: "x", expected: "y", actual: "z" })
  }),
  stepCase(
    "a step that throws in a batch of 1 row (no resize happens)",
    "BackendError",
    "",
    () => () => {
      throw new Error("boom")
    },
    1,
  ),
]

// ---------------------------------------------------------------------------------------------
// TbpttTrainer.evaluate and evaluateTbptt: bad options and batches; the training state, weights
// and batch count stay as they were.

const evalCase = (
  name: string,
  tag: Tag,
  path: string,
  call: Case<TrainFx>["call"],
  actual?: unknown,
): Case<TrainFx> => ({ name, tag, path, ...(actual === undefined ? {} : { actual }), call })

const evalOptions = (fx: TrainFx) => ({
  saver: orThrow(createStateSaver({ spec: fx.m.rnn.spec, backend: tfjsBackend(), batchSize: 2 })),
  step: fx.m.mseStep,
  windowSize: 2,
})

/** A case on one good batch, made before the call (its tensors are the caller's). */
const onBatch =
  (run: (fx: TrainFx, b: TbpttBatch) => unknown): Case<TrainFx>["call"] =>
  (fx) => {
    const b = fx.batch(2)
    return { run: () => run(fx, b), given: [b] }
  }

/** A case on `evaluateTbptt` options, made before the call. */
const withOptions =
  (
    change: (o: ReturnType<typeof evalOptions>) => unknown,
    batches: (fx: TrainFx) => unknown = () => [],
  ): Case<TrainFx>["call"] =>
  (fx) => {
    const o = change(evalOptions(fx))
    const data = batches(fx)
    return { run: () => evaluateTbptt(o as never, data as never), given: [data] }
  }

const evaluateCases: Case<TrainFx>[] = [
  evalCase(
    "evaluate, options 5",
    "OptionError",
    "options",
    onBatch((fx, b) => fx.trainer.evaluate([b], 5 as never)),
    5,
  ),
  evalCase(
    "evaluate, the trainer's own saver",
    "OptionError",
    "saver",
    onBatch((fx, b) => fx.trainer.evaluate([b], { saver: fx.m.saver })),
  ),
  evalCase(
    "evaluate, a saver {}",
    "OptionError",
    "saver",
    onBatch((fx, b) => fx.trainer.evaluate([b], { saver: {} as never })),
  ),
  evalCase(
    'evaluate, crossEntropy "yes"',
    "OptionError",
    "crossEntropy",
    onBatch((fx, b) => fx.trainer.evaluate([b], { crossEntropy: "yes" as never })),
    "yes",
  ),
  evalCase(
    "evaluate, batches 5",
    "OptionError",
    "batches",
    (fx) => ({ run: () => fx.trainer.evaluate(5 as never), given: [] }),
    5,
  ),
  evalCase(
    "evaluate, a second batch with a bad starts mask",
    "RowIndexError",
    "",
    (fx) => {
      const good = fx.batch(2)
      const bad = {
        ...fx.batch(2),
        starts: [
          [0, 0, 9, 0],
          [0, 0, 0, 0],
        ],
      }
      return { run: () => fx.trainer.evaluate([good, bad]), given: [good, bad] }
    },
    9,
  ),
  evalCase("evaluate, a step that throws", "BackendError", "", (fx) => {
    const trainer = orThrow(
      createTbpttTrainer({
        ...fx.options(),
        step: () => {
          throw new Error("boom")
        },
      }),
    )
    const b = fx.batch(2)
    return { run: () => trainer.evaluate([b]), given: [b] }
  }),
  evalCase("evaluate, an iterable that throws after one batch", "BackendError", "", (fx) => {
    const b = fx.batch(2)
    const data = (function* () {
      yield b
      throw new Error("no more data")
    })()
    return { run: () => fx.trainer.evaluate(data), given: [b] }
  }),
  evalCase("evaluateTbptt, options null", "OptionError", "options", () => ({
    run: () => evaluateTbptt(null as never, []),
    given: [],
  })),
  evalCase(
    "evaluateTbptt, no saver",
    "OptionError",
    "saver",
    withOptions((o) => ({ ...o, saver: undefined })),
  ),
  evalCase(
    "evaluateTbptt, a disposed saver",
    "DisposedError",
    "",
    withOptions((o) => {
      o.saver.dispose()
      return o
    }),
  ),
  evalCase(
    "evaluateTbptt, windowSize 0",
    "OptionError",
    "windowSize",
    withOptions((o) => ({ ...o, windowSize: 0 })),
    0,
  ),
  evalCase(
    "evaluateTbptt, timeAxis 0",
    "OptionError",
    "timeAxis",
    withOptions((o) => ({ ...o, timeAxis: 0 })),
    0,
  ),
  evalCase(
    "evaluateTbptt, step 1",
    "OptionError",
    "step",
    withOptions((o) => ({ ...o, step: 1 })),
    1,
  ),
  evalCase(
    "evaluateTbptt, resetEveryWindow 0",
    "OptionError",
    "resetEveryWindow",
    withOptions((o) => ({ ...o, resetEveryWindow: 0 })),
    0,
  ),
  evalCase(
    "evaluateTbptt, crossEntropy 1",
    "OptionError",
    "crossEntropy",
    withOptions((o) => ({ ...o, crossEntropy: 1 })),
    1,
  ),
  evalCase(
    "evaluateTbptt, batches null",
    "OptionError",
    "batches",
    withOptions(
      (o) => o,
      () => null,
    ),
    null,
  ),
  evalCase(
    "evaluateTbptt, targets of 3 rows for 2",
    "BatchSizeMismatchError",
    "targets",
    withOptions(
      (o) => o,
      (fx) => [{ ...fx.batch(2), targets: tf.ones([3, 4, 1]) }],
    ),
    3,
  ),
  evalCase(
    "evaluateTbptt, rows [0, 7]",
    "RowIndexError",
    "",
    withOptions(
      (o) => o,
      (fx) => [{ ...fx.batch(2), rows: [0, 7] }],
    ),
    7,
  ),
]

refusals("createTbpttTrainer, trainBatch and evaluate refuse", trainFixture, trainFingerprint, [
  ...trainOptionCases,
  ...trainBatchCases,
  ...evaluateCases,
])

describe("the barrage", () => {
  it("covers at least 200 bad calls", () => {
    const n =
      rowsCases.length +
      nounCases.length +
      layoutCases.length +
      createCases.length +
      rnnCases.length +
      trainOptionCases.length +
      trainBatchCases.length +
      evaluateCases.length
    expect(n).toBeGreaterThanOrEqual(200)
  })
})
