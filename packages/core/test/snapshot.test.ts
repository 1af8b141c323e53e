import { spawnSync } from "node:child_process"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import {
  HostTensor,
  SnapshotFormatError,
  createStateSaver,
  decodeSnapshot,
  hostBackend,
  hostTensor,
  init,
  lstmSpec,
  orThrow,
  type StateSpec,
} from "@statesaver/core"

const spec: StateSpec = {
  lstm: lstmSpec([3, 2], { layout: "time-major" }),
  step: { shape: ["batch"], dtype: "int64", init: init.constant(7n) },
  half: { shape: ["batch", 2], dtype: "float16", init: init.constant(1.5) },
  mask: { shape: ["batch"], dtype: "bool" },
}

async function seededSnapshot(): Promise<{ bytes: Uint8Array; saver: ReturnType<typeof make> }> {
  const saver = make()
  const tree = saver.state() as { lstm: HostTensor[][] }
  const h0 = tree.lstm[0]?.[0] as HostTensor
  ;(h0.data as Float32Array).set([0.5, -1.25, 3, 4, 5, 6])
  const bytes = orThrow(await saver.snapshot())
  return { bytes, saver }
}

function make() {
  return orThrow(createStateSaver({ spec, backend: hostBackend(), batchSize: 2 }))
}

