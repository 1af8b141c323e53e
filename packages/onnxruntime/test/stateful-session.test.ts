import { type HostTensor, init, orThrow } from "@statesaver/core"
import * as ortNode from "onnxruntime-node"
import * as ortWeb from "onnxruntime-web"
import { describe, expect, it } from "vitest"
import {
  type OrtBackend,
  type StatefulSession,
  createStatefulSession,
  ortBackend,
} from "../src/index.js"
import {
  type ModelCase,
  type Runtime,
  batchAxes,
  expectStateClose,
  handWindow,
  outputTimeAxis,
  stateOf,
  statefulWindow,
  tensor,
  toF32,
} from "./helpers/harness.js"
import { type F32, concatAxis, expectClose, gatherAxis, inputs } from "./helpers/host.js"
import { gru, kvDecoder, lstm2, rnnCell } from "./helpers/models.js"

ortWeb.env.wasm.numThreads = 1

const B = 4
const T = 9
const TOL = 2e-5

const cases: ModelCase[] = [
  {
    name: "2-layer LSTM (time-major, state batch axis 1)",
    bytes: lstm2(3, 8),
    input: "X",
    inputDims: (t, b) => [t, b, 3],
    timeAxis: 0,
    batchAxis: 1,
    output: "Y",
    stepwise: false,
  },
  {
    name: "GRU (hidden_in / hidden_out)",
    bytes: gru(3, 6),
    input: "X",
    inputDims: (t, b) => [t, b, 3],
    timeAxis: 0,
    batchAxis: 1,
    output: "Y",
    stepwise: false,
  },
  {
    name: "plain RNN cell (h / new_h, batch axis 0, one step per run)",
    bytes: rnnCell(3, 5),
    input: "x",
    inputDims: (t, b) => [t, b, 3],
    timeAxis: 0,
    batchAxis: 1,
    output: "y",
    stepwise: true,
  },
  {
    name: "toy decoder with a KV cache growing along past_sequence_length",
    bytes: kvDecoder(4),
    input: "x",
    inputDims: (t, b) => [b, t, 4],
    timeAxis: 1,
    batchAxis: 0,
    output: "logits",
    stepwise: false,
  },
]

const runtimes: [string, Runtime][] = [
  ["onnxruntime-web (wasm)", ortWeb as unknown as Runtime],
  ["onnxruntime-node", ortNode as unknown as Runtime],
]

async function open(ort: Runtime, c: ModelCase, batchSize = B) {
  const session = await ort.InferenceSession.create(c.bytes)
  const backend = ortBackend({ ort })
  const stateful = orThrow(createStatefulSession({ session, backend, batchSize }))
  return { session, backend, stateful }
}

/** Zero state of a session's spec at its current sizes. */
function zeros(s: StatefulSession): Map<string, F32> {
  return new Map(
    [...stateOf(s)].map(([k, v]) => [k, { dims: v.dims, data: new Float32Array(v.data.length) }]),
  )
}

