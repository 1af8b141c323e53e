// Results carry the union of errors a call can return, so `switch (e._tag)` narrows.
import type {
  AliasedLeafError,
  BackendError,
  BatchSizeMismatchError,
  BusyError,
  DTypeMismatchError,
  DisposedError,
  KeyError,
  OptionError,
  ShapeMismatchError,
  StructureMismatchError,
} from "@statesaver/core"
import { describe, expectTypeOf, it } from "vitest"
import type {
  OrtTensor,
  SessionSaver,
  SessionStore,
  StatefulRunError,
  StatefulSession,
  StreamingRunError,
  StreamingSession,
  createStatefulSession,
} from "../src/index.js"

type LeftOf<R> = [R] extends [Promise<infer P>]
  ? LeftOf<P>
  : R extends { _tag: "Left"; left: infer L }
    ? L
    : never

describe("error unions of the session calls", () => {
  it("StatefulSession.run returns exactly StatefulRunError, and a switch on _tag narrows it", () => {
    expectTypeOf<LeftOf<ReturnType<StatefulSession["run"]>>>().toEqualTypeOf<StatefulRunError>()
    expectTypeOf<StatefulRunError>().toEqualTypeOf<
      | BusyError
      | DisposedError
      | OptionError
      | StructureMismatchError
      | ShapeMismatchError
      | DTypeMismatchError
      | BatchSizeMismatchError
      | AliasedLeafError
      | BackendError
    >()
    const describeError = (e: StatefulRunError): string => {
      switch (e._tag) {
        case "BusyError":
          expectTypeOf(e).toEqualTypeOf<BusyError>()
          return e.operation
        case "BackendError":
          expectTypeOf(e).toEqualTypeOf<BackendError>()
          return e.backend
        case "BatchSizeMismatchError":
          expectTypeOf(e).toEqualTypeOf<BatchSizeMismatchError>()
          return String(e.axis)
        case "AliasedLeafError":
          return e.otherPath
        case "DisposedError":
          return e.what
        case "OptionError":
        case "StructureMismatchError":
        case "ShapeMismatchError":
        case "DTypeMismatchError":
          return e.path
        default:
          expectTypeOf(e).toBeNever()
          return e
      }
    }
    expectTypeOf(describeError).returns.toBeString()
  })

  it("StreamingSession.run adds KeyError; its delete returns BusyError, DisposedError or KeyError; sweep BusyError or DisposedError, else a count", () => {
    expectTypeOf<LeftOf<ReturnType<StreamingSession["run"]>>>().toEqualTypeOf<StreamingRunError>()
    expectTypeOf<
      LeftOf<ReturnType<StreamingSession["runBatch"]>>
    >().toEqualTypeOf<StreamingRunError>()
    // runBatch hands back the outputs named by `outputs`, batched.
    expectTypeOf<
      Extract<
        Awaited<ReturnType<StreamingSession<"logits">["runBatch"]>>,
        { _tag: "Right" }
      >["right"]
    >().toEqualTypeOf<Record<"logits", OrtTensor>>()
    expectTypeOf<KeyError>().toExtend<StreamingRunError>()
    expectTypeOf<KeyError>().not.toExtend<StatefulRunError>()
    expectTypeOf<LeftOf<ReturnType<StreamingSession["delete"]>>>().toEqualTypeOf<
      BusyError | DisposedError | KeyError
    >()
    expectTypeOf<LeftOf<ReturnType<StreamingSession["sweep"]>>>().toEqualTypeOf<
      BusyError | DisposedError
    >()
    expectTypeOf<
      Extract<ReturnType<StreamingSession["sweep"]>, { _tag: "Right" }>["right"]
    >().toEqualTypeOf<number>()
  })

  it("the guarded saver and store add BusyError to every Either they return", () => {
    expectTypeOf<BusyError>().toExtend<LeftOf<ReturnType<SessionSaver["reset"]>>>()
    expectTypeOf<BusyError>().toExtend<LeftOf<ReturnType<SessionSaver["snapshot"]>>>()
    expectTypeOf<BusyError>().toExtend<LeftOf<ReturnType<SessionStore["gather"]>>>()
    expectTypeOf<BusyError>().toExtend<LeftOf<ReturnType<StatefulSession["reset"]>>>()
    expectTypeOf<SessionSaver["state"]>().returns.not.toBeAny()
    expectTypeOf<SessionStore["delete"]>().returns.toBeBoolean()
    expectTypeOf<ReturnType<SessionSaver["leaves"]>>().toEqualTypeOf<readonly OrtTensor[]>()
  })

  it("createStatefulSession returns an Either whose Left is a union of tagged errors", () => {
    type L = LeftOf<ReturnType<typeof createStatefulSession>>
    expectTypeOf<OptionError>().toExtend<L>()
    expectTypeOf<L["_tag"]>().toEqualTypeOf<
      | "OptionError"
      | "StructureMismatchError"
      | "SpecError"
      | "DTypeMismatchError"
      | "ShapeMismatchError"
      | "BackendError"
    >()
  })
})
