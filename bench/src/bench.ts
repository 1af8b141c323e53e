/** `pnpm bench`: every benchmark, each a ratio against a hand-written baseline in this process. */
import { existsSync } from "node:fs"

// Before any runtime is imported: onnxruntime-node otherwise writes a telemetry database.
process.env["ORT_DISABLE_TELEMETRY"] ??= "1"

const suites = [
  "core",
  "store",
  "tfjs",
  "ort",
  "store-vad",
  "batcher",
  "redis-tier",
  "kv",
  "decoders",
  "overhead",
]
for (const name of suites) {
  const file = new URL(`./${name}.ts`, import.meta.url)
  if (!existsSync(file)) continue
  const mod = (await import(file.href)) as { main: () => Promise<unknown> }
  await mod.main()
}
