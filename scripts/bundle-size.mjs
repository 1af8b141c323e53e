// Bundles a minimal browser program on @statesaver/core (test/fixtures/minimal-saver.ts) with
// esbuild (browser, ESM, minified) and checks its size against scripts/bundle-budget.json.
// `node scripts/bundle-size.mjs` prints the figures and exits 1 over budget; test/bundle-size.test.ts
// runs the same measurement in `pnpm test`. Needs a build of @statesaver/core (`pnpm build`).
import { readFileSync } from "node:fs"
import { join, relative } from "node:path"
import { pathToFileURL } from "node:url"
import { gzipSync } from "node:zlib"
import { build } from "esbuild"
import { root } from "./workspace.mjs"

export const entry = join(root, "test/fixtures/minimal-saver.ts")
export const budgetFile = join(root, "scripts/bundle-budget.json")

/**
 * @typedef {{ totalBytes: number, fpTsBytes: number }} Budget
 * @typedef {{
 *   totalBytes: number,
 *   gzipBytes: number,
 *   fpTsBytes: number,
 *   byPackage: Record<string, number>,
 *   inputs: { path: string, bytes: number }[],
 *   code: string,
 *   budget: Budget,
 *   overBudget: string[],
 * }} BundleReport
 */

/** @returns {Budget} */
export function readBudget() {
  return JSON.parse(readFileSync(budgetFile, "utf8"))
}

/**
 * Which package an input of the bundle comes from: `fp-ts`, `@statesaver/core`, ...
 * @param {string} path
 */
export function packageOf(path) {
  const nm = path.lastIndexOf("node_modules/")
  if (nm >= 0) {
    const parts = path.slice(nm + "node_modules/".length).split("/")
    return parts[0]?.startsWith("@") ? `${parts[0]}/${parts[1]}` : (parts[0] ?? path)
  }
  const pkg = /^packages\/([^/]+)\//.exec(path)
  return pkg ? `@statesaver/${pkg[1]}` : path
}

/**
 * Bundles the program and measures it: total minified bytes, gzip bytes, bytes per package.
 * `contents` bundles that source instead of the entry file (imports resolve from test/).
 * @param {{ contents?: string }} [options]
 * @returns {Promise<BundleReport>}
 */
export async function measureBundle(options = {}) {
  const source =
    options.contents === undefined
      ? { entryPoints: [entry] }
      : {
          stdin: {
            contents: options.contents,
            resolveDir: join(root, "test"),
            sourcefile: "stdin.ts",
            loader: /** @type {const} */ ("ts"),
          },
        }
  const result = await build({
    ...source,
    absWorkingDir: root,
    bundle: true,
    platform: "browser",
    format: "esm",
    target: "es2022",
    minify: true,
    metafile: true,
    write: false,
    outfile: join(root, ".tmp/bundle-size/minimal-saver.js"),
    logLevel: "silent",
  })
  const out = result.outputFiles.find((f) => f.path.endsWith(".js"))
  if (!out) throw new Error("esbuild wrote no .js output")
  const meta = result.metafile.outputs[relative(root, out.path)]
  if (!meta) throw new Error(`no metafile entry for ${out.path}`)
  const inputs = Object.entries(meta.inputs)
    .map(([path, { bytesInOutput }]) => ({ path, bytes: bytesInOutput }))
    .filter((i) => i.bytes > 0)
    .sort((a, b) => b.bytes - a.bytes)
  /** @type {Record<string, number>} */
  const byPackage = {}
  for (const i of inputs) {
    const program = i.path === relative(root, entry) || i.path === "<stdin>"
    const name = program ? "(program)" : packageOf(i.path)
    byPackage[name] = (byPackage[name] ?? 0) + i.bytes
  }
  const budget = readBudget()
  const totalBytes = out.contents.byteLength
  const fpTsBytes = byPackage["fp-ts"] ?? 0
  const overBudget = []
  if (totalBytes > budget.totalBytes) {
    overBudget.push(`total ${totalBytes} B > budget ${budget.totalBytes} B`)
  }
  if (fpTsBytes > budget.fpTsBytes) {
    overBudget.push(`fp-ts ${fpTsBytes} B > budget ${budget.fpTsBytes} B`)
  }
  return {
    totalBytes,
    gzipBytes: gzipSync(out.contents).byteLength,
    fpTsBytes,
    byPackage,
    inputs,
    code: out.text,
    budget,
    overBudget,
  }
}

/**
 * The figures as a few lines of text.
 * @param {BundleReport} r
 */
export function formatReport(r) {
  const lines = [
    `bundle of ${relative(root, entry)} (esbuild, browser, esm, minified)`,
    `  total  ${r.totalBytes} B (budget ${r.budget.totalBytes} B), gzip ${r.gzipBytes} B`,
    `  fp-ts  ${r.fpTsBytes} B (budget ${r.budget.fpTsBytes} B)`,
    ...Object.entries(r.byPackage)
      .sort((a, b) => b[1] - a[1])
      .map(([name, bytes]) => `  ${String(bytes).padStart(6)} B  ${name}`),
    "  largest inputs:",
    ...r.inputs.slice(0, 8).map((i) => `  ${String(i.bytes).padStart(6)} B  ${i.path}`),
  ]
  return lines.join("\n")
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const report = await measureBundle()
  console.log(formatReport(report))
  if (report.overBudget.length > 0) {
    console.error(`OVER BUDGET: ${report.overBudget.join("; ")}`)
    process.exit(1)
  }
  console.log("within budget")
}
