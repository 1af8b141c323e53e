import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    name: "redis",
    include: ["test/**/*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // The suites start their own redis-server processes: one file at a time on 2 cores.
    fileParallelism: false,
  },
})
