import { playwright } from "@vitest/browser-playwright"
import { defineConfig } from "vitest/config"

// WebGPU in headless Chromium (Debian's /usr/bin/chromium, SwiftShader as the software GPU).
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

export default defineConfig({
  server: { host: "127.0.0.1" },
  optimizeDeps: { exclude: ["onnxruntime-web"] },
  test: {
    name: "onnxruntime-browser",
    include: ["test/**/*.browser.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    browser: {
      enabled: true,
      headless: true,
      api: { host: "127.0.0.1" },
      provider: playwright({
        launchOptions: { executablePath: "/usr/bin/chromium", args: chromiumArgs },
      }),
      instances: [{ browser: "chromium" }],
    },
  },
})
