// Worker processes for the multi-process tests (lstm-worker.mjs, forked), the small LSTM they
// serve, its frames, and the oracle: each stream run alone, batch 1, on a plain ORT session in
// the test process, its state fed by hand.
import { type ChildProcess, fork } from "node:child_process"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as ort from "onnxruntime-node"
import { lstm2 } from "../../../onnxruntime/test/helpers/models.js"
import type { RedisTierOptions } from "../../src/index.js"

export const INPUT = 8
export const HIDDEN = 32

/** Writes the 2-layer LSTM to a temporary file the workers load; `dispose` removes it. */
export function modelFile(): { path: string; bytes: Uint8Array; dispose(): void } {
  const dir = mkdtempSync(join(tmpdir(), "statesaver-lstm-"))
  const bytes = lstm2(INPUT, HIDDEN)
  const path = join(dir, "lstm2.onnx")
  writeFileSync(path, bytes)
  return { path, bytes, dispose: () => rmSync(dir, { recursive: true, force: true }) }
}

/** Frame `i` of stream `s`: deterministic values in [-1, 1). */
export function frameOf(s: number, i: number): Float32Array {
  const out = new Float32Array(INPUT)
  let h = (Math.imul(s + 1, 0x9e3779b1) ^ Math.imul(i + 1, 0x85ebca77)) >>> 0
  for (let n = 0; n < INPUT; n++) {
    h = Math.imul(h ^ (h >>> 15), 0x2c1b3c6d) >>> 0
    h = (h ^ (h >>> 12)) >>> 0
    out[n] = (h / 2 ** 32) * 2 - 1
  }
  return out
}

/** The reference: each stream alone, batch 1, state carried by hand between `run` calls. */
export class Oracle {
  private constructor(private readonly session: ort.InferenceSession) {}

  static async create(bytes: Uint8Array): Promise<Oracle> {
    return new Oracle(
      await ort.InferenceSession.create(bytes, { intraOpNumThreads: 1, interOpNumThreads: 1 }),
    )
  }

  /** The output `Y` of every step of a stream fed `frames` from zeros. */
  async outputs(frames: readonly Float32Array[]): Promise<Float32Array[]> {
    const state: Record<string, ort.Tensor> = {}
    for (let l = 0; l < 2; l++) {
      for (const n of ["h", "c"]) {
        state[`initial_${n}.${l}`] = new ort.Tensor("float32", new Float32Array(HIDDEN), [
          1,
          1,
          HIDDEN,
        ])
      }
    }
    const ys: Float32Array[] = []
    for (const x of frames) {
      const out = await this.session.run({
        ...state,
        X: new ort.Tensor("float32", x, [1, 1, INPUT]),
      })
      ys.push(out["Y"]?.data as Float32Array)
      for (let l = 0; l < 2; l++) {
        for (const n of ["h", "c"]) {
          state[`initial_${n}.${l}`] = out[`Y_${n}.${l}`] as ort.Tensor
        }
      }
    }
    return ys
  }
}

/** A worker's answer to one push. */
export type Reply =
  | { readonly step: number; readonly y: Float32Array; readonly error?: undefined }
  | { readonly error: string; readonly message: string }

export interface WorkerConfig {
  readonly model: string
  readonly url?: string
  readonly rootNodes?: readonly { url: string }[]
  readonly tier: Partial<Omit<RedisTierOptions, "client" | "onMetric" | "clock">>
  readonly maxBatch?: number
}

/** A pushed frame whose worker died before it answered. */
export class WorkerDied extends Error {}

const WORKER = join(import.meta.dirname, "lstm-worker.mjs")

/** One forked worker process. */
export class WorkerProcess {
  readonly #child: ChildProcess
  readonly #pending = new Map<number, { resolve(r: Reply): void; reject(e: Error): void }>()
  #next = 0
  #dead = false
  readonly exited: Promise<void>

  private constructor(
    child: ChildProcess,
    readonly name: string,
  ) {
    this.#child = child
    this.exited = new Promise((resolve) => {
      child.once("exit", () => {
        this.#dead = true
        for (const p of this.#pending.values()) p.reject(new WorkerDied(`${name} exited`))
        this.#pending.clear()
        resolve()
      })
    })
    // A send racing the worker's death fails in the send callback (EPIPE); nothing else to do.
    child.on("error", () => undefined)
    child.on("message", (m: { id?: number }) => {
      if (m.id === undefined) return
      const p = this.#pending.get(m.id)
      this.#pending.delete(m.id)
      p?.resolve(m as Reply)
    })
  }

  static async start(name: string, config: WorkerConfig): Promise<WorkerProcess> {
    const child = fork(
      WORKER,
      [JSON.stringify({ ...config, input: INPUT, owner: name, maxBatch: config.maxBatch ?? 64 })],
      {
        serialization: "advanced",
        stdio: ["ignore", "inherit", "inherit", "ipc"],
        env: { ...process.env, ORT_DISABLE_TELEMETRY: "1" },
      },
    )
    const ready = new Promise<void>((resolve, reject) => {
      child.once("message", () => resolve())
      child.once("exit", (code) => reject(new Error(`${name} exited before ready (${code})`)))
    })
    const w = new WorkerProcess(child, name)
    await ready
    return w
  }

  get dead(): boolean {
    return this.#dead
  }

  /** In-flight pushes. */
  get pending(): number {
    return this.#pending.size
  }

  push(key: string, x: Float32Array, start: boolean): Promise<Reply> {
    if (this.#dead) return Promise.reject(new WorkerDied(`${this.name} is dead`))
    const id = this.#next++
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject })
      this.#child.send({ type: "push", id, key, x, start }, (error) => {
        if (error === null) return
        this.#pending.delete(id)
        reject(new WorkerDied(`${this.name}: ${error.message}`))
      })
    })
  }

  /** Graceful: drains the queue and writes every held stream back, then exits. */
  async close(): Promise<string | undefined> {
    if (this.#dead) return undefined
    const id = this.#next++
    const r = new Promise<Reply>((resolve, reject) => {
      this.#pending.set(id, { resolve, reject })
      this.#child.send({ type: "close", id })
    })
    const reply = await r
    await this.exited
    return reply.error
  }

  /** SIGKILL: no write-back, no lease released. */
  async kill(): Promise<void> {
    if (this.#dead) return
    this.#dead = true
    this.#child.kill("SIGKILL")
    await this.exited
  }
}

export async function startWorkers(n: number, config: WorkerConfig): Promise<WorkerProcess[]> {
  return Promise.all(
    Array.from({ length: n }, (_, i) =>
      WorkerProcess.start(`w${i}-${process.pid}-${Date.now()}`, config),
    ),
  )
}
