import { describe, expect, it } from "vitest"
import {
  HostTensor,
  SnapshotFormatError,
  type StateSpec,
  createStateSaver,
  decodeSnapshot,
  encodeSnapshot,
  hostBackend,
  orThrow,
} from "@statesaver/core"

const LIMIT = 32_768

/**
 * Writes safetensors bytes by hand (not with `encodeSnapshot`, which refuses too many leaves):
 * `leaves` leaf records of one float32 element each, of which the first `tensors` get a tensor.
 */
function crafted(leaves: number, tensors = leaves, dtype = "F32", data?: Uint8Array): Uint8Array {
  const records = Array.from({ length: leaves }, (_, i) => ({
    path: `layer_${i}.h`,
    batch_axis: 0,
    dtype: dtype === "BOOL" ? "bool" : "float32",
    spec: ["batch"],
    init: "zeros",
  }))
  const size = dtype === "BOOL" ? 1 : 4
  const header: Record<string, unknown> = {
    __metadata__: {
      format: "statesaver.snapshot",
      version: "1",
      batch_dim: "batch",
      batch_size: "1",
      leaves: JSON.stringify(records),
    },
  }
  for (let i = 0; i < tensors; i++) {
    header[`layer_${i}.h`] = { dtype, shape: [1], data_offsets: [i * size, (i + 1) * size] }
  }
  const json = new TextEncoder().encode(JSON.stringify(header))
  const body = data ?? new Uint8Array(tensors * size)
  const out = new Uint8Array(8 + json.byteLength + body.byteLength)
  new DataView(out.buffer).setBigUint64(0, BigInt(json.byteLength), true)
  out.set(json, 8)
  out.set(body, 8 + json.byteLength)
  return out
}

function formatError(r: ReturnType<typeof decodeSnapshot>): SnapshotFormatError {
  expect(r._tag).toBe("Left")
  if (r._tag !== "Left") throw new Error("decoded")
  expect(r.left).toBeInstanceOf(SnapshotFormatError)
  return r.left
}

describe("snapshot decoding bounds", () => {
  it("the hand-written snapshot decodes when it is valid (so the refusals below are about size)", () => {
    const snap = orThrow(decodeSnapshot(crafted(3)))
    expect(snap.leaves.map((l) => l.path)).toEqual(["layer_0.h", "layer_1.h", "layer_2.h"])
    expect(snap.tensors.get("layer_2.h")?.shape).toEqual([1])
  })

  it("refuses an 80,000-leaf snapshot with a SnapshotFormatError naming the leaf limit", () => {
    const bytes = crafted(80_000)
    expect(bytes.byteLength).toBeGreaterThan(8 * 1024 * 1024)
    const e = formatError(decodeSnapshot(bytes))
    expect(String(e.expected)).toContain(`at most ${LIMIT}`)
    expect(e.message).toContain("80000")
  })

  it("checks the leaves array's length before walking it", () => {
    // 80,000 leaf records but only 3 tensors: the record count alone is refused.
    const e = formatError(decodeSnapshot(crafted(80_000, 3)))
    expect(String(e.expected)).toBe(`at most ${LIMIT} leaves (the leaf limit)`)
    expect(e.actual).toBe("80000 leaves")
  })

  it("refuses a header above the header limit before parsing it", () => {
    const limit = LIMIT * 1024 + 64 * 1024
    const bytes = new Uint8Array(8 + limit + 8)
    new DataView(bytes.buffer).setBigUint64(0, BigInt(limit + 8), true)
    const e = formatError(decodeSnapshot(bytes))
    expect(String(e.expected)).toBe(`a header length of at most ${limit} bytes (the header limit)`)
  })

  it("refuses bool bytes other than 0 and 1", () => {
    const e = formatError(decodeSnapshot(crafted(2, 2, "BOOL", new Uint8Array([1, 2]))))
    expect(e.path).toBe("layer_1.h")
    expect(e.actual).toBe(2)
    expect(
      orThrow(decodeSnapshot(crafted(2, 2, "BOOL", new Uint8Array([1, 0])))).leaves,
    ).toHaveLength(2)
  })

  it("encodeSnapshot refuses more leaves than decodeSnapshot accepts, with a SnapshotFormatError", () => {
    const t = new HostTensor("float32", [1])
    const leaves = Array.from({ length: LIMIT + 1 }, (_, i) => ({
      path: `l${i}`,
      batchAxis: 0,
      dtype: "float32" as const,
      spec: ["batch"],
      init: "zeros" as const,
    }))
    const tensors = new Map(leaves.map((l) => [l.path, t]))
    let thrown: unknown
    try {
      encodeSnapshot({ batchDim: "batch", batchSize: 1, leaves, tensors })
    } catch (e) {
      thrown = e
    }
    expect(thrown).toBeInstanceOf(SnapshotFormatError)
    expect(String((thrown as SnapshotFormatError).expected)).toContain(`at most ${LIMIT}`)
  })

  it("encodeSnapshot refuses a leaf without a HostTensor or with one of another dtype", () => {
    const leaf = {
      path: "h",
      batchAxis: 0,
      dtype: "float32" as const,
      spec: ["batch"],
      init: "zeros" as const,
    }
    const call = (tensors: Map<string, HostTensor>) => () =>
      encodeSnapshot({ batchDim: "batch", batchSize: 1, leaves: [leaf], tensors })
    expect(call(new Map())).toThrowError(SnapshotFormatError)
    expect(call(new Map([["h", new HostTensor("int32", [1])]]))).toThrowError(SnapshotFormatError)
  })

  it("a valid 20,000-leaf snapshot round-trips through a saver", async () => {
    const spec: StateSpec = Object.fromEntries(
      Array.from({ length: 20_000 }, (_, i) => [`s${i}`, { shape: ["batch"], dtype: "int32" }]),
    )
    const saver = orThrow(createStateSaver({ spec, backend: hostBackend(), batchSize: 1 }))
    // Leaves are in sorted key order (s0, s1, s10, ...): each holds its own number.
    saver.leaves().forEach((t, i) => {
      const path = saver.spec.leaves[i]?.pathString ?? ""
      ;(t as HostTensor<"int32">).data[0] = Number(path.slice(1))
    })
    const bytes = orThrow(await saver.snapshot())
    const snap = orThrow(decodeSnapshot(bytes))
    expect(snap.leaves).toHaveLength(20_000)
    expect(snap.tensors.get("s19999")?.data).toEqual(new Int32Array([19_999]))
    const other = orThrow(createStateSaver({ spec, backend: hostBackend(), batchSize: 1 }))
    orThrow(other.restore(bytes))
    expect(other.leaves().map((t) => (t as HostTensor<"int32">).data[0])).toEqual(
      saver.leaves().map((t) => (t as HostTensor<"int32">).data[0]),
    )
    saver.dispose()
    other.dispose()
  })
})
