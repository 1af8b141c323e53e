/**
 * StateStore on the host backend: gather + scatter throughput against `TypedArray.set` over the
 * same bytes, and the memory of 100,000 open streams against their raw state bytes.
 */
import { spawnSync } from "node:child_process"
import { fileURLToPath } from "node:url"
import { createStateStore, disposeTree, hostBackend, lstmSpec, orThrow } from "@statesaver/core"
import { type Comparison, compareSync, report } from "./harness.js"

const spec = lstmSpec([128, 128])
const ROW_BYTES = 4 * 128 * 4 // four [batch, 128] float32 leaves

export async function main(): Promise<Comparison[]> {
  console.log("\n## store: host backend, 2-layer LSTM(128) state per stream")
  const results: Comparison[] = []

  for (const [streams, order] of [
    [256, "in slot order"],
    [256, "shuffled"],
  ] as const) {
    const backend = hostBackend()
    const store = orThrow(createStateStore({ spec, backend, initialSlots: streams }))
    const keys = Array.from({ length: streams }, (_, i) => `stream-${i}`)
    disposeTree(backend, orThrow(store.gather(keys)))
    const batchKeys = order === "shuffled" ? [...keys].sort(() => Math.random() - 0.5) : keys
    const bytes = streams * ROW_BYTES
    const src = new Uint8Array(bytes)
    const dst = new Uint8Array(bytes)
    const c = compareSync(
      `gather + scatter ${streams} streams (${order}) vs 2x TypedArray.set`,
      () => {
        dst.set(src)
        src.set(dst)
      },
      () => {
        const batch = orThrow(store.gather(batchKeys))
        orThrow(store.scatter(batchKeys, batch))
      },
    )
    report(c, `  (${(bytes / 1024).toFixed(0)} KiB each way)`)
    results.push(c)
    if (order === "in slot order") {
      // The same bytes copied the way the store must (one span per leaf, each way), by hand:
      // what is left between this and the store is the store's and the backend's own work.
      const slabs = Array.from({ length: 4 }, () => new Float32Array(streams * 128))
      const batch = Array.from({ length: 4 }, () => new Float32Array(streams * 128))
      const perLeaf = compareSync(
        `gather + scatter ${streams} streams (${order}) vs 8x TypedArray.set, per leaf`,
        () => {
          for (let i = 0; i < 4; i++) (batch[i] as Float32Array).set(slabs[i] as Float32Array)
          for (let i = 0; i < 4; i++) (slabs[i] as Float32Array).set(batch[i] as Float32Array)
        },
        () => {
          const b = orThrow(store.gather(batchKeys))
          orThrow(store.scatter(batchKeys, b))
        },
      )
      report(perLeaf)
      results.push(perLeaf)
    }
    store.dispose()
  }

  // Memory is measured in a fresh process per configuration, so nothing else is on the heap.
  for (const capacity of ["100000", "none"]) {
    const child = spawnSync(
      process.execPath,
      [
        "--expose-gc",
        "--import",
        "tsx",
        fileURLToPath(new URL("./store-memory.ts", import.meta.url)),
        capacity,
      ],
      {
        encoding: "utf8",
      },
    )
    process.stdout.write(child.stdout)
    if (child.status !== 0) process.stderr.write(child.stderr)
  }
  return results
}
