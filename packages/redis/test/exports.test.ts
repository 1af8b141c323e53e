// The package's public runtime surface, pinned: adding or removing an export is a decision.
import { expect, it } from "vitest"
import * as pkg from "../src/index.js"

it("exports exactly these runtime names", () => {
  expect(Object.keys(pkg).sort()).toEqual([
    "FlushError",
    "LeaseError",
    "createRedisTier",
    "streamPath",
  ])
})
