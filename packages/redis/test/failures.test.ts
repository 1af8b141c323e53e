// Redis failing under the tier: unreachable at start, killed and restarted mid-run.
import { orThrow } from "@statesaver/core"
import { createClient } from "redis"
import { afterEach, expect, it } from "vitest"
import { streamPath } from "../src/index.js"
import { alone, describeRedis, runStep, stateOf, worker } from "./helpers/setup.js"
import { RedisServer, freePort } from "./helpers/redis-server.js"

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))
const cleanup: (() => Promise<void> | void)[] = []
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f()
})

/** Waits until the client answers a PING (it reconnects by itself). */
async function answering(client: { ping(): Promise<unknown> }, ms = 5_000): Promise<void> {
  const end = Date.now() + ms
  for (;;) {
    try {
      await client.ping()
      return
    } catch (e) {
      if (Date.now() > end) throw e
      await sleep(20)
    }
  }
}

describeRedis("redis tier when Redis fails", () => {
  it("Redis unreachable at start: typed BackendErrors, then recovery once it is up", async () => {
    const port = await freePort()
    const client = createClient({
      url: `redis://127.0.0.1:${port}`,
      disableOfflineQueue: true,
      socket: { reconnectStrategy: 20 },
    })
    client.on("error", () => undefined)
    cleanup.push(() => client.destroy())
    const connecting = client.connect().catch(() => undefined)
    const w = worker(client)
    const [r] = await w.tier.prepare([{ key: "early", start: true }])
    expect(r?._tag).toBe("Left")
    const e = (r as { left: { _tag: string; backend: string; path: string } }).left
    expect([e._tag, e.backend, e.path]).toEqual(["BackendError", "redis", streamPath("early")])
    expect(w.store.has("early")).toBe(false)
    const server = await RedisServer.start({ port })
    cleanup.push(() => server.dispose())
    await connecting
    await answering(client)
    expect(await w.tier.prepare([{ key: "early", start: true }])).toEqual([
      { _tag: "Right", right: 0 },
    ])
  })

  it("Redis killed and restarted mid-run: no acknowledged step lost, none applied twice", async () => {
    const server = await RedisServer.start({ persist: true })
    cleanup.push(() => server.dispose())
    const client = createClient({
      url: server.url,
      disableOfflineQueue: true,
      socket: { reconnectStrategy: 20 },
    })
    client.on("error", () => undefined)
    await client.connect()
    cleanup.push(() => client.destroy())
    const w = worker(client)
    const key = "through-a-restart"
    const inputs = [0.3, -0.2, 0.9, 0.4, -0.7]
    orThrow((await w.tier.prepare([{ key, start: true }]))[0] as never)
    for (const x of inputs.slice(0, 3)) {
      runStep(w.store, [key], [x])
      expect((await w.tier.advanced([key]))[0]?._tag).toBe("Right")
    }
    await server.stop(true)
    // Step 4 runs here but cannot be acknowledged: a typed error, and the copy is dropped.
    expect((await w.tier.prepare([{ key }]))[0]?._tag).toBe("Right")
    runStep(w.store, [key], [inputs[3] as number])
    const [failed] = await w.tier.advanced([key])
    expect((failed as { left: { _tag: string } }).left._tag).toBe("BackendError")
    expect(w.store.has(key)).toBe(false)
    const [down] = await w.tier.prepare([{ key }])
    expect((down as { left: { _tag: string } }).left._tag).toBe("BackendError")
    await server.restart()
    await answering(client)
    // The acknowledged state (3 steps) comes back; step 4 is sent again, and applied once.
    expect(await w.tier.prepare([{ key }])).toEqual([{ _tag: "Right", right: 3 }])
    expect(stateOf(w.store, key)).toEqual(alone(inputs.slice(0, 3)))
    for (const x of inputs.slice(3)) {
      runStep(w.store, [key], [x])
      expect((await w.tier.advanced([key]))[0]?._tag).toBe("Right")
    }
    expect(stateOf(w.store, key)).toEqual(alone(inputs))
  })

  it("an eviction whose write fails is kept in the process and served from there, then written by flush", async () => {
    const server = await RedisServer.start()
    cleanup.push(() => server.dispose())
    const client = createClient({
      url: server.url,
      disableOfflineQueue: true,
      socket: { reconnectStrategy: 20 },
    })
    client.on("error", () => undefined)
    await client.connect()
    cleanup.push(() => client.destroy())
    const w = worker(client, { checkpoint: { everySteps: 50 } }, 1)
    orThrow((await w.tier.prepare([{ key: "kept", start: true }]))[0] as never)
    runStep(w.store, ["kept"], [0.6])
    await w.tier.advanced(["kept"])
    await server.stop(true)
    // Admitting another stream evicts "kept" while Redis is down.
    w.store.restore("other", ((await w.store.snapshot("kept")) as { right: Uint8Array }).right)
    const flushed = await w.tier.flush()
    expect(flushed._tag).toBe("Left")
    expect(w.store.has("kept")).toBe(false)
    await server.restart()
    await answering(client)
    // Redis restarted empty: only this process has the stream, and serves it from memory.
    expect(await w.tier.prepare([{ key: "kept" }])).toEqual([{ _tag: "Right", right: 1 }])
    expect(stateOf(w.store, "kept")).toEqual(alone([0.6]))
    runStep(w.store, ["kept"], [0.1])
    await w.tier.advanced(["kept"])
    expect(await w.tier.flush()).toEqual({ _tag: "Right", right: undefined })
  })
})
