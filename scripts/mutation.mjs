// `pnpm mutation`: StrykerJS over the host backend with the conformance kit as the only suite
// (stryker.config.json; results in docs/mutation.md). Extra arguments are Stryker options, e.g.
// `pnpm mutation --concurrency 1`.
//
// StrykerJS 10's CLI refuses Node < 22 at startup, while this repository runs on Node 20.19+
// (package.json "engines"). Its programmatic API has no such
// guard, but the package's entry point imports the CLI module, whose first statement is the
// guard. So this script loads the `Stryker` class from its own module, by file (the package's
// `exports` map does not list it), and runs it on Node 20: the whole run works there.
import { createRequire } from "node:module"
import { dirname, join, relative } from "node:path"
import { pathToFileURL } from "node:url"
import { root } from "./workspace.mjs"

const core = dirname(createRequire(import.meta.url).resolve("@stryker-mutator/core/package.json"))
const { Stryker } = await import(pathToFileURL(join(core, "dist/src/stryker.js")).href)

process.chdir(root)
const args = process.argv.slice(2)
// pnpm keeps the runner out of core's own node_modules, where Stryker looks for plugins: name
// it by path.
const runner = createRequire(import.meta.url).resolve("@stryker-mutator/vitest-runner")
/** @type {{ configFile: string, plugins: string[], concurrency?: number, timeoutMS?: number, mutate?: string[] }} */
const options = { configFile: "stryker.config.json", plugins: [runner] }
for (let i = 0; i < args.length; i++) {
  const flag = args[i]
  const value = args[i + 1]
  if (flag === "--concurrency" && value !== undefined) options.concurrency = Number(args[++i])
  else if (flag === "--timeoutMS" && value !== undefined) options.timeoutMS = Number(args[++i])
  else if (flag === "--mutate" && value !== undefined) options.mutate = String(args[++i]).split(",")
  else
    throw new Error(
      `unknown option ${flag} (supported: --concurrency N, --timeoutMS N, --mutate a,b)`,
    )
}
/** @type {{ status: string, fileName: string }[]} */
const results = await new Stryker(options).runMutationTest()
// Mutants marked `// Stryker disable` (status Ignored) are reported both ways: left out of the
// score, and counted as survivors.
const score = (/** @type {typeof results} */ rs) => {
  const counted = rs.filter((r) => r.status !== "CompileError" && r.status !== "RuntimeError")
  const detected = counted.filter((r) => r.status === "Killed" || r.status === "Timeout").length
  const ignored = counted.filter((r) => r.status === "Ignored").length
  const pct = (/** @type {number} */ n, /** @type {number} */ d) => `${((100 * n) / d).toFixed(2)}%`
  return (
    `${pct(detected, counted.length - ignored)} (${detected} of ${counted.length - ignored} detected, ` +
    `${ignored} disabled); ${pct(detected, counted.length)} with the disabled counted as survivors`
  )
}
for (const file of [...new Set(results.map((r) => r.fileName))].sort())
  console.log(`${relative(root, file)}: ${score(results.filter((r) => r.fileName === file))}`)
console.log(`\nmutation score: ${score(results)}`)
