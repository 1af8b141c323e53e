// Type-checks the code in the docs: every ```ts block of README.md and docs/*.md and every
// `@example` of the JSDoc in packages/*/src, against the built packages (as a user imports them),
// with the repository's strict compiler options, in one TypeScript program.
//
// Each block is its own ES module. The checker adds what a reader would have in scope:
// - imports of the @statesaver/* exports the block uses but does not import (value or type import);
// - the prelude entries (below) for the names the block uses but does not declare: the variables a
//   snippet assumes (`saver`, `model`, `frames`...), declared per doc file with `declare`, plus a
//   few namespace imports (`tf`, `ort`). A prelude entry may use other entries and package exports.
// - virtual modules for relative imports a snippet shows (`../src/index.js` of a user's backend).
// A name that is neither declared, imported, exported by a package nor in a prelude is an error:
// add it to the block or to the prelude of its file.
//
// `pnpm check:docs` (tsx scripts/check-doc-examples.ts) prints the failures; test/doc-examples.test.ts
// runs the same check as one test per block in `pnpm test`. Needs `pnpm build` (it reads dist).
import { readFileSync, readdirSync, existsSync } from "node:fs"
import { dirname, join, relative } from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"
import ts from "typescript"

export const root = join(dirname(fileURLToPath(import.meta.url)), "..")

/** One code block to check. */
export interface DocBlock {
  /** Names the block in test names and messages: `docs/guide-tfjs.md:15`, `…/state-tree.ts:225 sameStructure`. */
  readonly id: string
  /** Repository-relative file the block comes from. */
  readonly file: string
  /** 1-based line, in `file`, of the block's first code line. */
  readonly line: number
  /** The code, without fences or JSDoc ` * ` prefixes. */
  readonly code: string
  /** Which prelude and import order apply (see `contextOf`). */
  readonly context: string
}

/** Names a snippet may use without declaring them, for one doc file or package. */
interface Prelude {
  /** Packages whose exports are imported on demand, first match wins. */
  readonly packages: readonly string[]
  /** name -> statement that declares it (`declare const saver: StateSaver<HostTensor>`). */
  readonly names: Readonly<Record<string, string>>
  /** Relative module specifier -> source of a virtual module next to the block. */
  readonly modules?: Readonly<Record<string, string>>
}

const CORE = "@statesaver/core"
const TESTING = "@statesaver/core/testing"
const TFJS = "@statesaver/tfjs"
const ORT = "@statesaver/onnxruntime"

/** Namespace imports any snippet may assume. */
const common: Readonly<Record<string, string>> = {
  tf: `import * as tf from "@tensorflow/tfjs"`,
  ort: `import * as ort from "onnxruntime-node"`,
}

/** Host-backend names used across the core docs. */
const hostNames: Readonly<Record<string, string>> = {
  spec: "declare const spec: StateSpec",
  backend: "declare const backend: HostBackend",
  saver: "declare const saver: StateSaver<HostTensor>",
  store: "declare const store: StateStore<HostTensor>",
  keys: "declare const keys: readonly string[]",
  bytes: "declare const bytes: Uint8Array",
  h0: "declare const h0: HostTensor",
  c0: "declare const c0: HostTensor",
  h1: "declare const h1: HostTensor",
  c1: "declare const c1: HostTensor",
  before: "declare const before: StateTree<HostTensor>",
  after: "declare const after: StateTree<HostTensor>",
  next: "declare const next: StateTree<HostTensor>",
  nextState: "declare const nextState: StateTree<HostTensor>",
  leaves: "declare const leaves: readonly HostTensor[]",
  def: "declare const def: TreeDef",
  clone: "declare function clone(t: HostTensor): HostTensor",
  persist: "declare function persist(key: StreamKey, snapshot: Uint8Array): Promise<void>",
}

