// Starts real redis-server processes for the tests: one server, or a 3-master cluster made with
// `redis-cli --cluster create`, on free loopback ports with their data in a temporary folder.
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"

/** Where Debian's `redis-server` package puts its binaries (override with STATESAVER_REDIS_BIN). */
const BIN = process.env["STATESAVER_REDIS_BIN"] ?? "/usr/bin"
export const REDIS_SERVER = join(BIN, "redis-server")
export const REDIS_CLI = join(BIN, "redis-cli")

/** Why Redis tests cannot run here, or undefined when they can. */
export function redisMissing(): string | undefined {
  if (!existsSync(REDIS_SERVER)) return `${REDIS_SERVER} not found`
  if (!existsSync(REDIS_CLI)) return `${REDIS_CLI} not found`
  return undefined
}

/** A free TCP port on 127.0.0.1 (the OS picks it; it is closed again before returning). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.unref()
    server.on("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      server.close(() => resolve(port))
    })
  })
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

/** One running redis-server. */
export class RedisServer {
  #child: ChildProcess | undefined

  private constructor(
    readonly port: number,
    readonly dir: string,
    readonly args: readonly string[],
  ) {}

  get url(): string {
    return `redis://127.0.0.1:${this.port}`
  }

  /**
   * With `persist`, every write is fsynced to an append-only file in the temporary folder, so
   * a restart (even after SIGKILL) keeps what was acknowledged.
   */
  static async start(
    options: { cluster?: boolean; port?: number; persist?: boolean } = {},
  ): Promise<RedisServer> {
    const port = options.port ?? (await freePort())
    const dir = mkdtempSync(join(tmpdir(), `statesaver-redis-${port}-`))
    const args = [
      "--port",
      String(port),
      "--bind",
      "127.0.0.1",
      "--save",
      "",
      "--appendonly",
      options.persist ? "yes" : "no",
      ...(options.persist ? ["--appendfsync", "always"] : []),
      "--dir",
      dir,
      "--daemonize",
      "no",
      "--loglevel",
      "warning",
      ...(options.cluster
        ? ["--cluster-enabled", "yes", "--cluster-config-file", join(dir, "nodes.conf")]
        : []),
    ]
    const server = new RedisServer(port, dir, args)
    await server.#launch()
    return server
  }

  async #launch(): Promise<void> {
    mkdirSync(this.dir, { recursive: true })
    const child = spawn(REDIS_SERVER, this.args, { stdio: "ignore" })
    this.#child = child
    for (let i = 0; i < 200; i++) {
      if (child.exitCode !== null) throw new Error(`redis-server exited (${child.exitCode})`)
      if (this.ping()) return
      await sleep(25)
    }
    throw new Error(`redis-server on port ${this.port} did not answer PING`)
  }

  ping(): boolean {
    try {
      return this.cli("PING").trim() === "PONG"
    } catch {
      return false
    }
  }

  cli(...args: string[]): string {
    return execFileSync(REDIS_CLI, ["-p", String(this.port), ...args], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
      timeout: 5000,
    })
  }

  /** Stops the server (SIGKILL with `kill`), keeping its folder for a restart on the same port. */
  async stop(kill = false): Promise<void> {
    const child = this.#child
    this.#child = undefined
    if (child === undefined || child.exitCode !== null) return
    const exited = new Promise<void>((r) => child.once("exit", () => r()))
    child.kill(kill ? "SIGKILL" : "SIGTERM")
    await exited
  }

  /** Starts it again on the same port (empty: it saves nothing). */
  async restart(): Promise<void> {
    await this.stop(true)
    await this.#launch()
  }

  async dispose(): Promise<void> {
    await this.stop(true)
    rmSync(this.dir, { recursive: true, force: true })
  }
}

/** Three masters, no replicas, every slot assigned. */
export class RedisCluster {
  private constructor(readonly nodes: readonly RedisServer[]) {}

  get rootNodes(): { url: string }[] {
    return this.nodes.map((n) => ({ url: n.url }))
  }

  static async start(): Promise<RedisCluster> {
    const nodes: RedisServer[] = []
    try {
      for (let i = 0; i < 3; i++) nodes.push(await RedisServer.start({ cluster: true }))
      execFileSync(
        REDIS_CLI,
        [
          "--cluster",
          "create",
          ...nodes.map((n) => `127.0.0.1:${n.port}`),
          "--cluster-replicas",
          "0",
          "--cluster-yes",
        ],
        { stdio: "ignore", timeout: 30_000 },
      )
      for (let i = 0; i < 400; i++) {
        const ok = nodes.every((n) => /cluster_state:ok/.test(n.cli("CLUSTER", "INFO")))
        if (ok) return new RedisCluster(nodes)
        await sleep(25)
      }
      throw new Error("the cluster did not reach cluster_state:ok")
    } catch (e) {
      await Promise.all(nodes.map((n) => n.dispose()))
      throw e
    }
  }

  async dispose(): Promise<void> {
    await Promise.all(this.nodes.map((n) => n.dispose()))
  }
}
