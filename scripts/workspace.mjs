// Lists the workspace's folders: the published packages and the private ones (examples, bench, test).
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

/** Every folder that has a tsconfig.json to typecheck. */
export function typecheckedFolders() {
  return [
    ...publishedPackages().map((p) => p.path),
    ...["examples", "bench", "test"].map((d) => join(root, d)),
  ].filter((p) => existsSync(join(p, "tsconfig.json")))
}
