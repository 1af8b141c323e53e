// Streams served by four worker PROCESSES sharing Redis (a 2-layer LSTM on onnxruntime-node,
// a StreamingSession, the Redis tier and a batcher in each), against the oracle: each stream run
// alone, batch 1, in this process. On one server and on a 3-master cluster.
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { type Topology, describeRedis, startTopology } from "./helpers/setup.js"
import {
  Oracle,
  type Reply,
  type WorkerConfig,
  WorkerDied,
  type WorkerProcess,
  frameOf,
  modelFile,
  startWorkers,
} from "./helpers/processes.js"

const STREAMS = 200
const WORKERS = 4

/** A seeded LCG per stream, for its routing. */
const lcg = (seed: number) => {
  let x = seed >>> 0
  return () => {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0
    return x / 2 ** 32
  }
}

/** One reply the client got: which history (epoch) it belongs to, at which step, and `Y`. */
interface Seen {
  readonly epoch: number
  readonly step: number
  readonly y: Float32Array
}

/**
 * What a client knows of its stream: the frames the stream's state has applied, in order
 * (`applied`; a recovery that resumed from an older checkpoint starts a new epoch from that
 * prefix), the replies it got, and the frames lost to recoveries.
 */
class Client {
  readonly epochs: Float32Array[][] = [[]]
  readonly seen: Seen[] = []
  lost = 0
  /** Steps at which the stream resumed from a checkpoint. */
  readonly resumedAt: number[] = []
  recoveries = 0
  duplicates = 0

  constructor(
    readonly s: number,
    readonly key: string,
  ) {}

  get applied(): Float32Array[] {
    return this.epochs[this.epochs.length - 1] as Float32Array[]
  }

  /**
   * Records a reply to frame `x`; `retried` says the previous push of the same frame went to a
   * worker that died before answering. Returns a problem, or undefined.
   */
  accept(x: Float32Array, r: Reply, retried: boolean): string | undefined {
    if (r.error !== undefined) return `stream ${this.key}: ${r.error}: ${r.message}`
    const n = this.applied.length
    if (r.step === n) {
      this.applied.push(x)
    } else if (retried && r.step === n + 1) {
      // The dead worker ran and stored the frame but never answered; the client sent it
      // again: the stream applied it twice because the client asked twice (at-least-once).
      this.applied.push(x, x)
      this.duplicates++
    } else if (retried && r.step < n) {
      // Resumed from the last checkpoint: the frames after it are lost.
      this.lost = Math.max(this.lost, n - r.step)
      this.resumedAt.push(r.step)
      this.epochs.push([...this.applied.slice(0, r.step), x])
    } else {
      return `stream ${this.key}: step ${r.step} after ${n} applied frames${retried ? " (retried)" : ""}`
    }
    if (retried) this.recoveries++
    this.seen.push({ epoch: this.epochs.length - 1, step: r.step, y: r.y })
    return undefined
  }
}

/** Every reply's `Y` equals the oracle's on that reply's history, bit for bit. */
async function expectOracle(oracle: Oracle, clients: readonly Client[]): Promise<void> {
  let compared = 0
  for (const c of clients) {
    const want = await Promise.all(c.epochs.map((h) => oracle.outputs(h)))
    for (const { epoch, step, y } of c.seen) {
      const ref = want[epoch]?.[step]
      expect(ref, `${c.key} step ${step}`).toBeDefined()
      if (!(y.length === ref?.length && y.every((v, i) => Object.is(v, ref[i])))) {
        expect.fail(`${c.key} step ${step} (epoch ${epoch}): ${y} != ${ref}`)
      }
      compared++
    }
  }
  expect(compared).toBeGreaterThanOrEqual(clients.length)
}

interface RunOptions {
  readonly frames: number
  /** Worker for stream `s`'s next frame, among the live ones. */
  readonly route: (s: number, live: readonly WorkerProcess[], rnd: () => number) => WorkerProcess
  /** SIGKILL worker 0 after the first reply (to client `c`, the `replies`-th) for which this holds. */
  readonly killWhen?: (c: Client, replies: number) => boolean
}

/** Runs every stream concurrently, each frame after the previous reply. */
async function runStreams(
  workers: WorkerProcess[],
  name: string,
  options: RunOptions,
): Promise<Client[]> {
  let replies = 0
  const problems: string[] = []
  const clients = Array.from({ length: STREAMS }, (_, s) => new Client(s, `${name}-${s}`))
  await Promise.all(
    clients.map(async (c) => {
      const rnd = lcg(1000 + c.s)
      // `retried`: this frame's previous push, or the stream's last step, was on a worker that
      // died since. `restart`: the stream never reached a checkpoint before its worker died.
      let retried = false
      let restart = false
      let last: WorkerProcess | undefined
      for (let i = 0; c.applied.length < options.frames;) {
        const live = workers.filter((w) => !w.dead)
        const w = options.route(c.s, live, rnd)
        if (last?.dead === true) retried = true
        last = w
        const x = frameOf(c.s, i)
        let r: Reply
        try {
          r = await w.push(c.key, x, i === 0 || restart)
        } catch (e) {
          if (!(e instanceof WorkerDied)) throw e
          retried = true
          continue
        }
        if (retried && !restart && r.error === "KeyError") {
          restart = true
          continue
        }
        const problem = c.accept(x, r, retried)
        if (problem !== undefined) {
          problems.push(problem)
          return
        }
        retried = false
        restart = false
        i++
        replies++
        if (options.killWhen?.(c, replies) === true) void workers[0]?.kill()
      }
    }),
  )
  expect(problems).toEqual([])
  return clients
}

