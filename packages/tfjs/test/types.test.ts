// Result types name the errors a call can return, so `switch (e._tag)` narrows. The expectTypeOf
// assertions are checked by the type checker (`tsc -p packages/tfjs/tsconfig.json`); the runtime
// part feeds real errors through the same switch.
import * as tf from "@tensorflow/tfjs"
import type {
  AnyStateError,
  BackendError,
  BatchSizeMismatchError,
  DTypeMismatchError,
  OptionError,
  ShapeMismatchError,
  StructureMismatchError,
} from "@statesaver/core"
import { orThrow } from "@statesaver/core"
import { beforeAll, describe, expect, expectTypeOf, it } from "vitest"
import {
  type ApplyError,
  type ApplyStreamsError,
  type CellLayoutError,
  type CreateStatefulRnnError,
  type CreateTbpttTrainerError,
  type RowOpError,
  type RunError,
  type StatefulRnn,
  type TfjsStatesError,
  type TrainBatchError,
  createStatefulRnn,
} from "../src/index.js"
import { useBackend } from "./setup.js"

beforeAll(() => useBackend("cpu"))

type LeftOf<R> = R extends { readonly _tag: "Left"; readonly left: infer L } ? L : never
/** True when every member of the union has a literal `_tag` (a plain `string` would not narrow). */
type Narrows<E extends { readonly _tag: string }> = string extends E["_tag"] ? false : true

/** Names what to fix, one branch per error `run` can return; `never` once all are handled. */
function advice(e: RunError): string {
  switch (e._tag) {
    case "StructureMismatchError":
      expectTypeOf(e).toEqualTypeOf<StructureMismatchError>()
      return `pass a tf.Tensor at ${e.path}`
    case "ShapeMismatchError":
      expectTypeOf(e).toEqualTypeOf<ShapeMismatchError>()
      return `reshape ${e.path}`
    case "DTypeMismatchError":
      expectTypeOf(e).toEqualTypeOf<DTypeMismatchError>()
      return `cast ${e.path}`
    case "BatchSizeMismatchError":
      expectTypeOf(e).toEqualTypeOf<BatchSizeMismatchError>()
      return `resize ${e.path} (axis ${String(e.axis)})`
    case "OptionError":
      expectTypeOf(e).toEqualTypeOf<OptionError>()
      return `fix option ${e.path}`
    case "BackendError":
      expectTypeOf(e).toEqualTypeOf<BackendError>()
      return `the layer failed in ${e.operation}`
    default:
      expectTypeOf(e).toEqualTypeOf<never>()
      return e
  }
}

describe("result types carry the union of their errors", () => {
  it("run's Left is exactly RunError, and a switch on _tag narrows each member", () => {
    expectTypeOf<LeftOf<ReturnType<StatefulRnn["run"]>>>().toEqualTypeOf<RunError>()
    expectTypeOf<RunError["_tag"]>().toEqualTypeOf<
      | "StructureMismatchError"
      | "ShapeMismatchError"
      | "DTypeMismatchError"
      | "BatchSizeMismatchError"
      | "OptionError"
      | "BackendError"
    >()
    const rnn = orThrow(
      createStatefulRnn(
        tf.layers.rnn({ cell: [tf.layers.gruCell({ units: 2 })], returnState: true }) as tf.RNN,
      ),
    )
    const state = [tf.zeros([3, 2])]
    const cases: [tf.Tensor, unknown, string][] = [
      [tf.zeros([3, 4]), undefined, "reshape inputs"],
      [tf.zeros([3, 4, 1], "int32"), undefined, "cast inputs"],
      [tf.zeros([2, 4, 1]), undefined, "resize [0] (axis 0)"],
      [tf.zeros([3, 4, 1]), { training: 1 }, "fix option training"],
    ]
    for (const [x, options, expected] of cases) {
      const r = rnn.run(x, state, options as never)
      expect(r._tag).toBe("Left")
      if (r._tag === "Left") expect(advice(r.left)).toBe(expected)
    }
    const bad = rnn.run(tf.zeros([3, 4, 1]), [null as never])
    expect(bad._tag === "Left" && advice(bad.left)).toBe("pass a tf.Tensor at [0]")
  })

  it("every other public result names only tagged errors", () => {
    expectTypeOf<
      LeftOf<ReturnType<typeof createStatefulRnn>>
    >().toEqualTypeOf<CreateStatefulRnnError>()
    expectTypeOf<Narrows<CreateStatefulRnnError>>().toEqualTypeOf<true>()
    expectTypeOf<Narrows<ApplyError>>().toEqualTypeOf<true>()
    expectTypeOf<Narrows<ApplyStreamsError>>().toEqualTypeOf<true>()
    expectTypeOf<Narrows<RowOpError>>().toEqualTypeOf<true>()
    expectTypeOf<Narrows<CellLayoutError>>().toEqualTypeOf<true>()
    expectTypeOf<Narrows<TfjsStatesError>>().toEqualTypeOf<true>()
    expectTypeOf<Narrows<CreateTbpttTrainerError>>().toEqualTypeOf<true>()
    expectTypeOf<Narrows<TrainBatchError>>().toEqualTypeOf<true>()
    expectTypeOf<TrainBatchError>().toEqualTypeOf<AnyStateError>()
    expectTypeOf<CellLayoutError["_tag"]>().toEqualTypeOf<"SpecError" | "OptionError">()
    expectTypeOf<ApplyError["_tag"]>().toEqualTypeOf<
      RunError["_tag"] | "DisposedError" | "SpecError" | "AliasedLeafError"
    >()
  })
})
