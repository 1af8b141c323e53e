import { readFileSync, readdirSync } from "node:fs"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { type Plugin, defaultClientConditions, defineConfig } from "vite"
import {
  fixedCacheDecoder,
  growingDecoder,
  noCacheDecoder,
  tinyDecoderConfig,
} from "../packages/onnxruntime/test/helpers/decoders.js"

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url))

/**
 * Cross-origin isolation: lets ONNX Runtime's wasm use threads (SharedArrayBuffer). Any static
 * host serving the built folder should send the same two headers; without them the pages still
 * work, with one wasm thread.
 */
export const isolationHeaders = {
  "Cross-Origin-Opener-Policy": "same-origin",
  "Cross-Origin-Embedder-Policy": "require-corp",
}

/**
 * The guides (docs/*.md), listed on the landing page by their first heading. TypeDoc renders them
 * with the API reference (`pnpm site:build`), under api/documents/.
 */
export function guides(): { file: string; title: string; href: string }[] {
  const docs = here("../docs")
  return readdirSync(docs)
    .filter((f) => f.endsWith(".md"))
    .sort()
    .map((file) => {
      const heading = /^# (.+)$/m.exec(readFileSync(join(docs, file), "utf8"))
      return {
        file,
        title: heading?.[1] ?? file,
        href: `api/documents/${file.replace(/\.md$/, ".html")}`,
      }
    })
}

const escape = (s: string) =>
  s.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c] ?? c)

function guideList(): Plugin {
  return {
    name: "statesaver-guides",
    transformIndexHtml(html) {
      const items = guides()
        .map((g) => `<li><a href="${escape(g.href)}">${escape(g.title)}</a></li>`)
        .join("\n        ")
      return html.replace("<!-- guides -->", items)
    },
  }
}

/**
 * `virtual:tiny-decoder`: the decoding page's models, written at build time by the same builder
 * as the onnxruntime tests and `examples/src/decoding.ts` (2 layers of real attention, random
 * weights): one graph over a fixed-capacity cache, one over a growing cache, and the same weights
 * without a cache, which the page checks its results against.
 */
function tinyDecoder(): Plugin {
  const id = "virtual:tiny-decoder"
  const resolved = `\0${id}`
  return {
    name: "statesaver-tiny-decoder",
    resolveId: (source) => (source === id ? resolved : undefined),
    load(source) {
      if (source !== resolved) return undefined
      const config = tinyDecoderConfig()
      const bytes = (model: Uint8Array) =>
        `bytes(${JSON.stringify(Buffer.from(model).toString("base64"))})`
      return [
        "const bytes = (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))",
        `export const config = ${JSON.stringify(config)}`,
        `export const fixedCacheModel = ${bytes(fixedCacheDecoder(config))}`,
        `export const growingCacheModel = ${bytes(growingDecoder(config))}`,
        `export const noCacheModel = ${bytes(noCacheDecoder(config))}`,
      ].join("\n")
    },
  }
}

export default defineConfig({
  plugins: [guideList(), tinyDecoder()],
  root: here("."),
  // Relative asset paths: the folder works from any path of any static host.
  base: "./",
  server: { host: "127.0.0.1", headers: isolationHeaders, fs: { allow: [here("..")] } },
  preview: { host: "127.0.0.1", headers: isolationHeaders },
  // onnxruntime-web's build that loads its wasm glue (.mjs) from `ort.env.wasm.wasmPaths` instead of
  // embedding it: its worker threads then start from that file, not from the page's bundle.
  resolve: { conditions: ["onnxruntime-web-use-extern-wasm", ...defaultClientConditions] },
  optimizeDeps: { exclude: ["onnxruntime-web"] },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2022",
    chunkSizeWarningLimit: 4096,
    rollupOptions: {
      input: {
        index: here("index.html"),
        streams: here("streams.html"),
        recall: here("recall.html"),
        decoding: here("decoding.html"),
      },
    },
  },
  worker: { format: "es" },
})