describe("snapshots", () => {
  it("use the safetensors layout: u64 LE header length, JSON header, raw little-endian data", async () => {
    const { bytes } = await seededSnapshot()
    const n = Number(new DataView(bytes.buffer).getBigUint64(0, true))
    expect(n % 8).toBe(0)
    const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n))) as Record<
      string,
      any
    >
    expect(header["__metadata__"].format).toBe("statesaver.snapshot")
    expect(header["__metadata__"].version).toBe("1")
    expect(header["__metadata__"].batch_dim).toBe("batch")
    expect(header["__metadata__"].batch_size).toBe("2")
    for (const v of Object.values(header["__metadata__"])) expect(typeof v).toBe("string")
    const leaves = JSON.parse(header["__metadata__"].leaves) as {
      path: string
      batch_axis: number
    }[]
    expect(leaves.map((l) => l.path)).toEqual([
      "half",
      "lstm[0][0]",
      "lstm[0][1]",
      "lstm[1][0]",
      "lstm[1][1]",
      "mask",
      "step",
    ])
    expect(leaves.find((l) => l.path === "lstm[0][0]")?.batch_axis).toBe(1)
    expect(header["lstm[0][0]"]).toEqual({
      dtype: "F32",
      shape: [1, 2, 3],
      data_offsets: expect.any(Array),
    })
    expect(header["step"].dtype).toBe("I64")
    expect(header["half"].dtype).toBe("F16")
    expect(header["mask"].dtype).toBe("BOOL")
    const [b, e] = header["lstm[0][0]"].data_offsets as [number, number]
    const data = new Float32Array(bytes.slice(8 + n + b, 8 + n + e).buffer)
    expect(Array.from(data)).toEqual([0.5, -1.25, 3, 4, 5, 6])
  })

  it("can be read by a plain Python reader (struct + json, as safetensors does)", async () => {
    const python = spawnSync("python3", ["--version"])
    if (python.status !== 0) {
      console.warn("SKIPPED: python3 is not installed; the Python reading check did not run")
      if (process.env["CI"] === "true") throw new Error("python3 is required in CI")
      return
    }
    const { bytes } = await seededSnapshot()
    const script = `
import sys, json, struct
raw = sys.stdin.buffer.read()
(n,) = struct.unpack("<Q", raw[:8])
header = json.loads(raw[8:8 + n])
base = 8 + n
out = {}
for name, info in header.items():
    if name == "__metadata__":
        continue
    b, e = info["data_offsets"]
    chunk = raw[base + b: base + e]
    fmt = {"F32": "f", "I64": "q", "F16": "e", "BOOL": "?"}[info["dtype"]]
    size = struct.calcsize(fmt)
    out[name] = list(struct.unpack("<%d%s" % (len(chunk) // size, fmt), chunk))
print(json.dumps({"meta": header["__metadata__"]["format"], "h0": out["lstm[0][0]"], "step": out["step"], "half": out["half"], "mask": out["mask"]}))
`
    const run = spawnSync("python3", ["-c", script], { input: bytes })
    expect(run.stderr.toString()).toBe("")
    const parsed = JSON.parse(run.stdout.toString()) as Record<string, unknown>
    expect(parsed).toEqual({
      meta: "statesaver.snapshot",
      h0: [0.5, -1.25, 3, 4, 5, 6],
      step: [7, 7],
      half: [1.5, 1.5, 1.5, 1.5],
      mask: [false, false],
    })
  })

  it("restore rejects a snapshot of another spec, naming the leaf", async () => {
    const { bytes } = await seededSnapshot()
    const other = orThrow(
      createStateSaver({
        spec: { ...spec, mask: { shape: ["batch", 2], dtype: "bool" } },
        backend: hostBackend(),
        batchSize: 2,
      }),
    )
    const r = other.restore(bytes)
    expect(r._tag === "Left" && r.left._tag).toBe("ShapeMismatchError")
    expect(r._tag === "Left" && r.left.path).toBe("mask")
    const missing = orThrow(
      createStateSaver({
        spec: { ...spec, extra: { shape: ["batch"], dtype: "int32" } },
        backend: hostBackend(),
        batchSize: 2,
      }),
    )
    const r2 = missing.restore(bytes)
    expect(r2._tag === "Left" && r2.left._tag).toBe("SnapshotFormatError")
    expect(r2._tag === "Left" && r2.left.path).toBe("extra")
  })

  it("refuses a header length larger than the input before decoding anything", () => {
    const bytes = new Uint8Array(16)
    new DataView(bytes.buffer).setBigUint64(0, 2n ** 60n, true)
    const r = decodeSnapshot(bytes)
    expect(r._tag).toBe("Left")
    if (r._tag === "Left") {
      expect(r.left).toBeInstanceOf(SnapshotFormatError)
      expect(r.left.actual).toBe(`${2n ** 60n} bytes`)
    }
  })

  it("refuses data offsets that overlap, leave gaps or claim more than the shape", async () => {
    const { bytes } = await seededSnapshot()
    const n = Number(new DataView(bytes.buffer).getBigUint64(0, true))
    const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n))) as Record<
      string,
      any
    >
    const rewrite = (h: Record<string, any>): Uint8Array => {
      const json = new TextEncoder().encode(JSON.stringify(h))
      const out = new Uint8Array(8 + json.length + bytes.length - 8 - n)
      new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true)
      out.set(json, 8)
      out.set(bytes.subarray(8 + n), 8 + json.length)
      return out
    }
    const overlap = structuredClone(header)
    overlap["step"].data_offsets = overlap["mask"].data_offsets
    const big = structuredClone(header)
    big["lstm[0][0]"].shape = [1, 2, 4]
    const huge = structuredClone(header)
    huge["lstm[0][0]"].shape = [2 ** 40, 2 ** 40, 2 ** 40]
    for (const h of [overlap, big, huge]) {
      const r = decodeSnapshot(rewrite(h))
      expect(r._tag).toBe("Left")
      expect(r._tag === "Left" && r.left._tag).toBe("SnapshotFormatError")
    }
  })

  it("fuzz: 10,000 mutated snapshots give a SnapshotFormatError or a valid restore, never another error or a partial change", async () => {
    const { bytes, saver } = await seededSnapshot()
    const baseline = orThrow(await saver.snapshot())
    let rejected = 0
    let accepted = 0
    const mutation = fc.oneof(
      fc.record({
        kind: fc.constant("flip" as const),
        at: fc.nat(),
        value: fc.integer({ min: 0, max: 255 }),
      }),
      fc.record({ kind: fc.constant("truncate" as const), at: fc.nat() }),
      fc.record({ kind: fc.constant("extend" as const), extra: fc.uint8Array({ maxLength: 32 }) }),
      fc.record({
        kind: fc.constant("length" as const),
        value: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
      }),
      fc.record({ kind: fc.constant("random" as const), data: fc.uint8Array({ maxLength: 600 }) }),
    )
    fc.assert(
      fc.property(fc.array(mutation, { minLength: 1, maxLength: 3 }), (mutations) => {
        let b = bytes.slice()
        for (const m of mutations) {
          if (m.kind === "flip") b[m.at % b.length] = m.value
          else if (m.kind === "truncate") b = b.slice(0, m.at % (b.length + 1))
          else if (m.kind === "extend") b = new Uint8Array([...b, ...m.extra])
          else if (m.kind === "length" && b.length >= 8)
            new DataView(b.buffer).setBigUint64(0, m.value, true)
          else if (m.kind === "random") b = m.data
        }
        const decoded = decodeSnapshot(b)
        if (decoded._tag === "Left") expect(decoded.left).toBeInstanceOf(SnapshotFormatError)
        const target = make()
        orThrow(target.restore(baseline))
        const before = (target.state() as { lstm: HostTensor[][] }).lstm[0]?.[0]?.data.slice()
        let result
        try {
          result = target.restore(b)
        } catch (e) {
          throw new Error(`restore threw instead of returning a Left: ${String(e)}`, { cause: e })
        }
        if (result._tag === "Left") {
          rejected++
          // Bytes that decode are a valid snapshot of some other state: only then may the spec checks speak.
          expect(result.left._tag).toBe(
            decoded._tag === "Left" ? "SnapshotFormatError" : result.left._tag,
          )
          if (decoded._tag === "Right") {
            expect([
              "ShapeMismatchError",
              "DTypeMismatchError",
              "BatchSizeMismatchError",
              "SpecError",
              "SnapshotFormatError",
            ]).toContain(result.left._tag)
          }
          expect((target.state() as { lstm: HostTensor[][] }).lstm[0]?.[0]?.data).toEqual(before)
        } else {
          accepted++
        }
      }),
      { numRuns: 10_000, seed: 42 },
    )
    expect(rejected + accepted).toBe(10_000)
    expect(rejected).toBeGreaterThan(9_000)
  })

  it("round-trips float16 words and int64 values exactly", async () => {
    const saver = make()
    const half = hostTensor("float16", [2, 2], [65504, -0.0001, 1 / 3, -2])
    const s = saver.state() as Record<string, unknown>
    orThrow(
      saver.save({
        ...s,
        half,
        step: hostTensor("int64", [2], [2n ** 62n, -(2n ** 63n)]),
      } as never),
    )
    const bytes = orThrow(await saver.snapshot())
    const other = make()
    orThrow(other.restore(bytes))
    const o = other.state() as { half: HostTensor; step: HostTensor }
    expect(Array.from(o.half.data as Uint16Array)).toEqual(Array.from(half.data))
    expect(Array.from(o.step.data as BigInt64Array)).toEqual([2n ** 62n, -(2n ** 63n)])
    expect(new HostTensor("float32", [0]).data.length).toBe(0)
  })
})
