// Stands in for a browser test project when Chromium is missing: says so loudly, fails in CI.
import { describe, expect, it } from "vitest"

const project = process.env["STATESAVER_BROWSER_PROJECT"] ?? "browser"
const reason = process.env["STATESAVER_NO_BROWSER"] ?? "no browser"
const line = "!".repeat(78)
console.warn(
  `\n${line}\n!! ${project}: every WebGL/WebGPU test was SKIPPED: ${reason}.\n!! Install Debian's chromium (apt-get install -y chromium) to run them.\n${line}\n`,
)

describe(`${project} (headless Chromium)`, () => {
  if (process.env["CI"] === "true") {
    it("runs in headless Chromium (required when CI=true)", () => {
      expect.fail(`${project} cannot run: ${reason}`)
    })
  } else {
    it.skip(`skipped: ${reason}`, () => undefined)
  }
})
