import { readFileSync, readdirSync } from "node:fs"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { type Plugin, defaultClientConditions, defineConfig } from "vite"

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

export default defineConfig({
  plugins: [guideList()],
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
      },
    },
  },
  worker: { format: "es" },
})
