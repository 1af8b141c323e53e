/**
 * A voice activity detection server: Silero VAD v5 (shipped in @ricky0123/vad-web) on
 * onnxruntime-node for many concurrent audio streams, batched by a StreamBatcher.
 *
 *   tsx src/vad-server.ts                                 one process, the local store
 *   tsx src/vad-server.ts --redis redis://127.0.0.1:6379 --workers 2
 *                                                         worker processes sharing Redis
 *
 * POST /v1/streams/<key>/frames[?start=1][&end=1] with 512 float32 samples (little-endian,
 * 16 kHz) answers {"step", "probability"}; GET /metrics is this worker's prom-client registry.
 * Errors answer {"error": <tag>, "message"} with 400 (bad request, unknown stream), 409 (the
 * stream is leased elsewhere), 429 (queue full), 503 (Redis unreachable).
 */
import cluster from "node:cluster"
import { type ServerResponse, createServer } from "node:http"
import { type StateError, orThrow } from "@statesaver/core"
import {
  type Feeds,
  type InputRule,
  createStreamBatcher,
  createStreamingSession,
  ortBackend,
  sileroContext,
} from "@statesaver/onnxruntime"
import { type RedisTier, createRedisTier } from "@statesaver/redis"
import * as ort from "onnxruntime-node"
import { createClient } from "redis"
import { sileroV5Path } from "./speech.js"
import { vadMetrics } from "./vad-metrics.js"

export const FRAME = 512

/**
 * How a 32 ms frame reaches Silero, in one place: the caller feeds the 512 new samples as `frame`
 * and the session's rule prepends the stream's last 64 samples (per-stream state, stored and
 * moved with the model's own), as Silero's authors feed it.
 */
export const vadRules = (): InputRule[] => [sileroContext()]

/** The feeds of one frame (see `vadRules`). */
export function feedFrame(samples: Float32Array): Feeds {
  return { frame: new ort.Tensor("float32", samples, [1, FRAME]) }
}

export interface ServerOptions {
  readonly port: number
  readonly redis: string | undefined
  /** Streams a worker keeps; idle ones are written back and released. */
  readonly capacity: number
  readonly idleTtlMs: number
  /** Worker processes sharing the port: more than one hands each frame to any of them. */
  readonly workers: number
}

const STATUS: Record<string, number> = {
  LeaseError: 409,
  BusyError: 429,
  BackendError: 503,
  DisposedError: 503,
  AbortedError: 499,
}