describeRedis("streams across worker processes", () => {
  const model = modelFile()
  let oracle: Oracle
  beforeAll(async () => {
    oracle = await Oracle.create(model.bytes)
  })
  afterAll(() => model.dispose())

  describe.each(["single", "cluster"] as const)("on %s", (name) => {
    let topo: Topology
    /** Every worker started here: a failed test leaves none running. */
    const workers: WorkerProcess[] = []
    const start = async (tier: WorkerConfig["tier"]) => {
      const started = await startWorkers(WORKERS, { model: model.path, ...topo.target, tier })
      workers.push(...started)
      return started
    }
    beforeAll(async () => {
      topo = await startTopology(name)
    })
    afterAll(async () => {
      await Promise.all(workers.map((w) => w.kill()))
      await topo?.dispose()
    })

    it("200 streams, each frame to a random one of 4 workers: every output equals the stream run alone, bit for bit", async () => {
      const ws = await start({ hold: false, leaseMs: 2_000, acquireTimeoutMs: 2_000 })
      const clients = await runStreams(ws, `${name}-random`, {
        frames: 6,
        route: (_, live, rnd) => live[Math.floor(rnd() * live.length)] as WorkerProcess,
      })
      for (const c of clients) {
        expect(c.seen.map((r) => r.step)).toEqual([0, 1, 2, 3, 4, 5])
        expect(c.recoveries + c.lost + c.duplicates).toBe(0)
      }
      await expectOracle(oracle, clients)
      expect(await Promise.all(ws.map((w) => w.close()))).toEqual(ws.map(() => undefined))
    })

    it("write-through, random routing, a worker SIGKILLed mid-run: no stream lost, no frame lost, every output equals a single-process run", async () => {
      const ws = await start({ hold: false, leaseMs: 500, acquireTimeoutMs: 3_000 })
      const clients = await runStreams(ws, `${name}-wt-kill`, {
        frames: 8,
        route: (_, live, rnd) => live[Math.floor(rnd() * live.length)] as WorkerProcess,
        killWhen: (_, replies) => replies === 500,
      })
      expect(ws[0]?.dead).toBe(true)
      // The kill hit pushes in flight: those streams went on elsewhere.
      expect(clients.filter((c) => c.recoveries > 0).length).toBeGreaterThan(0)
      for (const c of clients) {
        expect(c.lost, c.key).toBe(0)
        expect(c.epochs).toHaveLength(1)
        // Every frame sent was applied (one sent twice after the kill is applied twice).
        expect(c.applied.length - c.duplicates).toBe(c.seen.length)
        expect(c.applied.length).toBeGreaterThanOrEqual(8)
      }
      await expectOracle(oracle, clients)
      expect(await Promise.all(ws.slice(1).map((w) => w.close()))).toEqual([
        undefined,
        undefined,
        undefined,
      ])
    })

    it("checkpoint every 3 steps, sticky routing, a worker SIGKILLed mid-run: its streams resume on the others from their last checkpoint, losing at most 2 frames each", async () => {
      const EVERY = 3
      const ws = await start({
        hold: true,
        checkpoint: { everySteps: EVERY },
        leaseMs: 600,
        acquireTimeoutMs: 3_000,
      })
      const clients = await runStreams(ws, `${name}-ckpt-kill`, {
        frames: 9,
        // Each stream stays on its worker while it lives; worker 0's streams move to the others.
        route: (s, live) =>
          (live.find((w) => w === ws[s % WORKERS]) ?? live[s % live.length]) as WorkerProcess,
        // Mid-interval: a stream of worker 0 is one step past its checkpoint at step 3.
        killWhen: (c) => c.s % WORKERS === 0 && c.applied.length === EVERY + 1,
      })
      const moved = clients.filter((c) => c.s % WORKERS === 0)
      const stayed = clients.filter((c) => c.s % WORKERS !== 0)
      for (const c of stayed) {
        expect([c.recoveries, c.lost, c.duplicates, c.epochs.length], c.key).toEqual([0, 0, 0, 1])
      }
      for (const c of moved) {
        expect(c.lost, c.key).toBeLessThan(EVERY)
        // A recovered stream resumed at a checkpoint: a multiple of EVERY steps.
        for (const step of c.resumedAt) expect(step % EVERY, c.key).toBe(0)
      }
      expect(moved.filter((c) => c.recoveries > 0).length).toBeGreaterThan(0)
      expect(moved.some((c) => c.lost > 0)).toBe(true)
      await expectOracle(oracle, clients)
      expect(await Promise.all(ws.slice(1).map((w) => w.close()))).toEqual([
        undefined,
        undefined,
        undefined,
      ])
    })
  })
})
