// Lists the workspace's published packages (packages/<name> with a package.json).
import { existsSync, readFileSync, readdirSync } from "node:fs"
import { join } from "node:path"

export const root = new URL("..", import.meta.url).pathname

/** Published packages: every packages/<name> with a package.json. */
export function publishedPackages() {
  const dir = join(root, "packages")
  return readdirSync(dir)
    .map((name) => join(dir, name))
    .filter((p) => existsSync(join(p, "package.json")))
    .map((path) => ({
      path,
      manifest: JSON.parse(readFileSync(join(path, "package.json"), "utf8")),
    }))
}
