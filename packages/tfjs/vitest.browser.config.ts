import { existsSync } from "node:fs"
import { playwright } from "@vitest/browser-playwright"
import { defineConfig } from "vitest/config"

// Debian's Chromium (apt-get install chromium); tools must not download their own browser.
const CHROMIUM = process.env["STATESAVER_CHROMIUM"] ?? "/usr/bin/chromium"

// WebGL2 and WebGPU in headless Chromium on SwiftShader (the software GPU).
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

const hasChromium = existsSync(CHROMIUM)

// Without Chromium the browser tests run in Node, where they report loudly that they were
// skipped and why (and fail when CI=true).
export default defineConfig({
  server: { host: "127.0.0.1" },
  test: {
    name: "tfjs-browser",
    include: ["test/**/*.browser.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    ...(hasChromium
      ? {
          browser: {
            enabled: true,
            headless: true,
            api: { host: "127.0.0.1" },
            provider: playwright({
              launchOptions: { executablePath: CHROMIUM, args: chromiumArgs },
            }),
            instances: [{ browser: "chromium" }],
          },
        }
      : { env: { STATESAVER_NO_BROWSER: `${CHROMIUM} not found` } }),
  },
})
