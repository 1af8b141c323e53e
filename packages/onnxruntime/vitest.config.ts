import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    name: "onnxruntime",
    include: ["test/**/*.test.ts"],
    exclude: ["test/**/*.browser.test.ts", "**/node_modules/**"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
})
