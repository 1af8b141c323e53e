// The vitest config StrykerJS runs (`pnpm mutation`, see stryker.config.json): the conformance
// kit alone, on core's sources (not dist), so mutants of host-backend.ts and typed-rows.ts are
// what the kit runs against.
import { fileURLToPath } from "node:url"
import { defineConfig } from "vitest/config"

const src = (p: string) => fileURLToPath(new URL(`./src/${p}`, import.meta.url))

export default defineConfig({
  resolve: {
    alias: [
      { find: /^@statesaver\/core\/testing$/, replacement: src("testing/index.ts") },
      { find: /^@statesaver\/core$/, replacement: src("index.ts") },
    ],
  },
  test: {
    name: "core-mutation",
    root: fileURLToPath(new URL(".", import.meta.url)),
    include: ["test/conformance.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
})
