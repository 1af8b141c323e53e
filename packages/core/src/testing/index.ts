export { describeBackendConformance } from "./conformance.js"
export type { ConformanceOptions } from "./harness.js"
export { referenceGather, valuesFor } from "./fixtures.js"
export { mulberry32 } from "./random.js"
