import { describe, expect, it } from "vitest"
import {
  HostTensor,
  createStateSaver,
  createStateStore,
  decodeSnapshot,
  encodeSnapshot,
  hostBackend,
  hostTensor,
  lstmSpec,
  orThrow,
  type StateSpec,
} from "@statesaver/core"

const spec: StateSpec = lstmSpec([3])

const saverWith = (value: number) => {
  const saver = orThrow(createStateSaver({ spec, backend: hostBackend(), batchSize: 2 }))
  const filled = () => hostTensor("float32", [2, 3], new Array(6).fill(value))
  orThrow(saver.save([[filled(), filled()]]))
  return saver
}

const leftOf = <L>(e: { _tag: "Left"; left: L } | { _tag: "Right" }): L => {
  if (e._tag !== "Left") throw new Error("expected a Left")
  return e.left
}

/** The raw `__metadata__` map of snapshot bytes, read without statesaver's decoder. */
function rawMetadata(bytes: Uint8Array): Record<string, unknown> {
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true))
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n))) as {
    __metadata__: Record<string, unknown>
  }
  return header.__metadata__
}

describe("snapshot metadata", () => {
  it("travels with a saver's snapshot and comes back from restore", async () => {
    const saver = saverWith(2)
    const metadata = { frame: "1200", segmenter: '{"inSpeech":true}', "": "empty key" }
    const bytes = orThrow(await saver.snapshot({ metadata }))
    // Stored as plain safetensors __metadata__ strings, readable by any safetensors reader.
    expect(rawMetadata(bytes)).toMatchObject(metadata)
    expect(orThrow(decodeSnapshot(bytes)).metadata).toEqual(metadata)
    const other = saverWith(0)
    expect(orThrow(other.restore(bytes))).toEqual(metadata)
    expect(Array.from(other.leaves()[0]?.data as Float32Array)).toEqual(new Array(6).fill(2))
  })

  it("is {} when a snapshot has none, and a snapshot without it is unchanged in size", async () => {
    const saver = saverWith(1)
    const plain = orThrow(await saver.snapshot())
    expect(orThrow(saver.restore(plain))).toEqual({})
    expect(orThrow(await saver.snapshot({}))).toEqual(plain)
    expect(orThrow(await saver.snapshot({ metadata: {} }))).toEqual(plain)
  })

  it("travels with a store's stream and its onEvict snapshot restores it", async () => {
    const store = orThrow(createStateStore({ spec, backend: hostBackend(), capacity: 2 }))
    const rows = orThrow(store.gather(["a"]))
    const [[h, c]] = rows as HostTensor[][] as [[HostTensor, HostTensor]]
    ;(h.data as Float32Array).fill(5)
    orThrow(store.scatter(["a"], [[h, c]]))
    const bytes = orThrow(await store.snapshot("a", { metadata: { position: "7" } }))
    expect(orThrow(store.restore("b", bytes))).toEqual({ position: "7" })
    const b = orThrow(await store.snapshot("b"))
    expect(orThrow(decodeSnapshot(b)).tensors.get("[0][0]")?.data).toEqual(
      new Float32Array(3).fill(5),
    )
    store.dispose()
  })

  it.each([
    [
      "a statesaver key",
      { version: "2" },
      "metadata.version",
      "a key other than format, version, batch_dim, batch_size, leaves",
    ],
    ["a non-string value", { frame: 1200 }, "metadata.frame", "a string"],
    ["a value that is not a record", ["a"], "metadata", "a record of strings"],
  ])(
    "refuses %s with a SnapshotFormatError naming it, state unchanged",
    async (_, metadata, path, expected) => {
      const saver = saverWith(3)
      const before = orThrow(await saver.snapshot())
      const e = leftOf(await saver.snapshot({ metadata: metadata as never }))
      expect(e).toMatchObject({ _tag: "SnapshotFormatError", path, expected })
      expect(orThrow(await saver.snapshot())).toEqual(before)
      const store = orThrow(createStateStore({ spec, backend: hostBackend(), capacity: 1 }))
      orThrow(store.gather(["k"]))
      expect(leftOf(await store.snapshot("k", { metadata: metadata as never }))).toMatchObject({
        _tag: "SnapshotFormatError",
        path,
      })
      store.dispose()
    },
  )

  it("encodeSnapshot throws and decodeSnapshot refuses metadata that is not strings", async () => {
    const saver = saverWith(1)
    const decoded = orThrow(decodeSnapshot(orThrow(await saver.snapshot())))
    expect(() => encodeSnapshot({ ...decoded, metadata: { leaves: "x" } })).toThrow(
      expect.objectContaining({ _tag: "SnapshotFormatError", path: "metadata.leaves" }),
    )
    // Forge bytes whose __metadata__ holds a number: a foreign writer's mistake.
    const bytes = encodeSnapshot({ ...decoded, metadata: { frame: "12" } })
    const forged = bytes.slice()
    const from = new TextEncoder().encode('"frame":"12"')
    const at = forged.findIndex((_, i) => from.every((b, j) => forged[i + j] === b))
    forged.set(new TextEncoder().encode('"frame":12  '), at)
    expect(leftOf(decodeSnapshot(forged))).toMatchObject({
      _tag: "SnapshotFormatError",
      path: "metadata.frame",
      expected: "a string",
      actual: 12,
    })
  })

  it("a snapshot of another model says which leaves it holds", async () => {
    const vad = orThrow(
      createStateSaver({
        spec: { state: { shape: [2, "batch", 4], dtype: "float32" } },
        backend: hostBackend(),
        batchSize: 2,
      }),
    )
    const bytes = orThrow(await vad.snapshot())
    const e = leftOf(saverWith(0).restore(bytes))
    expect(e).toMatchObject({ _tag: "SnapshotFormatError", path: "[0][0]" })
    expect(e.message).toContain("the snapshot holds state")
  })
})

// Keeps HostTensor referenced as a value for the cast above.
void HostTensor
