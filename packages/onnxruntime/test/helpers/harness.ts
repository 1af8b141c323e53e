// Runs a stateful model three ways: through StatefulSession, and by a hand-written loop that
// feeds state outputs back as inputs (the reference).
import type * as common from "onnxruntime-common"
import { expect } from "vitest"
import type { OrtTensor, StatefulSession } from "../../src/index.js"
import { type F32, concatAxis, sliceAxis } from "./host.js"

export interface Runtime {
  readonly Tensor: typeof common.Tensor
  readonly InferenceSession: {
    create(
      bytes: Uint8Array,
      options?: common.InferenceSession.SessionOptions,
    ): Promise<common.InferenceSession>
  }
}

/** How a model's main input and output carry time and batch. */
export interface ModelCase {
  readonly name: string
  readonly bytes: Uint8Array
  readonly input: string
  /** Dims of the whole input sequence for `steps` steps and `batch` rows. */
  readonly inputDims: (steps: number, batch: number) => number[]
  readonly timeAxis: number
  readonly batchAxis: number
  readonly output: string
  /** One run per step: the input is fed without its time axis; the output gains one at 0. */
  readonly stepwise: boolean
}

export const toF32 = (t: OrtTensor): F32 => ({
  dims: [...t.dims],
  data: (t.data as Float32Array).slice(),
})
export const tensor = (ort: Runtime, x: F32): OrtTensor =>
  new ort.Tensor("float32", x.data.slice(), x.dims)

/** Feeds `x[start:end]` along time through `run`, concatenating the main output along time. */
async function windowed(
  c: ModelCase,
  x: F32,
  start: number,
  end: number,
  run: (feed: F32) => Promise<F32>,
): Promise<F32> {
  if (!c.stepwise) return run(sliceAxis(x, c.timeAxis, start, end))
  const outs: F32[] = []
  for (let t = start; t < end; t++) {
    const step = sliceAxis(x, c.timeAxis, t, t + 1)
    const y = await run({ dims: step.dims.filter((_, a) => a !== c.timeAxis), data: step.data })
    outs.push({ dims: [1, ...y.dims], data: y.data })
  }
  return concatAxis(outs, 0)
}

/** The output's time axis (0 for stepwise cases, whose outputs gain it). */
export const outputTimeAxis = (c: ModelCase): number => (c.stepwise ? 0 : c.timeAxis)

/** Runs steps [start, end) through a StatefulSession. */
export function statefulWindow(
  ort: Runtime,
  c: ModelCase,
  s: StatefulSession,
  x: F32,
  start: number,
  end: number,
): Promise<F32> {
  return windowed(c, x, start, end, async (feed) => {
    const r = await s.run({ [c.input]: tensor(ort, feed) })
    if (r._tag === "Left") throw r.left
    const y = toF32(r.right[c.output] as OrtTensor)
    for (const t of Object.values(r.right)) t.dispose()
    return y
  })
}

/** Runs steps [start, end) by hand: state fed as inputs, state outputs fed back. Mutates `state`. */
export function handWindow(
  ort: Runtime,
  c: ModelCase,
  session: common.InferenceSession,
  pairs: readonly { input: string; output: string }[],
  state: Map<string, F32>,
  x: F32,
  start: number,
  end: number,
): Promise<F32> {
  return windowed(c, x, start, end, async (feed) => {
    const feeds: Record<string, OrtTensor> = { [c.input]: tensor(ort, feed) }
    for (const { input } of pairs) feeds[input] = tensor(ort, state.get(input) as F32)
    const out = (await session.run(feeds)) as Record<string, OrtTensor>
    for (const { input, output } of pairs) state.set(input, toF32(out[output] as OrtTensor))
    return toF32(out[c.output] as OrtTensor)
  })
}

/** The session's current state as host arrays, by input name. */
export function stateOf(s: StatefulSession): Map<string, F32> {
  return new Map(Object.entries(s.state()).map(([k, t]) => [k, toF32(t)]))
}

/** The batch axis of each state input. */
export function batchAxes(s: StatefulSession): Map<string, number> {
  return new Map(s.saver.spec.leaves.map((l) => [String(l.path[0]), l.batchAxis]))
}

export function expectStateClose(
  actual: Map<string, F32>,
  expected: Map<string, F32>,
  tol: number,
  expectFn = expect,
): void {
  expectFn([...actual.keys()].sort()).toEqual([...expected.keys()].sort())
  for (const [k, v] of expected) {
    const a = actual.get(k) as F32
    expectFn(a.dims, k).toEqual(v.dims)
    const worst = v.data.reduce((m, e, i) => Math.max(m, Math.abs(e - (a.data[i] as number))), 0)
    expectFn(worst, `state ${k}`).toBeLessThanOrEqual(tol)
  }
}
