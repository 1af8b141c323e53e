/**
 * Builds the site, serves the built folder on a free loopback port and opens it in Debian's
 * headless Chromium (the same binary and flags as the packages' browser tests).
 */
import { existsSync, mkdirSync, mkdtempSync } from "node:fs"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { type Browser, type Page, chromium } from "playwright"
import { type PreviewServer, build, preview } from "vite"

export const CHROMIUM = process.env["STATESAVER_CHROMIUM"] ?? "/usr/bin/chromium"

/** WebGL2 and WebGPU on SwiftShader (the software GPU), no network; as vitest.browser.shared.ts. */
export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-dev-shm-usage",
  "--enable-unsafe-webgpu",
  "--enable-unsafe-swiftshader",
]

export const siteRoot = fileURLToPath(new URL("..", import.meta.url))
export const repoRoot = fileURLToPath(new URL("../..", import.meta.url))
const configFile = join(siteRoot, "vite.config.ts")

/** `vite build` of the site into a fresh folder under .tmp/. */
export async function buildSite(): Promise<string> {
  const parent = join(repoRoot, ".tmp")
  mkdirSync(parent, { recursive: true })
  const outDir = mkdtempSync(join(parent, "site-"))
  await build({ configFile, logLevel: "warn", build: { outDir, emptyOutDir: true } })
  return outDir
}

/** Serves a built folder on 127.0.0.1 at a free port, with the site's headers. */
export async function serveSite(
  outDir: string,
): Promise<{ url: string; close: () => Promise<void> }> {
  const server: PreviewServer = await preview({
    configFile,
    logLevel: "warn",
    build: { outDir },
    preview: { host: "127.0.0.1", port: 0, strictPort: true, open: false },
  })
  const address = server.httpServer.address()
  if (address === null || typeof address === "string") throw new Error("no port")
  return { url: `http://127.0.0.1:${address.port}/`, close: () => server.close() }
}

export const hasChromium = (): boolean => existsSync(CHROMIUM)

export async function launch(extraArgs: string[] = []): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [...CHROMIUM_ARGS, ...extraArgs],
    headless: true,
  })
}

/** Opens a page, collecting its console errors and uncaught exceptions. */
export async function open(
  browser: Browser,
  url: string,
): Promise<{ page: Page; errors: string[] }> {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } })
  const errors: string[] = []
  page.on("pageerror", (e) => errors.push(`pageerror: ${e.message}`))
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(`console: ${m.text()}`)
  })
  await page.goto(url)
  return { page, errors }
}
