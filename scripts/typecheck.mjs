// Type-checks every workspace folder with its own tsconfig.json; fails if any fails.
import { spawnSync } from "node:child_process"
import { relative } from "node:path"
import { root, typecheckedFolders } from "./workspace.mjs"

let failed = 0
for (const dir of typecheckedFolders()) {
  const r = spawnSync("pnpm", ["exec", "tsc", "-p", `${dir}/tsconfig.json`, "--noEmit"], {
    stdio: "inherit",
    cwd: root,
  })
  console.log(`typecheck ${relative(root, dir) || "."}: ${r.status === 0 ? "ok" : "FAILED"}`)
  if (r.status !== 0) failed++
}
process.exit(failed > 0 ? 1 : 0)
