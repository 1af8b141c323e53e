// The bundle budget: a minimal createStateSaver browser program, bundled with esbuild
// (minified ESM), stays within scripts/bundle-budget.json, and fp-ts's share stays small.
import { execFileSync } from "node:child_process"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { beforeAll, describe, expect, it } from "vitest"
import {
  type BundleReport,
  formatReport,
  measureBundle,
  packageOf,
} from "../scripts/bundle-size.mjs"

describe("bundle size of a minimal createStateSaver program (esbuild, browser, minified)", () => {
  let report: BundleReport
  beforeAll(async () => {
    report = await measureBundle()
    console.log(formatReport(report))
  })

  it("stays within the total budget", () => {
    expect(report.totalBytes, formatReport(report)).toBeLessThanOrEqual(report.budget.totalBytes)
  })

  it("takes at most the budgeted bytes from fp-ts", () => {
    expect(report.fpTsBytes, formatReport(report)).toBeLessThanOrEqual(report.budget.fpTsBytes)
  })

  it("measures a program that runs: save, reset, select and snapshot happen in the bundle", () => {
    const dir = mkdtempSync(join(tmpdir(), "statesaver-bundle-"))
    try {
      const file = join(dir, "bundle.mjs")
      writeFileSync(file, report.code)
      const out = JSON.parse(execFileSync("node", [file], { encoding: "utf8" }))
      // select([3, 1, null]) after reset([1]): row 3's values, a reset row, a fresh row.
      expect(out).toEqual({
        batchSize: 3,
        h: [3, 3, 3, 0, 0, 0, 0, 0, 0],
        c: [13, 13, 13, 0, 0, 0, 0, 0, 0],
        snapshotBytes: expect.any(Number),
      })
      expect(out.snapshotBytes).toBeGreaterThan(8)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})

describe("bundle-size measurement", () => {
  it("attributes files under pnpm's store and workspace packages to their package", () => {
    expect(packageOf("node_modules/.pnpm/fp-ts@2.16.11/node_modules/fp-ts/lib/Either.js")).toBe(
      "fp-ts",
    )
    expect(packageOf("node_modules/@scope/pkg/index.js")).toBe("@scope/pkg")
    expect(packageOf("packages/core/dist/state-saver.js")).toBe("@statesaver/core")
  })

  it("sees fp-ts's CommonJS Either when a program imports it", async () => {
    const r = await measureBundle({
      contents: `import { right } from "fp-ts/lib/Either.js"\nconsole.log(right(1))\n`,
    })
    expect(r.fpTsBytes).toBeGreaterThan(r.budget.fpTsBytes)
    expect(r.fpTsBytes).toBe(r.byPackage["fp-ts"])
  })
})
