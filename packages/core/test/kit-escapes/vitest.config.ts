// Runs broken-backends.kit.ts for kit-escapes.test.ts (in a child vitest): the conformance kit
// on deliberately broken variants of the host backend, from core's sources.
import { fileURLToPath } from "node:url"
import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    name: "kit-escapes",
    root: fileURLToPath(new URL(".", import.meta.url)),
    include: ["broken-backends.kit.ts"],
    testTimeout: 60_000,
  },
})
