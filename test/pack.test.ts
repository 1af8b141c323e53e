import { execFileSync } from "node:child_process"
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, describe, expect, it } from "vitest"

const root = join(import.meta.dirname, "..")
const packages = readdirSync(join(root, "packages"))
  .map((name) => join(root, "packages", name))
  .filter((dir) => existsSync(join(dir, "package.json")) && existsSync(join(dir, "dist")))
  .map((dir) => ({ dir, manifest: JSON.parse(readFileSync(join(dir, "package.json"), "utf8")) }))

/** The checks a plain Node ESM script runs on each packed package: named exports it must have. */
const probes: Record<string, string> = {
  "@statesaver/core": `
    const core = await import("@statesaver/core")
    const saver = core.orThrow(core.createStateSaver({ spec: core.lstmSpec([4]), backend: core.hostBackend(), batchSize: 2 }))
    core.orThrow(saver.reset([1]))
    const bytes = core.orThrow(await saver.snapshot())
    if (!(bytes instanceof Uint8Array) || bytes.length < 8) throw new Error("snapshot failed")
    const testing = import.meta.resolve("@statesaver/core/testing")
    if (!testing.endsWith("/dist/testing/index.js")) throw new Error("testing entry resolves to " + testing)
    console.log("core ok", saver.batchSize)
  `,
  "@statesaver/tfjs": `
    const m = await import("@statesaver/tfjs")
    if (typeof m.tfjsBackend !== "function") throw new Error("no tfjsBackend export")
    console.log("tfjs ok")
  `,
  "@statesaver/onnxruntime": `
    const m = await import("@statesaver/onnxruntime")
    if (typeof m.ortBackend !== "function") throw new Error("no ortBackend export")
    console.log("onnxruntime ok")
  `,
  "@statesaver/redis": `
    const m = await import("@statesaver/redis")
    if (typeof m.createRedisTier !== "function") throw new Error("no createRedisTier export")
    console.log("redis ok")
  `,
}

describe("packed tarballs", () => {
  const work = mkdtempSync(join(tmpdir(), "statesaver-pack-"))
  afterAll(() => rmSync(work, { recursive: true, force: true }))

  it("install outside the workspace and import from a plain Node ESM script", () => {
    expect(packages.map((p) => p.manifest.name)).toContain("@statesaver/core")
    const tarballs = packages.map(({ dir }) => {
      const out = execFileSync("pnpm", ["pack", "--pack-destination", work], {
        cwd: dir,
        encoding: "utf8",
      })
      const file = out.trim().split("\n").pop() as string
      return file.startsWith("/") ? file : join(work, file)
    })
    const peers = new Set<string>()
    for (const { manifest } of packages) {
      for (const [name, range] of Object.entries(
        (manifest.peerDependencies ?? {}) as Record<string, string>,
      )) {
        if (!manifest.peerDependenciesMeta?.[name]?.optional) peers.add(`${name}@${range}`)
      }
    }
    const app = join(work, "app")
    execFileSync("mkdir", ["-p", app])
    writeFileSync(
      join(app, "package.json"),
      JSON.stringify({ name: "app", private: true, type: "module" }),
    )
    execFileSync(
      "npm",
      ["install", "--no-audit", "--no-fund", "--loglevel=error", ...tarballs, ...peers],
      {
        cwd: app,
        encoding: "utf8",
      },
    )
    // Stack traces and debuggers show the TypeScript sources: the maps embed them, since the
    // tarballs ship dist/ only.
    const kitMap = JSON.parse(
      readFileSync(
        join(app, "node_modules/@statesaver/core/dist/testing/conformance.js.map"),
        "utf8",
      ),
    ) as { sources: string[]; sourcesContent?: (string | null)[] }
    expect(kitMap.sourcesContent?.length).toBe(kitMap.sources.length)
    expect(kitMap.sourcesContent?.[0]).toContain("describeBackendConformance")
    for (const { manifest } of packages) {
      const probe = probes[manifest.name as string]
      expect(probe, `a probe for ${manifest.name}`).toBeDefined()
      writeFileSync(join(app, "probe.mjs"), probe as string)
      const out = execFileSync("node", ["probe.mjs"], { cwd: app, encoding: "utf8" })
      expect(out).toMatch(/ ok/)
    }
  })
})
