/** `pnpm demo`: every example, one after the other. */
import { existsSync } from "node:fs"

// Before any runtime is imported: onnxruntime-node otherwise writes a telemetry database.
process.env["ORT_DISABLE_TELEMETRY"] ??= "1"

const examples = ["host-rnn", "store-streams", "tfjs-tbptt", "ort-vad", "decoder-demo"]
for (const name of examples) {
  const file = new URL(`./${name}.ts`, import.meta.url)
  if (!existsSync(file)) continue
  const mod = (await import(file.href)) as { main: () => Promise<void> }
  await mod.main()
}
