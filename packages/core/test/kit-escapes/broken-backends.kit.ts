/*
 * The conformance kit run on the host backend and on each broken variant of it (variants.ts).
 * kit-escapes.test.ts runs this file in a child vitest and checks that the kit fails each
 * variant, in the test that names the broken rule.
 */
import { describeBackendConformance } from "../../src/testing/index.js"
import { VARIANTS, broken } from "./variants.js"

for (const variant of VARIANTS) {
  describeBackendConformance({
    name: variant,
    backend: () => broken(variant),
    liveTensors: (backend) => backend.liveTensors(),
    iterations: 50,
  })
}