/** tfjs names used across the tfjs docs. */
const tfjsNames: Readonly<Record<string, string>> = {
  rnn: "declare const rnn: StatefulRnn",
  layer: "declare const layer: tf.RNN",
  state: "declare const state: StateTree<tf.Tensor>",
  saver: "declare const saver: StateSaver<tf.Variable, tf.Tensor>",
  store: "declare const store: StateStore<tf.Variable, tf.Tensor>",
  x: "declare const x: tf.Tensor3D",
  chunk: "declare const chunk: tf.Tensor3D",
  inputs: "declare const inputs: tf.Tensor3D",
  targets: "declare const targets: tf.Tensor3D",
  starts: "declare const starts: readonly boolean[]",
  head: "declare const head: tf.layers.Layer",
  vocab: "declare const vocab: number",
  layout: "declare const layout: CellLayout",
  initialState: "declare const initialState: tf.Tensor[]",
  optimizer: "declare const optimizer: tf.Optimizer",
  episodeStarts: "declare const episodeStarts: readonly boolean[]",
  batches: "declare const batches: Iterable<TbpttBatch>",
}

/** onnxruntime names used across the onnxruntime docs. */
const ortNames: Readonly<Record<string, string>> = {
  session: "declare const session: ort.InferenceSession",
  model: "declare const model: Uint8Array",
  inputNames: "declare const inputNames: readonly string[]",
  outputNames: "declare const outputNames: readonly string[]",
  pairs: "declare const pairs: readonly StatePair[]",
  frames: "declare const frames: Iterable<Float32Array>",
  frame: "declare const frame: ort.Tensor",
  frame1: "declare const frame1: ort.Tensor",
  frame2: "declare const frame2: ort.Tensor",
  frame4: "declare const frame4: ort.Tensor",
  frame17: "declare const frame17: ort.Tensor",
  sr: "declare const sr: ort.Tensor",
  persist: "declare function persist(key: StreamKey, snapshot: Uint8Array): Promise<void>",
}

/** A model stepping host state: what the README and the serving guide call `model`. */
const hostModel = {
  Chunk:
    "interface Chunk { readonly input: Float32Array; readonly sequenceEnded: readonly boolean[] }",
  chunks: "declare const chunks: Iterable<Chunk>",
  model: `declare const model: {
  step(input: unknown, state: StateTree<HostTensor>): { output: Float32Array; nextState: StateTree<HostTensor>; state: StateTree<HostTensor> }
}`,
}

const preludes: Readonly<Record<string, Prelude>> = {
  "README.md": { packages: [CORE, TFJS, ORT], names: { ...hostNames, ...hostModel } },
  "docs/concepts.md": {
    packages: [CORE],
    names: {
      ...hostNames,
      ...hostModel,
      k0: "declare const k0: HostTensor",
      v0: "declare const v0: HostTensor",
      x: "declare const x: Float32Array",
      startsNow: "declare const startsNow: readonly boolean[]",
    },
  },
  "docs/errors.md": { packages: [CORE], names: hostNames },
  "docs/performance.md": { packages: [CORE], names: hostNames },
  "docs/guide-serving.md": {
    packages: [CORE],
    names: {
      ...hostNames,
      ...hostModel,
      storeA: "declare const storeA: StateStore<HostTensor>",
      storeB: "declare const storeB: StateStore<HostTensor>",
      stackInputs: "declare function stackInputs(keys: readonly string[]): Float32Array",
    },
  },
  "docs/guide-tfjs.md": { packages: [TFJS, CORE], names: tfjsNames },
  "docs/guide-onnxruntime.md": { packages: [ORT, CORE], names: ortNames },
  "docs/guide-decoders.md": {
    packages: [ORT, CORE],
    names: {
      ...ortNames,
      decoder: 'declare const decoder: StatefulSession<"logits">',
      draft: 'declare const draft: StatefulSession<"logits">',
      ids: "declare const ids: ort.Tensor",
      prompt: "declare const prompt: readonly number[]",
      prompts: "declare const prompts: readonly (readonly number[])[]",
      suffixes: "declare const suffixes: readonly (readonly number[])[]",
      bobPrompt: "declare const bobPrompt: readonly number[]",
      feed: 'declare function feed(dec: StatefulSession<"logits">, chunk: readonly (readonly number[])[]): Promise<Float64Array[][]>',
      lastOf: "declare function lastOf(rows: Float64Array[][]): Float64Array[]",
      argmax: "declare function argmax(xs: Float64Array): number",
    },
  },
  "docs/writing-a-backend.md": {
    packages: [TESTING, CORE],
    names: hostNames,
    modules: {
      "../src/index.js":
        'import type { HostTensor, StateBackend } from "@statesaver/core"\n' +
        "export declare function myBackend(): StateBackend<HostTensor> & { liveTensors(): number }",
    },
  },
  "packages/core": { packages: [CORE], names: hostNames },
  "packages/core/testing": {
    packages: [TESTING, CORE],
    names: { ...hostNames, keys: "declare const keys: string[]" },
  },
  "packages/tfjs": { packages: [TFJS, CORE], names: tfjsNames },
  "packages/onnxruntime": { packages: [ORT, CORE], names: ortNames },
}

