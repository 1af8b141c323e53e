// Runs every vitest project and ends with the line CI reads: `N passed, N failed[, N skipped]`.
import { spawnSync } from "node:child_process"
import { mkdirSync, readFileSync, rmSync } from "node:fs"
import { join } from "node:path"

const outDir = join(process.cwd(), ".tmp")
mkdirSync(outDir, { recursive: true })
const report = join(outDir, "vitest-report.json")
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
  { stdio: "inherit", env: { ...process.env, ORT_DISABLE_TELEMETRY: "1" } },
)

let passed = 0
let failed = 0
let skipped = 0
try {
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
}
if (run.status !== 0 && failed === 0) failed = 1
console.log(`\n${passed} passed, ${failed} failed, ${skipped} skipped`)
process.exit(failed > 0 || run.status !== 0 ? 1 : 0)
