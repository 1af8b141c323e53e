import { existsSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { playwright } from "@vitest/browser-playwright"
import type { ViteUserConfig } from "vitest/config"

/** Debian's Chromium (apt-get install chromium); tools must not download a browser of their own. */
export const CHROMIUM = process.env["STATESAVER_CHROMIUM"] ?? "/usr/bin/chromium"

/** WebGL2 and WebGPU in headless Chromium on SwiftShader (the software GPU), no network. */
const chromiumArgs = [
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

const repoRoot = fileURLToPath(new URL(".", import.meta.url))

/**
 * The vitest config of a package's browser project (`test/**\/*.browser.test.ts` in headless
 * Chromium). Without Chromium, the project runs one Node test instead that says loudly what was
 * skipped and why, and fails when CI=true.
 */
export function browserProject(
  name: string,
  options: { optimizeDepsExclude?: string[] } = {},
): ViteUserConfig {
  const common = { name, testTimeout: 60_000, hookTimeout: 60_000 }
  if (!existsSync(CHROMIUM)) {
    return {
      test: {
        ...common,
        dir: repoRoot,
        include: ["scripts/browser-missing.test.ts"],
        env: { STATESAVER_BROWSER_PROJECT: name, STATESAVER_NO_BROWSER: `${CHROMIUM} not found` },
      },
    }
  }
  return {
    server: { host: "127.0.0.1" },
    optimizeDeps: { exclude: options.optimizeDepsExclude ?? [] },
    test: {
      ...common,
      include: ["test/**/*.browser.test.ts"],
      browser: {
        enabled: true,
        headless: true,
        api: { host: "127.0.0.1" },
        provider: playwright({ launchOptions: { executablePath: CHROMIUM, args: chromiumArgs } }),
        instances: [{ browser: "chromium" }],
      },
    },
  }
}