for (const [runtimeName, ort] of runtimes) {
  for (const c of cases) {
    // onnxruntime-node runs the LSTM case; the other models run on web wasm only to keep the suite short.
    if (runtimeName === "onnxruntime-node" && !c.name.startsWith("2-layer LSTM")) continue
    describe(`${c.name} on ${runtimeName}`, () => {
      it("chunked runs equal one whole run and the hand-written loop, outputs and final state", async () => {
        const x = inputs(c.inputDims(T, B), 1)
        const whole = await open(ort, c)
        const hand = zeros(whole.stateful)
        const yWhole = await statefulWindow(ort, c, whole.stateful, x, 0, T)
        const chunked = await open(ort, c)
        const parts: F32[] = []
        for (const [a, b] of [
          [0, 3],
          [3, 4],
          [4, T],
        ] as const)
          parts.push(await statefulWindow(ort, c, chunked.stateful, x, a, b))
        const yChunked = concatAxis(parts, outputTimeAxis(c))
        const yHand = await handWindow(ort, c, whole.session, whole.stateful.pairs, hand, x, 0, T)
        expectClose(yChunked, yWhole, TOL, "chunked vs whole")
        expectClose(yWhole, yHand, TOL, "whole vs hand-written loop")
        expectStateClose(stateOf(chunked.stateful), stateOf(whole.stateful), TOL)
        expectStateClose(stateOf(whole.stateful), hand, TOL)
        if (c.name.startsWith("toy decoder"))
          expect(chunked.stateful.dims()).toEqual({ past_sequence_length: T })
        for (const s of [whole, chunked]) {
          s.stateful.dispose()
          expect(s.backend.liveTensors()).toBe(0)
        }
      })

      it("reset(row) between runs makes that row start from init; other rows carry on", async () => {
        const x = inputs(c.inputDims(T, B), 2)
        const { session, stateful } = await open(ort, c)
        await statefulWindow(ort, c, stateful, x, 0, 5)
        const before = stateOf(stateful)
        orThrow(stateful.reset([1]))
        const axes = batchAxes(stateful)
        const expectedState = new Map(
          [...before].map(([k, v]) => [k, gatherAxis(v, axes.get(k) as number, [0, null, 2, 3])]),
        )
        expectStateClose(stateOf(stateful), expectedState, 0)
        const y = await statefulWindow(ort, c, stateful, x, 5, T)
        const yRef = await handWindow(ort, c, session, stateful.pairs, expectedState, x, 5, T)
        expectClose(y, yRef, TOL)
        expectStateClose(stateOf(stateful), expectedState, TOL)
        stateful.dispose()
      })

      it("select reorders, duplicates and drops rows (beam reorder), null starts a fresh row", async () => {
        const x = inputs(c.inputDims(T, B), 3)
        const { session, stateful } = await open(ort, c)
        await statefulWindow(ort, c, stateful, x, 0, 4)
        const before = stateOf(stateful)
        const rows = [2, 0, 0, null, 3]
        orThrow(stateful.select(rows))
        expect(stateful.batchSize).toBe(5)
        const axes = batchAxes(stateful)
        const expectedState = new Map(
          [...before].map(([k, v]) => [k, gatherAxis(v, axes.get(k) as number, rows)]),
        )
        // The new batch's inputs: the selected rows' own continuations, and row 1's for the fresh row.
        const x2 = gatherAxis(x, c.batchAxis, [2, 0, 0, 1, 3])
        const y = await statefulWindow(ort, c, stateful, x2, 4, T)
        const yRef = await handWindow(ort, c, session, stateful.pairs, expectedState, x2, 4, T)
        expectClose(y, yRef, TOL)
        expectStateClose(stateOf(stateful), expectedState, TOL)
        orThrow(stateful.select([4, 1]))
        expect(stateful.batchSize).toBe(2)
        stateful.dispose()
      })
    })
  }
}

