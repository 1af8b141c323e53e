/**
 * The batcher's and the Redis tier's metric events exported with prom-client: one listener per
 * source, each event mapped to a counter, gauge or histogram of a registry.
 */
import type { BatcherEvent } from "@statesaver/onnxruntime"
import type { TierEvent } from "@statesaver/redis"
import { Counter, Gauge, Histogram, Registry } from "prom-client"

const ms = [0.5, 1, 2, 5, 10, 20, 50, 100, 250, 1000]

/** A registry with the serving metrics, and the two listeners that feed it. */
export function vadMetrics(labels: Record<string, string> = {}) {
  const registry = new Registry()
  registry.setDefaultLabels(labels)
  const queueDepth = new Gauge({
    name: "vad_queue_depth",
    help: "Pushes waiting",
    registers: [registry],
  })
  const batchSize = new Histogram({
    name: "vad_batch_size",
    help: "Streams per model run",
    buckets: [1, 2, 4, 8, 16, 32, 64],
    registers: [registry],
  })
  const waitMs = new Histogram({
    name: "vad_wait_ms",
    help: "Longest queue wait in a batch",
    buckets: ms,
    registers: [registry],
  })
  const runMs = new Histogram({
    name: "vad_run_ms",
    help: "Model run time per batch",
    buckets: ms,
    registers: [registry],
  })
  const pushMs = new Histogram({
    name: "vad_push_ms",
    help: "Push latency, queue to result",
    buckets: ms,
    registers: [registry],
  })
  const held = new Gauge({
    name: "vad_streams_held",
    help: "Streams held by this worker",
    registers: [registry],
  })
  const evictions = new Counter({
    name: "vad_evictions_total",
    help: "Streams evicted",
    labelNames: ["reason"],
    registers: [registry],
  })
  const loads = new Counter({
    name: "vad_loads_total",
    help: "Streams loaded from Redis",
    registers: [registry],
  })
  const writeBacks = new Counter({
    name: "vad_write_backs_total",
    help: "Streams written to Redis",
    labelNames: ["reason"],
    registers: [registry],
  })
  const conflicts = new Counter({
    name: "vad_lease_conflicts_total",
    help: "Streams leased elsewhere or fenced",
    registers: [registry],
  })
  const errors = new Counter({
    name: "vad_errors_total",
    help: "Errors by tag",
    labelNames: ["tag"],
    registers: [registry],
  })

  const onBatcher = (e: BatcherEvent): void => {
    switch (e.type) {
      case "queue":
        queueDepth.set(e.depth)
        break
      case "batch":
        batchSize.observe(e.size)
        waitMs.observe(e.waitMs)
        runMs.observe(e.runMs)
        break
      case "push":
        pushMs.observe(e.ms)
        if (e.error !== undefined) errors.inc({ tag: e.error })
        break
      case "streams":
        held.set(e.held)
        break
    }
  }
  const onTier = (e: TierEvent): void => {
    switch (e.type) {
      case "load":
        loads.inc(e.found)
        break
      case "writeBack":
        writeBacks.inc({ reason: e.reason }, e.streams)
        break
      case "leaseConflict":
        conflicts.inc()
        break
      case "evicted":
        evictions.inc({ reason: e.reason })
        break
      case "held":
        held.set(e.streams)
        break
      case "error":
        errors.inc({ tag: e.tag })
        break
    }
  }
  return { registry, onBatcher, onTier }
}
