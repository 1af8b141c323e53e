import { existsSync } from "node:fs"

/**
 * True when `path` exists. Otherwise prints a loud notice naming what is skipped and why, and
 * throws when running in CI (`CI=true`), where a missing system package is a setup error.
 */
export function requireSystemPath(path: string, pkg: string, what: string): boolean {
  if (existsSync(path)) return true
  const line = "!".repeat(78)
  const message = `SKIPPED: ${what}: ${path} is missing (install the Debian package ${pkg})`
  console.error(`\n${line}\n${message}\n${line}\n`)
  if (process.env["CI"] === "true") throw new Error(message)
  return false
}