describe("StatefulSession on onnxruntime-web (wasm)", () => {
  const ort = ortWeb as unknown as Runtime
  const lstm = cases[0] as ModelCase
  const cell = cases[2] as ModelCase

  it("pairs Y_h.L/Y_c.L with initial_h.L/initial_c.L and derives [1, batch, H] leaves with batch axis 1", async () => {
    const { stateful } = await open(ort, lstm)
    expect(stateful.pairs).toEqual([
      { input: "initial_h.0", output: "Y_h.0" },
      { input: "initial_c.0", output: "Y_c.0" },
      { input: "initial_h.1", output: "Y_h.1" },
      { input: "initial_c.1", output: "Y_c.1" },
    ])
    for (const leaf of stateful.saver.spec.leaves) {
      expect(leaf.spec.shape).toEqual([1, "batch", 8])
      expect(leaf.batchAxis).toBe(1)
      expect(leaf.dtype).toBe("float32")
    }
    const h = stateful.state()["initial_h.0"]
    expect(h?.dims).toEqual([1, B, 8])
    expect(h?.type).toBe("float32")
    stateful.dispose()
  })

  it("a KV cache starts with zero length along its growing dim and grows with each run", async () => {
    const kv = cases[3] as ModelCase
    const { stateful } = await open(ort, kv, 2)
    expect(stateful.state()["past_key_values.0.key"]?.dims).toEqual([2, 1, 0, 4])
    expect(stateful.dims()).toEqual({ past_sequence_length: 0 })
    await statefulWindow(ort, kv, stateful, inputs([2, 3, 4], 5), 0, 3)
    expect(stateful.dims()).toEqual({ past_sequence_length: 3 })
    expect(stateful.state()["present.1.value"]).toBeUndefined()
    expect(stateful.state()["past_key_values.1.value"]?.dims).toEqual([2, 1, 3, 4])
    orThrow(stateful.reset())
    expect(stateful.dims()).toEqual({ past_sequence_length: 0 })
    stateful.dispose()
  })

  it("an explicit pair map overrides the conventions (a crossing only when asked for)", async () => {
    const session = await ort.InferenceSession.create(lstm.bytes)
    const pairs = { "Y_h.0": "initial_h.1", "Y_h.1": "initial_h.0" }
    const refused = createStatefulSession({
      session,
      backend: ortBackend({ ort }),
      batchSize: 1,
      pairs,
    })
    expect(refused).toMatchObject({
      _tag: "Left",
      left: { _tag: "StructureMismatchError", path: 'pairs["Y_h.0"]' },
    })
    const stateful = orThrow(
      createStatefulSession({
        session,
        backend: ortBackend({ ort }),
        batchSize: 1,
        pairs,
        crossedPairs: true,
      }),
    )
    expect(stateful.pairs).toContainEqual({ input: "initial_h.1", output: "Y_h.0" })
    expect(stateful.pairs).toContainEqual({ input: "initial_h.0", output: "Y_h.1" })
    expect(stateful.pairs).toHaveLength(4)
    stateful.dispose()
  })

  it("init overrides set the initial state and reset rows back to it", async () => {
    const session = await ort.InferenceSession.create(lstm.bytes)
    const backend = ortBackend({ ort })
    const stateful = orThrow(
      createStatefulSession({
        session,
        backend,
        batchSize: 2,
        init: { "initial_c.0": init.constant(0.5) },
      }),
    )
    expect(Array.from(stateful.state()["initial_c.0"]?.data as Float32Array)).toEqual(
      new Array(16).fill(0.5),
    )
    expect(Array.from(stateful.state()["initial_c.1"]?.data as Float32Array)).toEqual(
      new Array(16).fill(0),
    )
    await statefulWindow(ort, lstm, stateful, inputs([2, 2, 3], 9), 0, 2)
    orThrow(stateful.reset([1]))
    const c0 = stateful.state()["initial_c.0"]?.data as Float32Array
    expect(Array.from(c0.subarray(8))).toEqual(new Array(8).fill(0.5))
    expect(Array.from(c0.subarray(0, 8))).not.toEqual(new Array(8).fill(0.5))
    stateful.dispose()
  })

  it("run returns only the non-state outputs, and frees the replaced state exactly once", async () => {
    const { backend, stateful } = await open(ort, lstm)
    const held = Object.values(stateful.state())
    const r = orThrow(await stateful.run({ X: tensor(ort, inputs([2, B, 3], 4)) }))
    expect(Object.keys(r)).toEqual(["Y"])
    expect(r["Y"]?.dims).toEqual([2, B, 8])
    for (const t of held) expect(t.location).toBe("none")
    expect(backend.liveTensors()).toBe(4)
    stateful.dispose()
    expect(backend.liveTensors()).toBe(0)
  })

  it("a failing run returns Left(BackendError) and leaves the state unchanged", async () => {
    const { backend, stateful } = await open(ort, lstm)
    await statefulWindow(ort, lstm, stateful, inputs([3, B, 3], 6), 0, 3)
    const before = orThrow(await stateful.snapshot())
    const live = backend.liveTensors()
    const r = await stateful.run({ X: tensor(ort, inputs([3, B, 5], 6)) })
    expect(r._tag).toBe("Left")
    if (r._tag === "Left") expect(r.left._tag).toBe("BackendError")
    expect(orThrow(await stateful.snapshot())).toEqual(before)
    expect(backend.liveTensors()).toBe(live)
    stateful.dispose()
  })

  it("feeding a state input is refused with its name", async () => {
    const { stateful } = await open(ort, lstm)
    const r = await stateful.run({
      X: tensor(ort, inputs([1, B, 3], 1)),
      "initial_h.0": tensor(ort, inputs([1, B, 8], 1)),
    })
    expect(r._tag === "Left" && r.left._tag).toBe("StructureMismatchError")
    expect(r._tag === "Left" && r.left.path).toBe('["initial_h.0"]')
    stateful.dispose()
  })

  it("a second run, reset or select while a run is in flight is refused with BusyError; runs never interleave", async () => {
    const { session, stateful } = await open(ort, lstm)
    const x = inputs([4, B, 3], 8)
    const first = stateful.run({ X: tensor(ort, x) })
    expect(stateful.busy).toBe(true)
    const second = await stateful.run({ X: tensor(ort, x) })
    expect(second._tag === "Left" && second.left._tag).toBe("BusyError")
    expect(
      stateful.reset()._tag === "Left" &&
        (stateful.reset() as { left: { _tag: string } }).left._tag,
    ).toBe("BusyError")
    const sel = stateful.select([0])
    expect(sel._tag === "Left" && sel.left._tag).toBe("BusyError")
    const y = orThrow(await first)
    expect(stateful.busy).toBe(false)
    const hand = zeros(stateful)
    const yRef = await handWindow(ort, lstm, session, stateful.pairs, hand, x, 0, 4)
    expectClose(toF32(y["Y"] as never), yRef, TOL)
    expectStateClose(stateOf(stateful), hand, TOL)
    stateful.dispose()
  })

  it("live tensors stay flat over 5,000 steps with resets and selects", async () => {
    const { backend, stateful } = await open(ort, cell, 2)
    const x = tensor(ort, inputs([2, 3], 1))
    const start = backend.liveTensors()
    expect(start).toBe(1)
    for (let i = 0; i < 5000; i++) {
      const out = orThrow(await stateful.run({ x }))
      for (const t of Object.values(out)) t.dispose()
      if (i % 100 === 0) orThrow(stateful.reset([i % 2]))
      if (i % 250 === 0) orThrow(stateful.select([1, 0]))
      expect(backend.liveTensors()).toBe(start)
    }
    expect(backend.bytesCopied()).toBeGreaterThan(0)
    stateful.dispose()
    expect(backend.liveTensors()).toBe(0)
  })

  it("carrying state copies no bytes: run adopts the outputs", async () => {
    const { backend, stateful } = await open(ort, lstm)
    const x = tensor(ort, inputs([1, B, 3], 1))
    const copied = backend.bytesCopied()
    for (let i = 0; i < 20; i++)
      for (const t of Object.values(orThrow(await stateful.run({ X: x })))) t.dispose()
    expect(backend.bytesCopied()).toBe(copied)
    stateful.dispose()
  })

  it("snapshot then restore into another session round-trips the state", async () => {
    const a = await open(ort, lstm)
    const b = await open(ort, lstm)
    const x = inputs([5, B, 3], 12)
    await statefulWindow(ort, lstm, a.stateful, x, 0, 3)
    orThrow(b.stateful.restore(orThrow(await a.stateful.snapshot())))
    expectStateClose(stateOf(b.stateful), stateOf(a.stateful), 0)
    const ya = await statefulWindow(ort, lstm, a.stateful, x, 3, 5)
    const yb = await statefulWindow(ort, lstm, b.stateful, x, 3, 5)
    expectClose(yb, ya, 0)
    a.stateful.dispose()
    b.stateful.dispose()
  })

  it("the backend's own HostTensor type is not an ORT tensor", () => {
    const backend = ortBackend({ ort }) as OrtBackend
    expect(
      backend.describe({ dims: [1], type: "float32" } as unknown as HostTensor),
    ).toBeUndefined()
  })
})
