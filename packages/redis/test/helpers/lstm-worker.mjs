// A worker process of the multi-process tests: one ONNX Runtime session of a small LSTM, a
// StreamingSession on a Redis tier, and a batcher. It serves `push` messages from its parent
// (the test), as a server process serves requests, until it is told to close or is killed.
// Plain JavaScript on the built packages, so that it starts like a user's process.
import { orThrow } from "@statesaver/core"
import { createStreamBatcher, createStreamingSession, ortBackend } from "@statesaver/onnxruntime"
import { createRedisTier } from "@statesaver/redis"
import * as ort from "onnxruntime-node"
import { createClient, createCluster } from "redis"

/**
 * @type {{ model: string, input: number, url?: string, rootNodes?: { url: string }[],
 *   owner: string, tier: Record<string, unknown>, maxBatch: number }}
 */
const config = JSON.parse(process.argv[2] ?? "{}")
const send = (/** @type {unknown} */ m) => process.send?.(m)

const clientOptions = { disableOfflineQueue: true }
const client =
  config.rootNodes !== undefined
    ? createCluster({ rootNodes: config.rootNodes, defaults: clientOptions })
    : createClient({ url: config.url, ...clientOptions })
client.on("error", () => undefined)
await client.connect()
const model = await ort.InferenceSession.create(config.model, {
  intraOpNumThreads: 1,
  interOpNumThreads: 1,
})
const tier = orThrow(createRedisTier({ client, owner: config.owner, ...config.tier }))
const session = orThrow(
  createStreamingSession({
    session: model,
    ort,
    backend: ortBackend({ ort }),
    outputs: ["Y"],
    onEvict: tier.onEvict,
  }),
)
const batcher = orThrow(
  createStreamBatcher({ session, tier, maxBatch: config.maxBatch, maxWaitMs: 1, sweepEveryMs: 50 }),
)

process.on("message", async (/** @type {any} */ m) => {
  if (m.type === "push") {
    const x = new ort.Tensor("float32", m.x, [1, 1, config.input])
    const r = await batcher.push(m.key, { X: x }, { start: m.start })
    if (r._tag === "Left") {
      send({ id: m.id, error: r.left._tag, message: r.left.message })
      return
    }
    const y = r.right.outputs.Y
    send({ id: m.id, step: r.right.step, y: new Float32Array(y.data) })
    y.dispose()
  } else if (m.type === "close") {
    const r = await batcher.close()
    send({ id: m.id, error: r._tag === "Left" ? r.left._tag : undefined })
    client.destroy()
    process.exit(0)
  }
})
// The test process went away (finished, failed or killed): so does this worker.
process.on("disconnect", () => process.exit(0))
send({ type: "ready" })