/** The prelude key of a file: the doc itself, or the package (and core's testing entry). */
export function contextOf(file: string): string {
  const pkg = /^packages\/([^/]+)\/src\/(testing\/)?/.exec(file)
  if (pkg) return pkg[2] ? `packages/${pkg[1]}/testing` : `packages/${pkg[1]}`
  return file
}

// ---------------------------------------------------------------------------------------------
// Extraction

/** The ```ts / ```typescript blocks of a Markdown text, with the line of their first code line. */
export function markdownBlocks(file: string, text: string): DocBlock[] {
  const lines = text.split("\n")
  const blocks: DocBlock[] = []
  let fence: { marker: string; indent: string; ts: boolean; start: number } | undefined
  let body: string[] = []
  lines.forEach((line, i) => {
    if (fence === undefined) {
      const open = /^(\s*)(`{3,}|~{3,})\s*([\w-]*)/.exec(line)
      if (open) {
        const lang = (open[3] ?? "").toLowerCase()
        fence = {
          marker: open[2] as string,
          indent: open[1] as string,
          ts: lang === "ts" || lang === "typescript",
          start: i + 2,
        }
        body = []
      }
      return
    }
    const t = line.trim()
    if (t.length >= fence.marker.length && t === fence.marker.charAt(0).repeat(t.length)) {
      if (fence.ts) {
        blocks.push({
          id: `${file}:${fence.start}`,
          file,
          line: fence.start,
          code: body.join("\n"),
          context: contextOf(file),
        })
      }
      fence = undefined
      return
    }
    body.push(line.startsWith(fence.indent) ? line.slice(fence.indent.length) : line)
  })
  return blocks
}

/** The `@example` tags of the JSDoc comments of a TypeScript source text. */
export function jsdocExamples(file: string, text: string): DocBlock[] {
  const blocks: DocBlock[] = []
  const comment = /\/\*\*([\s\S]*?)\*\//g
  for (let m = comment.exec(text); m !== null; m = comment.exec(text)) {
    const startLine = text.slice(0, m.index).split("\n").length
    const lines = (m[1] as string).split("\n").map((l) => l.replace(/^\s*\* ?/, ""))
    const after = text.slice(m.index + m[0].length)
    const decl =
      /^\s*(?:export\s+)?(?:declare\s+)?(?:default\s+)?(?:abstract\s+)?(?:async\s+)?(?:function\*?|class|interface|type|const|let|enum|namespace)\s+([\w$]+)/.exec(
        after,
      )?.[1] ?? /^\s*(?:readonly\s+)?([\w$]+)\s*[(:?<]/.exec(after)?.[1]
    for (let i = 0; i < lines.length; i++) {
      const tag = /^\s*@example\b ?(.*)$/.exec(lines[i] as string)
      if (!tag) continue
      const body: { text: string; line: number }[] = []
      if ((tag[1] ?? "").trim() !== "") body.push({ text: tag[1] as string, line: startLine + i })
      let j = i + 1
      for (; j < lines.length && !/^\s*@\w/.test(lines[j] as string); j++) {
        body.push({ text: lines[j] as string, line: startLine + j })
      }
      i = j - 1
      // A fenced example (```ts ... ```) keeps what is inside the fences.
      const fenced = body.findIndex((b) => /^\s*```/.test(b.text))
      let code = body
      if (fenced >= 0) {
        const end = body.findIndex((b, k) => k > fenced && /^\s*```/.test(b.text))
        code = body.slice(fenced + 1, end < 0 ? undefined : end)
      }
      while (code.length > 0 && (code[0] as { text: string }).text.trim() === "")
        code = code.slice(1)
      while (code.length > 0 && (code[code.length - 1] as { text: string }).text.trim() === "") {
        code = code.slice(0, -1)
      }
      const first = code[0]
      if (first === undefined) continue
      blocks.push({
        id: `${file}:${first.line}${decl ? ` ${decl}` : ""}`,
        file,
        line: first.line,
        code: code.map((c) => c.text).join("\n"),
        context: contextOf(file),
      })
    }
  }
  return blocks
}

function walk(dir: string, keep: (file: string) => boolean): string[] {
  if (!existsSync(dir)) return []
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name)
    if (e.isDirectory()) return e.name === "node_modules" ? [] : walk(p, keep)
    return keep(p) ? [p] : []
  })
}

/** The doc files and source files whose examples are checked. */
export function docSources(): { markdown: string[]; sources: string[] } {
  const markdown = [
    join(root, "README.md"),
    ...walk(join(root, "docs"), (f) => f.endsWith(".md") && !f.includes("/docs/api/")),
  ]
  const sources = readdirSync(join(root, "packages")).flatMap((pkg) =>
    walk(join(root, "packages", pkg, "src"), (f) => f.endsWith(".ts") && !f.endsWith(".d.ts")),
  )
  const rel = (f: string) => relative(root, f)
  return { markdown: markdown.map(rel).sort(), sources: sources.map(rel).sort() }
}

/** Every block of README.md, docs/*.md and the `@example` tags of packages/*\/src. */
export function collectBlocks(): DocBlock[] {
  const { markdown, sources } = docSources()
  return [
    ...markdown.flatMap((f) => markdownBlocks(f, readFileSync(join(root, f), "utf8"))),
    ...sources.flatMap((f) => jsdocExamples(f, readFileSync(join(root, f), "utf8"))),
  ]
}

// ---------------------------------------------------------------------------------------------
// Wrapping

/** Names a block declares at its top level (imports, variables, functions, classes, types). */
export function topLevelNames(sf: ts.SourceFile): Set<string> {
  const names = new Set<string>()
  const bind = (n: ts.BindingName): void => {
    if (ts.isIdentifier(n)) names.add(n.text)
    else for (const e of n.elements) if (!ts.isOmittedExpression(e)) bind(e.name)
  }
  for (const s of sf.statements) {
    if (ts.isImportDeclaration(s) && s.importClause) {
      const c = s.importClause
      if (c.name) names.add(c.name.text)
      if (c.namedBindings && ts.isNamespaceImport(c.namedBindings)) {
        names.add(c.namedBindings.name.text)
      } else if (c.namedBindings) {
        for (const e of c.namedBindings.elements) names.add(e.name.text)
      }
    } else if (ts.isImportEqualsDeclaration(s)) {
      names.add(s.name.text)
    } else if (ts.isVariableStatement(s)) {
      for (const d of s.declarationList.declarations) bind(d.name)
    } else if (
      (ts.isFunctionDeclaration(s) ||
        ts.isClassDeclaration(s) ||
        ts.isInterfaceDeclaration(s) ||
        ts.isTypeAliasDeclaration(s) ||
        ts.isEnumDeclaration(s) ||
        ts.isModuleDeclaration(s)) &&
      s.name &&
      ts.isIdentifier(s.name)
    ) {
      names.add(s.name.text)
    }
  }
  return names
}

/** Identifiers a piece of code mentions, except member names after a dot. */
export function mentionedNames(sf: ts.SourceFile): Set<string> {
  const names = new Set<string>()
  const visit = (n: ts.Node): void => {
    if (ts.isIdentifier(n)) {
      const p = n.parent
      const member =
        (ts.isPropertyAccessExpression(p) && p.name === n) ||
        (ts.isQualifiedName(p) && p.right === n)
      if (!member) names.add(n.text)
    }
    ts.forEachChild(n, visit)
  }
  visit(sf)
  return names
}

/** The exports of each package, as a user's import sees them: name -> is it a value? */
export type ExportTable = ReadonlyMap<string, ReadonlyMap<string, boolean>>

const parse = (name: string, text: string): ts.SourceFile =>
  ts.createSourceFile(name, text, ts.ScriptTarget.ES2022, true, ts.ScriptKind.TS)

/** The module a block becomes: added imports and prelude, then the block, and where it starts. */
export function wrapBlock(
  block: DocBlock,
  exportsOf: ExportTable,
): { text: string; headerLines: number } {
  const prelude = preludes[block.context] ?? { packages: [CORE], names: {} }
  const names: Record<string, string> = { ...common, ...prelude.names }
  const sf = parse("block.ts", block.code)
  const declared = topLevelNames(sf)
  const wanted = new Set([...mentionedNames(sf)].filter((n) => !declared.has(n)))
  // Prelude entries the block needs, and the entries and names those need in turn.
  const included: string[] = []
  const queue = [...wanted]
  for (let name = queue.shift(); name !== undefined; name = queue.shift()) {
    const decl = names[name]
    if (decl === undefined || included.includes(name)) continue
    included.push(name)
    for (const n of mentionedNames(parse("prelude.ts", decl))) {
      if (!wanted.has(n) && !declared.has(n)) {
        wanted.add(n)
        queue.push(n)
      }
    }
  }
  const imports = new Map<string, string[]>()
  for (const name of [...wanted].sort()) {
    if (names[name] !== undefined) continue
    for (const pkg of prelude.packages) {
      const isValue = exportsOf.get(pkg)?.get(name)
      if (isValue === undefined) continue
      imports.set(pkg, [...(imports.get(pkg) ?? []), isValue ? name : `type ${name}`])
      break
    }
  }
  const header = [
    ...[...imports].map(([pkg, list]) => `import { ${list.join(", ")} } from "${pkg}"`),
    ...included.filter((n) => names[n]?.startsWith("import ")).map((n) => names[n] as string),
    ...included.filter((n) => !names[n]?.startsWith("import ")).map((n) => names[n] as string),
    "export {}",
  ].join("\n")
  const headerLines = header.split("\n").length
  return { text: `${header}\n${block.code}\n`, headerLines }
}

// ---------------------------------------------------------------------------------------------
// Checking

const docDir = join(root, "test", ".doc-examples")

function compilerOptions(): ts.CompilerOptions {
  const base = ts.readConfigFile(join(root, "tsconfig.base.json"), (f) => ts.sys.readFile(f))
  if (base.error) throw new Error(ts.flattenDiagnosticMessageText(base.error.messageText, "\n"))
  const parsed = ts.parseJsonConfigFileContent(base.config, ts.sys, root)
  return {
    ...parsed.options,
    noEmit: true,
    declaration: false,
    declarationMap: false,
    sourceMap: false,
    composite: false,
    incremental: false,
    types: ["node"],
    lib: ["lib.es2023.d.ts", "lib.esnext.disposable.d.ts", "lib.dom.d.ts"],
  }
}

function exportTable(program: ts.Program, probe: ts.SourceFile): Map<string, Map<string, boolean>> {
  const checker = program.getTypeChecker()
  const table = new Map<string, Map<string, boolean>>()
  for (const s of probe.statements) {
    if (!ts.isImportDeclaration(s) || !ts.isStringLiteral(s.moduleSpecifier)) continue
    const pkg = s.moduleSpecifier.text
    const mod = checker.getSymbolAtLocation(s.moduleSpecifier)
    if (mod === undefined) {
      throw new Error(`cannot resolve ${pkg} from test/: run \`pnpm build\` first`)
    }
    const names = new Map<string, boolean>()
    for (const sym of checker.getExportsOfModule(mod)) {
      const typeOnly = (sym.declarations ?? []).some(
        (d) => ts.isExportSpecifier(d) && (d.isTypeOnly || d.parent.parent.isTypeOnly),
      )
      const target = sym.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(sym) : sym
      names.set(sym.name, !typeOnly && (target.flags & ts.SymbolFlags.Value) !== 0)
    }
    table.set(pkg, names)
  }
  return table
}

/** The result of checking one block: its diagnostics, mapped back to the doc's lines. */
export interface BlockResult {
  readonly block: DocBlock
  readonly errors: readonly string[]
  /** The module that was compiled, for messages. */
  readonly module: string
}

/**
 * Type-checks blocks in one program: the exports of the packages are read first (from dist, through
 * test/'s node_modules), then every block is wrapped and checked.
 */
export function checkBlocks(blocks: readonly DocBlock[]): BlockResult[] {
  const options = compilerOptions()
  const virtual = new Map<string, string>()
  const probePath = join(docDir, "exports-probe.ts")
  virtual.set(
    probePath,
    [CORE, TESTING, TFJS, ORT].map((p, i) => `import * as m${i} from "${p}"`).join("\n") + "\n",
  )
  const host = ts.createCompilerHost(options, true)
  const { fileExists, readFile, getSourceFile, directoryExists } = host
  host.fileExists = (f) => virtual.has(f) || fileExists.call(host, f)
  host.readFile = (f) => virtual.get(f) ?? readFile.call(host, f)
  host.directoryExists = (d) =>
    [...virtual.keys()].some((f) => f.startsWith(`${d}/`)) ||
    (directoryExists?.call(host, d) ?? false)
  host.getSourceFile = (f, lang, onError, create) => {
    const text = virtual.get(f)
    return text !== undefined
      ? ts.createSourceFile(f, text, lang)
      : getSourceFile.call(host, f, lang, onError, create)
  }
  const probeProgram = ts.createProgram({ rootNames: [probePath], options, host })
  const probe = probeProgram.getSourceFile(probePath)
  if (probe === undefined) throw new Error("no probe source file")
  const table = exportTable(probeProgram, probe)

  const files = blocks.map((block, i) => {
    const { text, headerLines } = wrapBlock(block, table)
    const dir = join(docDir, `b${i}`)
    const path = join(dir, "test", "example.ts")
    virtual.set(path, text)
    const modules = preludes[block.context]?.modules ?? {}
    for (const [spec, source] of Object.entries(modules)) {
      virtual.set(join(dir, "test", spec.replace(/\.js$/, ".ts")), source)
    }
    return { block, path, text, headerLines }
  })
  const program = ts.createProgram({
    rootNames: files.map((f) => f.path),
    options,
    host,
    oldProgram: probeProgram,
  })
  return files.map(({ block, path, text, headerLines }) => {
    const sf = program.getSourceFile(path)
    const diagnostics = sf
      ? [...program.getSyntacticDiagnostics(sf), ...program.getSemanticDiagnostics(sf)]
      : []
    const errors = diagnostics.map((d) => {
      const message = ts.flattenDiagnosticMessageText(d.messageText, "\n  ")
      if (d.file === undefined || d.start === undefined) return message
      const { line, character } = d.file.getLineAndCharacterOfPosition(d.start)
      if (d.file.fileName !== path) return `${d.file.fileName}: ${message}`
      if (line < headerLines) {
        const text = d.file.text.split("\n")[line] ?? ""
        return `added prelude/import \`${text.trim()}\`: ${message}`
      }
      return `${block.file}:${block.line + line - headerLines}:${character + 1}: ${message}`
    })
    return { block, errors, module: text }
  })
}

// ---------------------------------------------------------------------------------------------

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const blocks = collectBlocks()
  const started = performance.now()
  const results = checkBlocks(blocks)
  const failed = results.filter((r) => r.errors.length > 0)
  for (const r of failed) {
    console.log(`\n✗ ${r.block.id}`)
    for (const e of r.errors) console.log(`  ${e}`)
  }
  const seconds = ((performance.now() - started) / 1000).toFixed(1)
  console.log(`\n${blocks.length} blocks checked in ${seconds} s, ${failed.length} failed`)
  process.exit(failed.length > 0 ? 1 : 0)
}
