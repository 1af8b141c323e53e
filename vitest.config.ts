import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    projects: [
      "packages/*/vitest.config.ts",
      "packages/*/vitest.browser.config.ts",
      "test/vitest.config.ts",
      "site/vitest.config.ts",
    ],
  },
})
