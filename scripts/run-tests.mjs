// Runs vitest projects and ends with the line CI reads: `N passed, N failed, N skipped`.
// Arguments go to vitest (e.g. `--project tfjs --project tfjs-browser`); without any, every project
// runs. Works from any folder: vitest always starts at the repository root.
import { spawnSync } from "node:child_process"
import { mkdirSync, readFileSync, rmSync } from "node:fs"
import { join } from "node:path"
import { root } from "./workspace.mjs"

const outDir = join(root, ".tmp")
mkdirSync(outDir, { recursive: true })
// One report per run: package test scripts may run at the same time (`pnpm -r test`).
const report = join(outDir, `vitest-report-${process.pid}.json`)
rmSync(report, { force: true })

const run = spawnSync(
  "pnpm",
  [
    "exec",
    "vitest",
    "run",
    "--reporter=default",
    "--reporter=json",
    `--outputFile.json=${report}`,
    ...process.argv.slice(2),
  ],
  { stdio: "inherit", cwd: root, env: { ...process.env, ORT_DISABLE_TELEMETRY: "1" } },
)

let passed = 0
let failed = 0
let skipped = 0
try {
  /** @type {{ numPassedTests: number, numFailedTests: number, numPendingTests: number, numTodoTests: number, testResults: { status: string, assertionResults: unknown[] }[] }} */
  const json = JSON.parse(readFileSync(report, "utf8"))
  passed = json.numPassedTests
  failed = json.numFailedTests
  skipped = json.numPendingTests + json.numTodoTests
  // A file that fails to load has no tests: count it as a failure so the line cannot read green.
  failed += json.testResults.filter(
    (f) => f.status === "failed" && f.assertionResults.length === 0,
  ).length
} catch (e) {
  console.error(`could not read the test report: ${e instanceof Error ? e.message : e}`)
  failed += 1
} finally {
  rmSync(report, { force: true })
}
if (run.status !== 0 && failed === 0) failed = 1
console.log(`\n${passed} passed, ${failed} failed, ${skipped} skipped`)
process.exit(failed > 0 || run.status !== 0 ? 1 : 0)
