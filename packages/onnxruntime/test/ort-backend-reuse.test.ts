// The onnxruntime backend reuses the memory of a CPU tensor `gather` made once it is freed: the
// next gather of the same size writes every row again (copied rows and init rows alike).
import { HostTensor, type LeafContext, init } from "@statesaver/core"
import * as ortNode from "onnxruntime-node"
import { describe, expect, it } from "vitest"
import { type OrtTensor, ortBackend } from "../src/index.js"

describe("ortBackend gather on the CPU reuses freed arrays", () => {
  it("a freed gather's array comes back to the next gather of its size, every element written again", () => {
    const backend = ortBackend({ ort: ortNode })
    const leaf: LeafContext = { path: "state", batchAxis: 1, init: init.constant(0.5) }
    // [2, 4, 3]: four rows of two runs of three elements each.
    const src = backend.fromHost(
      new HostTensor(
        "float32",
        [2, 4, 3],
        Float32Array.from({ length: 24 }, (_, i) => i),
      ),
      leaf,
    )
    const first = backend.gather(src, [3, 0], leaf)
    const kept = first.data as Float32Array
    kept.fill(-7)
    backend.dispose(first)
    const again = backend.gather(src, [1, null], leaf) as OrtTensor
    // The same memory, every element written: row 1 copied, the null row at init.
    expect(again.data).toBe(kept)
    expect(Array.from(again.data as Float32Array)).toEqual([
      3, 4, 5, 0.5, 0.5, 0.5, 15, 16, 17, 0.5, 0.5, 0.5,
    ])
    // Another size allocates anew; a tensor not made by gather is never reused.
    const three = backend.gather(src, [0, 1, 2], leaf)
    expect(three.data).not.toBe(kept)
    backend.dispose(again)
    backend.dispose(three)
    const srcData = src.data
    backend.dispose(src)
    const other = backend.fromHost(new HostTensor("float32", [2, 4, 3]), leaf)
    const all = backend.gather(other, [0, 1, 2, 3], leaf)
    expect(all.data).not.toBe(srcData)
    expect(Array.from(all.data as Float32Array)).toEqual(new Array(24).fill(0))
    backend.dispose(all)
    backend.dispose(other)
    expect(backend.liveTensors()).toBe(0)
  })
})
