import { describe, expectTypeOf, test } from "vitest"
import {
  type AnyStateError,
  type BackendError,
  type DisposedError,
  type HostTensor,
  type OptionError,
  type Result,
  type RowIndexError,
  type StateSaver,
  type StateStore,
  createStateSaver,
  createStateStore,
  hostBackend,
  lstmSpec,
} from "../src/index.js"

// Type-level tests: checked by `pnpm typecheck` (tsc over src and test), run as no-ops by vitest.
describe("error unions narrow", () => {
  test("reset returns exactly the errors it can produce, and switch narrows them", () => {
    const saver = {} as StateSaver<HostTensor>
    type ResetLeft = Extract<ReturnType<StateSaver<HostTensor>["reset"]>, { _tag: "Left" }>["left"]
    expectTypeOf<ResetLeft>().toEqualTypeOf<DisposedError | RowIndexError | BackendError>()
    const r = saver.reset?.([0])
    if (r !== undefined && r._tag === "Left") {
      const e = r.left
      switch (e._tag) {
        case "RowIndexError":
          expectTypeOf(e).toEqualTypeOf<RowIndexError>()
          break
        case "DisposedError":
          expectTypeOf(e).toEqualTypeOf<DisposedError>()
          break
        default:
          expectTypeOf(e).toEqualTypeOf<BackendError>()
      }
    }
  })

  test("createStateSaver can fail with an OptionError, and save cannot", () => {
    const created = createStateSaver({ spec: lstmSpec([4]), backend: hostBackend(), batchSize: 2 })
    expectTypeOf(created).not.toBeAny()
    type CreateLeft = Extract<typeof created, { _tag: "Left" }>["left"]
    expectTypeOf<OptionError>().toExtend<CreateLeft>()
    type SaveLeft = Extract<ReturnType<StateSaver<HostTensor>["save"]>, { _tag: "Left" }>["left"]
    expectTypeOf<OptionError>().not.toExtend<SaveLeft>()
    expectTypeOf<SaveLeft>().toExtend<AnyStateError>()
  })

  test("Result defaults to the union of every error, so a _tag switch narrows", () => {
    const r = {} as Result<number>
    if (r._tag === "Left" && r.left._tag === "KeyError") {
      expectTypeOf(r.left._tag).toEqualTypeOf<"KeyError">()
    }
  })

  test("store calls carry unions too", () => {
    const store = createStateStore({ spec: lstmSpec([4]), backend: hostBackend() })
    expectTypeOf(store).not.toBeAny()
    type GatherLeft = Extract<
      ReturnType<StateStore<HostTensor>["gather"]>,
      { _tag: "Left" }
    >["left"]
    expectTypeOf<GatherLeft>().toExtend<AnyStateError>()
    expectTypeOf<RowIndexError>().not.toExtend<GatherLeft>()
  })
})
