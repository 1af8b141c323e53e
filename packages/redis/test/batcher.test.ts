// The onnxruntime batcher on the Redis tier: Silero VAD v5 streams served by several workers
// (sessions with their own tier, as separate processes would have), against each stream alone.
import { createRequire } from "node:module"
import { dirname, join } from "node:path"
import { type StreamKey, orThrow } from "@statesaver/core"
import {
  type OrtTensor,
  type StreamBatcher,
  type StreamTier,
  createStatefulSession,
  createStreamBatcher,
  createStreamingSession,
  ortBackend,
} from "@statesaver/onnxruntime"
import * as ort from "onnxruntime-node"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { type RedisTier, type RedisTierOptions, createRedisTier } from "../src/index.js"
import { type Client, type Topology, describeRedis, startTopology } from "./helpers/setup.js"

process.env["ORT_DISABLE_TELEMETRY"] ??= "1"
const FRAME = 512
const vad = join(
  dirname(createRequire(import.meta.url).resolve("@ricky0123/vad-web")),
  "silero_vad_v5.onnx",
)
const sr = new ort.Tensor("int64", BigInt64Array.from([16000n]), [])

/** Deterministic audio-like frames: a few tones with a per-stream phase. */
function frame(s: number, i: number): OrtTensor {
  const data = new Float32Array(FRAME)
  for (let n = 0; n < FRAME; n++) {
    const t = (i * FRAME + n) / 16000
    data[n] =
      0.3 * Math.sin(2 * Math.PI * (180 + 20 * s) * t) * Math.sin(Math.PI * t * (1 + (s % 3)))
  }
  return new ort.Tensor("float32", data, [1, FRAME])
}

// The tier satisfies the batcher's tier interface.
const typed = (t: RedisTier): StreamTier => t
void typed

let model: ort.InferenceSession
beforeAll(async () => {
  model = await ort.InferenceSession.create(vad, { intraOpNumThreads: 1, interOpNumThreads: 1 })
})

async function alone(s: number, n: number): Promise<number[]> {
  const one = orThrow(
    createStatefulSession({ session: model, backend: ortBackend({ ort }), batchSize: 1 }),
  )
  const out: number[] = []
  for (let i = 0; i < n; i++) {
    const r = orThrow(await one.run({ input: frame(s, i), sr }))
    out.push((r["output"]?.data as Float32Array)[0] as number)
    r["output"]?.dispose()
  }
  return out
}

interface Served {
  readonly batcher: StreamBatcher<"output">
  readonly tier: RedisTier
}

function serve(client: Client, options: Partial<RedisTierOptions> = {}): Served {
  const tier = orThrow(createRedisTier({ client, leaseMs: 2_000, ...options }))
  const session = orThrow(
    createStreamingSession({
      session: model,
      ort,
      backend: ortBackend({ ort }),
      outputs: ["output"],
      onEvict: tier.onEvict,
    }),
  )
  const batcher = orThrow(createStreamBatcher({ session, tier, shared: { sr }, maxWaitMs: 2 }))
  return { batcher, tier }
}

const prob = (t: OrtTensor): number => {
  const p = (t.data as Float32Array)[0] as number
  t.dispose()
  return p
}

describeRedis("batcher on the Redis tier", () => {
  describe.each(["single", "cluster"] as const)("on %s", (name) => {
    let topo: Topology
    beforeAll(async () => {
      topo = await startTopology(name)
    })
    afterAll(async () => {
      await topo?.dispose()
    })

    it("streams whose frames go to random workers equal each stream run alone", async () => {
      const workers = [
        serve(await topo.connect(), { hold: false }),
        serve(await topo.connect(), { hold: false }),
        serve(await topo.connect(), { hold: false }),
      ]
      const STREAMS = 12
      const STEPS = 6
      let seed = 7
      const pick = () => {
        seed = (seed * 1103515245 + 12345) % 2 ** 31
        return workers[seed % workers.length] as Served
      }
      const got: number[][] = Array.from({ length: STREAMS }, () => [])
      await Promise.all(
        Array.from({ length: STREAMS }, async (_, s) => {
          for (let i = 0; i < STEPS; i++) {
            const w = pick()
            const r = orThrow(
              await w.batcher.push(
                `${name}-rand-${s}` as StreamKey,
                { input: frame(s, i) },
                {
                  start: i === 0,
                },
              ),
            )
            expect(r.step).toBe(i)
            got[s]?.push(prob(r.outputs.output))
          }
        }),
      )
      for (let s = 0; s < STREAMS; s++) {
        const want = await alone(s, STEPS)
        for (let i = 0; i < STEPS; i++) expect(got[s]?.[i]).toBeCloseTo(want[i] as number, 5)
      }
      for (const w of workers) orThrow(await w.batcher.close())
    })

    it("a worker that dies: its streams continue on another from the last checkpoint, none lost or run twice", async () => {
      const a = serve(await topo.connect(), { leaseMs: 300, checkpoint: { everySteps: 2 } })
      const keys = [0, 1, 2].map((s) => `${name}-dies-${s}`)
      for (let i = 0; i < 3; i++) {
        await Promise.all(
          keys.map(async (key, s) =>
            prob(
              orThrow(await a.batcher.push(key, { input: frame(s, i) }, { start: i === 0 })).outputs
                .output,
            ),
          ),
        )
      }
      // `a` stops answering (no close, no write-back). Its last checkpoint is at step 2.
      const b = serve(await topo.connect(), { acquireTimeoutMs: 3_000 })
      for (const [s, key] of keys.entries()) {
        const first = orThrow(await b.batcher.push(key, { input: frame(s, 2) }))
        expect(first.step).toBe(2)
        const want = await alone(s, 4)
        expect(prob(first.outputs.output)).toBeCloseTo(want[2] as number, 5)
        const next = orThrow(await b.batcher.push(key, { input: frame(s, 3) }))
        expect(next.step).toBe(3)
        expect(prob(next.outputs.output)).toBeCloseTo(want[3] as number, 5)
      }
      orThrow(await b.batcher.close())
    })

    it("an unknown stream without start is a KeyError from the tier", async () => {
      const w = serve(await topo.connect())
      const r = await w.batcher.push(`${name}-never`, { input: frame(0, 0) })
      expect(r._tag === "Left" && r.left._tag).toBe("KeyError")
      orThrow(await w.batcher.close())
    })
  })
})
