/** `pnpm demo`: every example, one after the other. */
import { existsSync } from "node:fs"

const examples = ["host-rnn", "store-streams", "tfjs-tbptt", "ort-vad"]
for (const name of examples) {
  const file = new URL(`./${name}.ts`, import.meta.url)
  if (!existsSync(file)) continue
  const mod = (await import(file.href)) as { main: () => Promise<void> }
  await mod.main()
}
