// Packaging checks on every published package: publint --strict and attw on the packed tarball.
import { spawnSync } from "node:child_process"
import { publishedPackages } from "./workspace.mjs"

let failed = 0
for (const { path, manifest } of publishedPackages()) {
  /** @type {[string, string[]][]} */
  const checks = [
    ["publint", ["--strict"]],
    ["attw", ["--pack", ".", "--profile", "esm-only"]],
  ]
  for (const [cmd, args] of checks) {
    const r = spawnSync("pnpm", ["exec", cmd, ...args], { stdio: "inherit", cwd: path })
    console.log(`${cmd} ${manifest.name}: ${r.status === 0 ? "ok" : "FAILED"}`)
    if (r.status !== 0) failed++
  }
}
process.exit(failed > 0 ? 1 : 0)
