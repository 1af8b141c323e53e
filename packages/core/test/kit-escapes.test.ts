/*
 * The conformance kit catches the bugs a backend author is likely to make: each broken variant of
 * the host backend in kit-escapes/broken-backends.kit.ts must fail the kit, in the test that
 * names the rule it breaks, and the unbroken backend must pass. The kit runs in a child vitest
 * (its own JSON report), since a failing kit test would fail this run.
 */
import { spawn } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { HostTensor, hostBackend, init } from "../src/index.js"
import { trackOwnership } from "../src/testing/harness.js"
import type { VARIANTS } from "./kit-escapes/variants.js"

interface Assertion {
  readonly ancestorTitles: readonly string[]
  readonly title: string
  readonly status: string
  readonly failureMessages: readonly string[]
}

const dir = fileURLToPath(new URL("./kit-escapes/", import.meta.url))
const out = mkdtempSync(join(tmpdir(), "kit-escapes-"))
const report = join(out, "report.json")
let results: Assertion[] = []

beforeAll(async () => {
  await new Promise<void>((resolve, reject) => {
    const child = spawn(
      "pnpm",
      [
        "exec",
        "vitest",
        "run",
        "--config",
        join(dir, "vitest.config.ts"),
        "--reporter=json",
        `--outputFile.json=${report}`,
      ],
      { cwd: dir, stdio: ["ignore", "ignore", "pipe"] },
    )
    let stderr = ""
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()))
    child.on("error", reject)
    // Exit code 1 is expected: the broken variants fail.
    child.on("close", (code) =>
      code === 0 || code === 1 ? resolve() : reject(new Error(`vitest exited ${code}: ${stderr}`)),
    )
  })
  const json = JSON.parse(readFileSync(report, "utf8")) as {
    testResults: { assertionResults: Assertion[] }[]
  }
  results = json.testResults.flatMap((f) => f.assertionResults)
}, 300_000)

afterAll(() => rmSync(out, { recursive: true, force: true }))

/** The kit's results for one variant's suite. */
const suite = (variant: string) =>
  results.filter((a) => a.ancestorTitles[0] === `StateBackend conformance: ${variant}`)
const failed = (variant: string) => suite(variant).filter((a) => a.status === "failed")

/** For each broken variant: a kit test that must fail, and text its failure must contain. */
const CAUGHT_BY: Record<Exclude<(typeof VARIANTS)[number], "unbroken">, [string, RegExp][]> = {
  "toHost copies after an await": [
    ["contract: toHost takes its copy before it returns", /toHost, then fill of every row/],
    ["contract: a snapshot taken before a reset and a save holds the values before them", /./],
  ],
  "toHost copies after a setTimeout": [
    ["contract: toHost takes its copy before it returns", /toHost, then fill of every row/],
    ["contract: a snapshot taken before a reset and a save holds the values before them", /./],
  ],
  "fromHost keeps the caller's array": [
    [
      "contract: fromHost copies its input and toHost returns a copy",
      /fromHost of a later-changed array/,
    ],
  ],
  "gather of rows 0..n-1 returns a view of its source": [
    ["contract: gather of every row in order returns a new tensor that shares no memory", /./],
  ],
  "describe answers for a disposed tensor": [
    ["contract: describe answers for live tensors only, undefined once disposed or foreign", /./],
  ],
  "int64 stored through a JS number": [
    [
      "contract: int64 values beyond 2**53 pass every primitive exactly",
      /fromHost then toHost on leaf int64/,
    ],
    ["int64: save keeps the given tensors and state() returns them", /int64 \[batch=4, 3\]|int64/],
  ],
  "scatter frees its source; dispose throws on the double free": [
    [
      "contract: scatter writes rows in any order in place, leaves other rows and its source unchanged",
      /its source after the call/,
    ],
    [
      "store: random interleavings of keys equal each stream run alone",
      /dispose threw .*host tensor freed twice/,
    ],
  ],
  "gather of a 0-sized tensor returns the kernel's collapsed shape": [
    [
      "contract: tensors with a 0-sized axis pass every primitive, at any batch size",
      /gather of rows \[3, null, 0, 0, 3\] on leaf cache \(float32 \[batch=4, 2, 0, 3\].*: shape/,
    ],
  ],
  "reorder copies rows in index order, over rows not yet read": [
    [
      "contract: reorder moves rows within the tensor as gather would, allocating no tensor",
      /reorder of rows \[3, 2, 1, 0\] on leaf cache \(float32 \[batch=4, 2, 3\]/,
    ],
    [
      "float32: select at the same batch size (backend reorder, else gather): cycles, forks, drops",
      /select\(\[3, 2, 1, 0\]\) \(backend reorder\)/,
    ],
  ],
}

describe("the conformance kit on deliberately broken host backends", () => {
  it("passes every test on the unbroken host backend", () => {
    expect(suite("unbroken").length).toBeGreaterThan(60)
    expect(failed("unbroken").map((a) => a.title)).toEqual([])
  })

  for (const [variant, expected] of Object.entries(CAUGHT_BY)) {
    it(`fails a backend whose ${variant}`, () => {
      expect(suite(variant).length, "tests run on the variant").toBe(suite("unbroken").length)
      const fails = failed(variant)
      for (const [name, message] of expected) {
        const hit = fails.find((a) => a.title === name)
        expect(
          hit,
          `kit test "${name}" must fail; failed: ${fails.map((a) => a.title).join(" | ")}`,
        ).toBeDefined()
        expect(hit?.failureMessages.join("\n")).toMatch(message)
      }
    })
  }
})

describe("the kit's ownership tracker", () => {
  const leaf = { path: "x", batchAxis: 0, init: init.zeros }
  const host = new HostTensor("float32", [2, 3])

  it("reports a second dispose, a dispose after adopt and a dispose of a foreign value", () => {
    const tracker = trackOwnership(hostBackend())
    const b = tracker.backend
    const t = b.fromHost(host, leaf)
    b.dispose(t)
    b.dispose(t)
    const held = b.allocate([2, 3], "float32", leaf)
    const next = b.fromHost(host, leaf)
    const kept = b.adopt(held, next, leaf)
    b.dispose(held)
    b.dispose(new HostTensor("float32", [1]))
    b.dispose(kept)
    expect(() => tracker.check()).toThrowError(
      /3 ownership problem\(s\)[\s\S]*double free: a second dispose of the tensor from fromHost for leaf x float32 \[2, 3\][\s\S]*already given to adopt[\s\S]*never returned: a HostTensor/,
    )
  })

  it("reports a throwing dispose, which core would swallow, and passes clean ownership", () => {
    const strict = {
      ...hostBackend(),
      dispose: () => {
        throw new Error("device lost")
      },
    }
    const tracker = trackOwnership(strict)
    const t = tracker.backend.allocate([2, 3], "float32", leaf)
    expect(() => tracker.backend.dispose(t)).toThrowError("device lost")
    expect(() => tracker.check()).toThrowError(
      /dispose threw .*device lost, freeing the tensor from allocate/,
    )
    const clean = trackOwnership(hostBackend())
    const x = clean.backend.allocate([2, 3], "float32", leaf)
    const y = clean.backend.gather(x, [1, 0], leaf)
    clean.backend.dispose(clean.backend.adopt(x, y, leaf))
    expect(() => clean.check()).not.toThrow()
  })
})
