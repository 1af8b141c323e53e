import { readFileSync } from "node:fs"
import { describe, expect, it } from "vitest"
import * as api from "../src/index.js"

describe("public surface of @statesaver/tfjs", () => {
  it("exports exactly these runtime names", () => {
    expect(Object.keys(api).sort()).toEqual([
      "cellLayout",
      "createStatefulRnn",
      "createTbpttTrainer",
      "evaluateTbptt",
      "fromTfjsStates",
      "resetWhere",
      "selectRows",
      "specFromCells",
      "statefulRnn",
      "tfjsBackend",
      "toTfjsStates",
    ])
  })

  it("keeps statefulRnn as a deprecated alias of createStatefulRnn", () => {
    expect(api.statefulRnn).toBe(api.createStatefulRnn)
  })

  it("publishes only the package root: src/internal is not reachable through exports", () => {
    const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as {
      exports: Record<string, unknown>
    }
    expect(Object.keys(pkg.exports).sort()).toEqual([".", "./package.json"])
  })
})
