import { defineConfig } from "vitest/config"

// Node tests that build the site, serve it on a loopback port and drive Debian's Chromium.
export default defineConfig({
  test: {
    name: "site",
    root: import.meta.dirname,
    include: ["test/**/*.test.ts"],
    testTimeout: 240_000,
    hookTimeout: 240_000,
  },
})
