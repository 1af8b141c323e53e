// The code in the docs compiles: every ```ts block of README.md and docs/*.md and every `@example`
// of packages/*/src, one test per block (scripts/check-doc-examples.ts explains the preludes).
import { readFileSync } from "node:fs"
import { join } from "node:path"
import { beforeAll, describe, expect, it } from "vitest"
import {
  type BlockResult,
  type DocBlock,
  checkBlocks,
  collectBlocks,
  docSources,
  root,
} from "../scripts/check-doc-examples.js"

const blocks = collectBlocks()

/** Blocks that must fail, checked in the same program: the check is not vacuous. */
const canaries: DocBlock[] = [
  {
    id: "canary: wrong argument type",
    file: "README.md",
    line: 1,
    context: "README.md",
    code: `orThrow(saver.select("0"))`,
  },
  {
    id: "canary: a name nothing declares",
    file: "docs/concepts.md",
    line: 7,
    context: "docs/concepts.md",
    code: `const saved = orThrow(saver.save(notDeclaredAnywhere))`,
  },
]

let results: ReadonlyMap<string, BlockResult>
beforeAll(() => {
  results = new Map(checkBlocks([...blocks, ...canaries]).map((r) => [r.block.id, r]))
}, 180_000)

const read = (file: string) => readFileSync(join(root, file), "utf8")

describe("doc examples are all found", () => {
  const { markdown, sources } = docSources()

  it("one block per ```ts fence of README.md and docs/*.md", () => {
    expect(markdown).toContain("README.md")
    for (const file of markdown) {
      const fences = read(file).match(/^\s*(`{3,}|~{3,})\s*(ts|typescript)\b/gm) ?? []
      expect(blocks.filter((b) => b.file === file).length, file).toBe(fences.length)
    }
  })

  it("one block per @example tag of packages/*/src (an empty example is an error)", () => {
    expect(sources.length).toBeGreaterThan(10)
    for (const file of sources) {
      const tags = read(file).match(/^\s*\*\s*@example\b/gm) ?? []
      expect(blocks.filter((b) => b.file === file).length, file).toBe(tags.length)
    }
  })

  it("each block names the line its code starts on", () => {
    for (const b of blocks) {
      const line = read(b.file).split("\n")[b.line - 1] ?? ""
      const first = b.code.split("\n")[0] ?? ""
      expect(line.endsWith(first), `${b.id}: ${line}`).toBe(true)
    }
  })
})

describe("doc examples compile", () => {
  for (const b of blocks) {
    it(b.id, () => {
      const r = results.get(b.id)
      expect(r, b.id).toBeDefined()
      expect(r?.errors, `${b.id} fails to compile as:\n${r?.module}`).toEqual([])
    })
  }
})

describe("the doc-example check", () => {
  it("reports a type error at the doc's own line and column", () => {
    const errors = results.get("canary: wrong argument type")?.errors ?? []
    expect(errors).toHaveLength(1)
    expect(errors[0]).toMatch(/^README\.md:1:\d+: Argument of type 'string'/)
  })

  it("reports a name that neither the block, a package nor the prelude declares", () => {
    const errors = results.get("canary: a name nothing declares")?.errors ?? []
    expect(errors).toEqual([
      expect.stringMatching(/^docs\/concepts\.md:7:\d+: Cannot find name 'notDeclaredAnywhere'/),
    ])
  })
})
