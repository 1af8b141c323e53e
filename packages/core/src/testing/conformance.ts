import { describe } from "vitest"
import type { StateBackend } from "../backend.js"
import { defineContractTests } from "./contract.js"
import { defineFaultTests } from "./faults.js"
import { type ConformanceOptions, kitTest } from "./harness.js"
import {
  definePrimitiveTests,
  defineReorderTests,
  defineViewTests,
  defineWriteAtTests,
} from "./primitives.js"
import { defineDTypeTests, defineLoopTests, defineOwnershipTests } from "./saver.js"
import { defineStoreTests } from "./store.js"

/**
 * Registers the backend conformance suite with vitest: the primitive rules of `StateBackend`,
 * every `StateSaver` and `StateStore` operation on every declared dtype, every error path (state
 * unchanged, nothing leaked), ownership over long loops, and the model-free invariants (reset
 * row, select, snapshot round trip bit-exact). Test names are stable: pass them in `skip` to
 * skip one. Generic over the backend's tensor type `T`, what it also accepts `In`, and its own
 * type `B`, all inferred from `backend`: no call site needs a cast.
 *
 * @example
 * describeBackendConformance({
 *   name: "host",
 *   backend: () => hostBackend(),
 *   liveTensors: (backend) => backend.liveTensors(),
 * })
 * @category testing
 * @since 0.1.0
 */
export function describeBackendConformance<
  T,
  In = T,
  B extends StateBackend<T, In> = StateBackend<T, In>,
>(options: ConformanceOptions<T, In, B>): void {
  describe(`StateBackend conformance: ${options.name}`, () => {
    const test = kitTest(options)
    defineDTypeTests(test)
    defineFaultTests(test)
    defineOwnershipTests(test)
    defineStoreTests(test)
    defineLoopTests(test)
    defineContractTests(test)
    definePrimitiveTests(test)
    defineWriteAtTests(test)
    defineReorderTests(test)
    defineViewTests(test)
  })
}
