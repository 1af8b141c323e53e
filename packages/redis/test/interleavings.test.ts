// fast-check interleavings of push / idle eviction / flush / kill / a racing worker over two
// workers sharing Redis, against a model of what each stream must hold: its frames, how many of
// them Redis acknowledged (the last checkpoint), and which worker holds it. A killed worker
// writes nothing back: its streams resume elsewhere from their last checkpoint.
import {
  type HostTensor,
  type StateStore,
  createStateStore,
  hostBackend,
  orThrow,
} from "@statesaver/core"
import fc from "fast-check"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { type RedisTier, createRedisTier } from "../src/index.js"
import {
  type Client,
  SPEC,
  type Topology,
  alone,
  describeRedis,
  runStep,
  startTopology,
  stateOf,
} from "./helpers/setup.js"

const TTL = 1_000
const LEASE = 100
const KEYS = 3
const SLOTS = 2

interface Live {
  readonly tier: RedisTier
  readonly store: StateStore<HostTensor>
  /** The store's clock (idle eviction), moved by the `evict` command. */
  readonly clock: { now: number }
}

/** What one stream must be: its frames, how many Redis acknowledged, and its holder. */
interface StreamModel {
  frames: number[]
  acked: number
  holder: number | undefined
  started: boolean
}

type Command =
  | { readonly op: "push"; readonly s: number; readonly slot: number; readonly x: number }
  | { readonly op: "evict"; readonly slot: number }
  | { readonly op: "flush"; readonly slot: number }
  | { readonly op: "kill"; readonly slot: number }
  | { readonly op: "race"; readonly s: number }

const command: fc.Arbitrary<Command> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      op: fc.constant("push" as const),
      s: fc.nat(KEYS - 1),
      slot: fc.nat(SLOTS - 1),
      x: fc.integer({ min: -8, max: 8 }).map((n) => n / 8),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ op: fc.constant("evict" as const), slot: fc.nat(SLOTS - 1) }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ op: fc.constant("flush" as const), slot: fc.nat(SLOTS - 1) }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ op: fc.constant("kill" as const), slot: fc.nat(SLOTS - 1) }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("race" as const), s: fc.nat(KEYS - 1) }) },
)

describeRedis("interleavings against a model", () => {
  describe.each(["single", "cluster"] as const)("on %s", (name) => {
    let topo: Topology
    let client: Client
    beforeAll(async () => {
      topo = await startTopology(name)
      client = await topo.connect()
    })
    afterAll(async () => {
      await topo?.dispose()
    })

    let runs = 0
    const live = (everySteps: number, acquireTimeoutMs = LEASE * 10): Live => {
      const clock = { now: 0 }
      const tier = orThrow(
        createRedisTier({ client, leaseMs: LEASE, acquireTimeoutMs, checkpoint: { everySteps } }),
      )
      const store = orThrow(
        createStateStore({
          spec: SPEC,
          backend: hostBackend(),
          idleTtlMs: TTL,
          clock: () => clock.now,
          onEvict: tier.onEvict,
        }),
      )
      orThrow(tier.attach(store))
      return { tier, store, clock }
    }

    it("push / evict / flush / kill / race: every stream holds exactly its acknowledged frames", async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.integer({ min: 1, max: 3 }),
          fc.array(command, { minLength: 4, maxLength: 16 }),
          async (everySteps, commands) => {
            const run = ++runs
            const key = (s: number) => `${name}-model-${run}-${s}`
            const workers = Array.from({ length: SLOTS }, () => live(everySteps))
            const model: StreamModel[] = Array.from({ length: KEYS }, () => ({
              frames: [],
              acked: 0,
              holder: undefined,
              started: false,
            }))
            for (const c of commands) {
              if (c.op === "push") {
                const m = model[c.s] as StreamModel
                const slot = m.holder ?? c.slot
                const w = workers[slot] as Live
                const k = key(c.s)
                if (m.started && m.holder === undefined && m.acked === 0) {
                  // Its worker died before its first checkpoint: Redis never had its state.
                  const [r] = await w.tier.prepare([{ key: k }])
                  expect(r?._tag === "Left" && r.left._tag).toBe("KeyError")
                  m.started = false
                  m.frames = []
                }
                const [r] = await w.tier.prepare([{ key: k, start: !m.started }])
                expect(r).toEqual({ _tag: "Right", right: m.frames.length })
                m.started = true
                m.holder = slot
                runStep(w.store, [k], [c.x])
                const [a] = await w.tier.advanced([k])
                m.frames.push(c.x)
                expect(a).toEqual({ _tag: "Right", right: m.frames.length })
                if (m.frames.length - m.acked >= everySteps) m.acked = m.frames.length
                expect(stateOf(w.store, k)).toEqual(alone(m.frames))
              } else if (c.op === "evict") {
                const w = workers[c.slot] as Live
                w.clock.now += 2 * TTL
                const held = model.filter((m) => m.holder === c.slot)
                expect(w.store.sweep()).toBe(held.length)
                await w.store.flush()
                for (const m of held) {
                  m.acked = m.frames.length
                  m.holder = undefined
                }
                expect(w.tier.held()).toEqual([])
              } else if (c.op === "flush") {
                const w = workers[c.slot] as Live
                expect(await w.tier.flush()).toEqual({ _tag: "Right", right: undefined })
                for (const m of model) if (m.holder === c.slot) m.acked = m.frames.length
              } else if (c.op === "kill") {
                // No write-back, no release: the worker is gone; a new one takes its place.
                workers[c.slot] = live(everySteps)
                for (const m of model) {
                  if (m.holder !== c.slot) continue
                  m.frames = m.frames.slice(0, m.acked)
                  m.holder = undefined
                }
              } else {
                const m = model[c.s] as StreamModel
                if (m.holder === undefined) continue
                // Another worker, not waiting: the holder's lease refuses it, nothing changes.
                const rival = live(everySteps, 0)
                const [r] = await rival.tier.prepare([{ key: key(c.s) }])
                expect(r?._tag === "Left" && r.left._tag).toBe("LeaseError")
                expect(rival.store.has(key(c.s))).toBe(false)
                const holder = workers[m.holder] as Live
                expect(stateOf(holder.store, key(c.s))).toEqual(alone(m.frames))
              }
            }
            // Graceful shutdown, then a new worker loads every stream Redis has.
            for (const w of workers) {
              expect(await w.tier.close()).toEqual({ _tag: "Right", right: undefined })
            }
            for (const m of model) if (m.holder !== undefined) m.acked = m.frames.length
            const check = live(everySteps)
            for (const [s, m] of model.entries()) {
              const [r] = await check.tier.prepare([{ key: key(s) }])
              if (!m.started || (m.holder === undefined && m.acked === 0)) {
                expect(r?._tag === "Left" && r.left._tag, key(s)).toBe("KeyError")
                continue
              }
              expect(r, key(s)).toEqual({ _tag: "Right", right: m.frames.length })
              expect(stateOf(check.store, key(s))).toEqual(alone(m.frames))
            }
            await check.tier.close()
          },
        ),
        { seed: 1212, numRuns: 25 },
      )
    })
  })
})
