// StreamingSession.sweep and the sweepEveryMs timer: idle streams are evicted on a quiet server,
// with an injected clock (real timers only drive the sweeps; no assertion is about time).
import { type StreamKey, orThrow } from "@statesaver/core"
import * as ortNode from "onnxruntime-node"
import { describe, expect, it, vi } from "vitest"
import { type OrtTensor, createStreamingSession, ortBackend } from "../src/index.js"
import type { Runtime } from "./helpers/harness.js"
import { rnnCell } from "./helpers/models.js"
import { seededFloats } from "./helpers/onnx-builder.js"

const ort = ortNode as unknown as Runtime
const INPUT = 3
const HIDDEN = 4
const TTL = 1000
const model = rnnCell(INPUT, HIDDEN, 2)
const x = (seed: number): OrtTensor =>
  new ort.Tensor("float32", seededFloats(INPUT, seed), [1, INPUT])

/** A clock the test moves by hand, counting its reads (each sweep reads it once). */
function fakeClock() {
  const clock = { now: 0, reads: 0, read: () => (clock.reads++, clock.now) }
  return clock
}

/** Resolves once `cond()` holds, checking every few milliseconds. */
const until = (cond: () => boolean): Promise<void> =>
  new Promise((resolve) => {
    const tick = () => (cond() ? resolve() : setTimeout(tick, 2))
    tick()
  })

async function open(extra: { sweepEveryMs?: number } = {}) {
  const session = await ort.InferenceSession.create(model)
  const clock = fakeClock()
  const evicted: [StreamKey, string][] = []
  const backend = ortBackend({ ort })
  const streaming = orThrow(
    createStreamingSession({
      session,
      ort,
      backend,
      idleTtlMs: TTL,
      clock: clock.read,
      onEvict: (key, _snapshot, reason) => {
        evicted.push([key, reason])
      },
      ...extra,
    }),
  )
  const step = async (keys: StreamKey[]) => {
    const outs = orThrow(
      await streaming.run(keys.map((key, i) => ({ key, feeds: { x: x(i + 1) } }))),
    )
    for (const o of outs.values()) for (const t of Object.values(o)) t.dispose()
  }
  return { streaming, backend, clock, evicted, step }
}

describe("StreamingSession.sweep (onnxruntime-node)", () => {
  it("evicts exactly the streams idle past the TTL, through onEvict, and returns how many", async () => {
    const { streaming, backend, clock, evicted, step } = await open()
    await step(["a", "b"])
    clock.now = 600
    await step(["b"])
    clock.now = TTL // "a" idle for exactly the TTL: kept
    expect(streaming.sweep()).toEqual({ _tag: "Right", right: 0 })
    expect(streaming.size).toBe(2)
    clock.now = TTL + 1
    expect(streaming.sweep()).toEqual({ _tag: "Right", right: 1 })
    await streaming.flush()
    expect(evicted).toEqual([["a", "idle"]])
    expect(streaming.size).toBe(1)
    clock.now = 600 + TTL + 1
    expect(streaming.sweep()).toEqual({ _tag: "Right", right: 1 })
    await streaming.flush()
    expect(evicted).toEqual([
      ["a", "idle"],
      ["b", "idle"],
    ])
    expect(streaming.size).toBe(0)
    streaming.dispose()
    expect(backend.liveTensors()).toBe(0)
  })

  it("is refused with a BusyError while a run is in flight (nothing evicted), and a DisposedError after dispose", async () => {
    const { streaming, clock, evicted, step } = await open()
    await step(["a"])
    clock.now = 500
    await step(["b"])
    clock.now = 1200
    const pending = streaming.run([{ key: "a", feeds: { x: x(9) } }])
    const during = streaming.sweep()
    expect(during._tag).toBe("Left")
    if (during._tag === "Left") {
      expect(during.left._tag).toBe("BusyError")
      expect(during.left.message).toMatch(/^sweep: a run is still in flight/)
    }
    const outs = orThrow(await pending)
    for (const o of outs.values()) for (const t of Object.values(o)) t.dispose()
    expect(streaming.size).toBe(2)
    clock.now = 1600 // "b" (used at 500) is idle past the TTL, "a" (used at 1200) is not
    expect(streaming.sweep()).toEqual({ _tag: "Right", right: 1 })
    await streaming.flush()
    expect(evicted).toEqual([["b", "idle"]])
    streaming.dispose()
    const after = streaming.sweep()
    expect(after._tag === "Left" && after.left._tag).toBe("DisposedError")
  })
})

describe("sweepEveryMs (onnxruntime-node)", () => {
  it("evicts an idle stream on a quiet server once the clock passed the TTL, and stops on dispose", async () => {
    const started = vi.spyOn(globalThis, "setInterval")
    const cleared = vi.spyOn(globalThis, "clearInterval")
    const { streaming, backend, clock, evicted, step } = await open({ sweepEveryMs: 2 })
    expect(started).toHaveBeenCalledTimes(1)
    const timer = started.mock.results[0]?.value as NodeJS.Timeout
    expect(timer.hasRef()).toBe(false) // unref'd: it keeps no process alive
    await step(["a"])
    const reads = clock.reads
    await until(() => clock.reads >= reads + 3) // three sweeps ran before the TTL
    expect(evicted).toEqual([])
    expect(streaming.size).toBe(1)
    clock.now = TTL + 1 // no call is made: only the timer can evict
    await until(() => evicted.length > 0)
    expect(evicted).toEqual([["a", "idle"]])
    expect(streaming.size).toBe(0)
    expect(cleared).not.toHaveBeenCalledWith(timer)
    streaming.dispose()
    expect(cleared).toHaveBeenCalledWith(timer) // the timer stops with the session
    expect(backend.liveTensors()).toBe(0)
    started.mockRestore()
    cleared.mockRestore()
  })

  it("refuses a sweepEveryMs that is not a positive finite number, or one without idleTtlMs", async () => {
    const session = await ort.InferenceSession.create(model)
    const backend = ortBackend({ ort })
    for (const bad of [0, -5, Number.NaN, Infinity, "10"]) {
      const r = createStreamingSession({
        session,
        ort,
        backend,
        idleTtlMs: TTL,
        sweepEveryMs: bad as number,
      })
      expect(r._tag === "Left" && [r.left._tag, r.left.path, r.left.actual]).toEqual([
        "OptionError",
        "sweepEveryMs",
        bad,
      ])
    }
    const r = createStreamingSession({ session, ort, backend, sweepEveryMs: 100 })
    expect(r._tag === "Left" && [r.left._tag, r.left.path, r.left.actual]).toEqual([
      "OptionError",
      "idleTtlMs",
      undefined,
    ])
    expect(backend.liveTensors()).toBe(0)
  })
})