/** Runs one worker: a session, a batcher (with the Redis tier when given a URL), an HTTP server. */
export async function worker(options: ServerOptions): Promise<() => Promise<void>> {
  process.env["ORT_DISABLE_TELEMETRY"] ??= "1"
  const metrics = vadMetrics({ worker: String(process.pid) })
  const model = await ort.InferenceSession.create(sileroV5Path(), {
    intraOpNumThreads: 1,
    interOpNumThreads: 1,
  })
  let tier: RedisTier | undefined
  let quit = async (): Promise<void> => undefined
  if (options.redis !== undefined) {
    const client = createClient({ url: options.redis, disableOfflineQueue: true })
    client.on("error", () => undefined)
    await client.connect()
    quit = async () => void client.destroy()
    tier = orThrow(
      createRedisTier({
        client,
        prefix: "vad:",
        leaseMs: 2_000,
        // Workers sharing a port get a stream's frames in any order of connections, not by
        // stream: each step is written and released, so whichever worker gets the next frame
        // takes it. One process with Redis keeps its streams (faster; written per checkpoint).
        hold: options.workers <= 1,
        // A stream whose lease a dead worker still holds is waited for.
        acquireTimeoutMs: 5_000,
        onMetric: metrics.onTier,
      }),
    )
  }
  const session = orThrow(
    createStreamingSession({
      session: model,
      ort,
      backend: ortBackend({ ort }),
      capacity: options.capacity,
      idleTtlMs: options.idleTtlMs,
      outputs: ["output"],
      rules: vadRules(),
      ...(tier === undefined ? {} : { onEvict: tier.onEvict }),
    }),
  )
  const sr = new ort.Tensor("int64", BigInt64Array.from([16000n]), [])
  const batcher = orThrow(
    createStreamBatcher({
      session,
      ...(tier === undefined ? {} : { tier }),
      shared: { sr },
      maxBatch: 32,
      maxWaitMs: 2,
      sweepEveryMs: Math.min(30_000, Math.max(50, options.idleTtlMs / 4)),
      onMetric: metrics.onBatcher,
    }),
  )

  const fail = (res: ServerResponse, e: StateError) => {
    res.writeHead(STATUS[e._tag] ?? 400, { "content-type": "application/json" })
    res.end(JSON.stringify({ error: e._tag, message: e.message }))
  }

  const server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://localhost")
    if (req.method === "GET" && url.pathname === "/metrics") {
      void metrics.registry.metrics().then((text) => {
        res.writeHead(200, { "content-type": metrics.registry.contentType })
        res.end(text)
      })
      return
    }
    const m = /^\/v1\/streams\/([^/]+)\/frames$/.exec(url.pathname)
    if (req.method !== "POST" || m === null) {
      res.writeHead(404).end()
      return
    }
    const key = decodeURIComponent(m[1] as string)
    const chunks: Buffer[] = []
    req.on("data", (c: Buffer) => chunks.push(c))
    req.on("end", () => {
      const body = Buffer.concat(chunks)
      if (body.byteLength !== FRAME * 4) {
        res.writeHead(400, { "content-type": "application/json" })
        res.end(JSON.stringify({ error: "BadFrame", message: `expected ${FRAME * 4} bytes` }))
        return
      }
      const samples = new Float32Array(FRAME)
      for (let i = 0; i < FRAME; i++) samples[i] = body.readFloatLE(i * 4)
      const abort = new AbortController()
      res.on("close", () => {
        if (!res.writableFinished) abort.abort("client went away")
      })
      void batcher
        .push(key, feedFrame(samples), {
          start: url.searchParams.get("start") === "1",
          end: url.searchParams.get("end") === "1",
          signal: abort.signal,
        })
        .then((r) => {
          if (r._tag === "Left") return fail(res, r.left)
          const probability = (r.right.outputs.output.data as Float32Array)[0]
          r.right.outputs.output.dispose()
          res.writeHead(200, { "content-type": "application/json" })
          res.end(JSON.stringify({ step: r.right.step, probability }))
        })
    })
  })
  server.keepAliveTimeout = 30_000
  await new Promise<void>((resolve) => server.listen(options.port, "127.0.0.1", resolve))
  return async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()))
    orThrow(await batcher.close())
    session.dispose()
    await quit()
  }
}

function parse(argv: readonly string[]): ServerOptions {
  const arg = (name: string) => {
    const i = argv.indexOf(`--${name}`)
    return i < 0 ? undefined : argv[i + 1]
  }
  const redis = arg("redis") ?? process.env["VAD_REDIS_URL"]
  return {
    port: Number(arg("port") ?? 8080),
    redis,
    workers: redis === undefined ? 1 : Number(arg("workers") ?? 2),
    capacity: Number(arg("capacity") ?? 10_000),
    // With Redis an idle stream is written back and released (another worker may take it);
    // without, its state would be gone: keep it for 5 minutes.
    idleTtlMs: Number(arg("idle-ms") ?? (redis === undefined ? 300_000 : 5_000)),
  }
}

/** Starts the server: `workers` processes sharing the port with Redis, or one without. */
export async function main(argv = process.argv.slice(2)): Promise<void> {
  const options = parse(argv)
  if (options.workers > 1 && cluster.isPrimary) {
    for (let i = 0; i < options.workers; i++) cluster.fork()
    console.log(
      `vad-server: ${options.workers} workers on http://127.0.0.1:${options.port}, streams in ${options.redis}`,
    )
    // A worker that dies is replaced; its streams continue on the others meanwhile.
    let stopping = false
    cluster.on("exit", (w, code, signal) => {
      if (stopping) return
      console.log(
        `vad-server: worker ${w.process.pid} exited (${signal ?? code}); starting another`,
      )
      cluster.fork()
    })
    const stopAll = () => {
      stopping = true
      for (const w of Object.values(cluster.workers ?? {})) w?.process.kill("SIGTERM")
      process.exit(0)
    }
    process.once("SIGTERM", stopAll)
    process.once("SIGINT", stopAll)
    return
  }
  const stop = await worker(options)
  if (cluster.isPrimary) {
    console.log(
      `vad-server: one process on http://127.0.0.1:${options.port}, ${options.redis === undefined ? "local store" : `streams in ${options.redis}`}`,
    )
  } else process.send?.({ ready: process.pid })
  const shutdown = () => void stop().then(() => process.exit(0))
  process.once("SIGTERM", shutdown)
  process.once("SIGINT", shutdown)
}

if (import.meta.url === `file://${process.argv[1]}`) await main()
