import { configDefaults, defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    name: "tfjs",
    include: ["test/**/*.test.ts"],
    exclude: [...configDefaults.exclude, "test/**/*.browser.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
})
