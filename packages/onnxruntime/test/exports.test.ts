// The package's public runtime surface, pinned: adding or removing an export is a decision.
import { expect, it } from "vitest"
import * as pkg from "../src/index.js"

it("exports exactly these runtime names", () => {
  expect(Object.keys(pkg).sort()).toEqual([
    "AbortedError",
    "conventionalInput",
    "createStatefulSession",
    "createStreamBatcher",
    "createStreamingSession",
    "ortBackend",
    "pairStateNames",
    "sessionStateSpec",
    "sileroContext",
    "stateOutputLocations",
    "tensorData",
    "tensorScalar",
  ])
})

it("exports functions only (types are type-only exports)", () => {
  for (const [name, value] of Object.entries(pkg)) expect(typeof value, name).toBe("function")
})
