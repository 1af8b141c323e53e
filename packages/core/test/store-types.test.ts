import { describe, expectTypeOf, test } from "vitest"
import type {
  AliasedLeafError,
  BackendError,
  BatchSizeMismatchError,
  BusyError,
  DTypeMismatchError,
  DisposedError,
  HostTensor,
  KeyError,
  OptionError,
  ShapeMismatchError,
  SnapshotFormatError,
  SpecError,
  StateStore,
  StructureMismatchError,
} from "../src/index.js"
import type { createStateStore } from "../src/state-store.js"

// Type-level tests: checked by `tsc` over src and test, run as no-ops by vitest.
type S = StateStore<HostTensor>
type LeftOf<R> =
  Awaited<R> extends infer A ? (A extends { _tag: "Left"; left: infer L } ? L : never) : never

describe("StateStore results name exactly the errors each call can return", () => {
  test("createStateStore", () => {
    expectTypeOf<LeftOf<ReturnType<typeof createStateStore>>>().toEqualTypeOf<
      OptionError | SpecError | DTypeMismatchError | BackendError
    >()
  })

  test("gather: keys, the clock, an eviction refused, the backend", () => {
    expectTypeOf<LeftOf<ReturnType<S["gather"]>>>().toEqualTypeOf<
      DisposedError | KeyError | OptionError | BusyError | BackendError
    >()
  })

  test("scatter: keys, the clock and every check of the tree; never a BusyError", () => {
    expectTypeOf<LeftOf<ReturnType<S["scatter"]>>>().toEqualTypeOf<
      | DisposedError
      | KeyError
      | OptionError
      | StructureMismatchError
      | AliasedLeafError
      | DTypeMismatchError
      | ShapeMismatchError
      | BatchSizeMismatchError
      | BackendError
    >()
  })

  test("reset touches no backend; snapshot refuses bad metadata as the format would", () => {
    expectTypeOf<LeftOf<ReturnType<S["reset"]>>>().toEqualTypeOf<DisposedError | KeyError>()
    expectTypeOf<LeftOf<ReturnType<S["snapshot"]>>>().toEqualTypeOf<
      DisposedError | KeyError | BackendError | SnapshotFormatError
    >()
  })

  test("restore", () => {
    expectTypeOf<LeftOf<ReturnType<S["restore"]>>>().toEqualTypeOf<
      | DisposedError
      | KeyError
      | OptionError
      | BusyError
      | SnapshotFormatError
      | SpecError
      | DTypeMismatchError
      | ShapeMismatchError
      | BatchSizeMismatchError
      | BackendError
    >()
  })

  test("a switch on _tag narrows", () => {
    const r = {} as ReturnType<S["gather"]>
    if (r._tag === "Left") {
      const e = r.left
      switch (e._tag) {
        case "KeyError":
          expectTypeOf(e).toEqualTypeOf<KeyError>()
          break
        case "BusyError":
          expectTypeOf(e).toEqualTypeOf<BusyError>()
          break
        case "OptionError":
          expectTypeOf(e).toEqualTypeOf<OptionError>()
          break
        case "DisposedError":
          expectTypeOf(e).toEqualTypeOf<DisposedError>()
          break
        default:
          expectTypeOf(e).toEqualTypeOf<BackendError>()
      }
    }
  })
})
