/**
 * Memory of 100,000 open streams of a 2-layer LSTM(128) state in a StateStore on the host
 * backend, against the raw state bytes. Run alone (it measures its own process):
 * `node --expose-gc --import tsx src/store-memory.ts [capacity|none]`.
 */
import { createStateStore, disposeTree, hostBackend, lstmSpec, orThrow } from "@statesaver/core"

const gc = (globalThis as { gc?: () => void }).gc
if (gc === undefined) throw new Error("run with node --expose-gc")
const arg = process.argv[2] ?? "100000"
const capacity = arg === "none" ? undefined : Number(arg)
const n = 100_000
const rowBytes = 4 * 128 * 4
// The keys exist before the store does: they are the caller's strings, not store overhead.
const keys = Array.from({ length: n }, (_, i) => `user-${i}`)
gc()
const before = process.memoryUsage()
const backend = hostBackend({ poolBytes: 0 })
const store = orThrow(
  createStateStore({
    spec: lstmSpec([128, 128]),
    backend,
    ...(capacity === undefined ? {} : { capacity }),
  }),
)
for (let i = 0; i < n; i += 1000)
  disposeTree(backend, orThrow(store.gather(keys.slice(i, i + 1000))))
gc()
gc()
const after = process.memoryUsage()
const buffers = after.arrayBuffers - before.arrayBuffers
const heap = after.heapUsed - before.heapUsed
const raw = n * rowBytes
const mib = (x: number) => `${(x / 2 ** 20).toFixed(1)} MiB`
console.log(
  `memory of ${store.size.toLocaleString("en")} streams, ${capacity === undefined ? "no capacity (the slab doubles)" : `capacity ${capacity.toLocaleString("en")}`}: ` +
    `${mib(buffers + heap)} (${mib(buffers)} slab + ${mib(heap)} index) for ${mib(raw)} of state: ` +
    `overhead ${(((buffers + heap) / raw - 1) * 100).toFixed(1)}%, ${store.slots.toLocaleString("en")} slots`,
)
store.dispose()
