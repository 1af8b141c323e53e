import { describe, expect } from "vitest"
import type { LeafContext, StateBackend } from "../backend.js"
import type { BackendError } from "../errors.js"
import { HostTensor } from "../host-tensor.js"
import { type StateSaver, createStateSaver } from "../state-saver.js"
import type { StateTree } from "../state-tree.js"
import {
  BATCH,
  distinctState,
  expectLeft,
  expectLive,
  expectTensor,
  kitSpec,
  read,
  referenceGather,
  snapshotBytes,
  unflattenLike,
  unwrap,
} from "./fixtures.js"
import type { KitTest } from "./harness.js"
import { seeded } from "./saver.js"

type Settled = { _tag: "Left" | "Right" }

/**
 * Every error path of `StateSaver` on a seeded float32 saver: the error's tag and path, and the
 * state's bytes, batch size and live-tensor count unchanged. Then a primitive failure injected
 * mid-`select`: a `BackendError` naming the leaf, with everything already gathered freed; or,
 * for a backend with `reorder`, with the leaves before it reordered and the others unchanged.
 */
export function defineFaultTests<T, In>(test: KitTest<T, In>): void {
  describe("errors leave the state unchanged and leak nothing", () => {
    /** Runs `act` on a seeded float32 saver and checks tag, path, state bytes and live count. */
    const unchanged = (
      name: string,
      tag: string,
      path: string,
      act: (saver: StateSaver<T, In>) => Promise<Settled> | Settled,
    ) =>
      test(name, async (kit) => {
        const { saver } = seeded(kit, "float32")
        const before = await snapshotBytes(saver)
        const live = kit.live()
        const err = expectLeft((await act(saver)) as Parameters<typeof expectLeft>[0], tag)
        expect(err.path).toBe(path)
        if (path !== "") expect(err.message).toContain(path)
        expect(await snapshotBytes(saver)).toEqual(before)
        expect(saver.batchSize).toBe(BATCH)
        expectLive(kit.live(), live, `the refused call (${name})`)
        saver.dispose()
      })

    /**
     * Saves fresh float32 tensors for every leaf with one leaf replaced by `patch` or the tree
     * reshaped, then frees what it made: a refused save must not have taken any of it.
     */
    const rejectedSave = (
      saver: StateSaver<T, In>,
      patch: (path: string) => HostTensor | undefined,
      reshape: (tree: Record<string, unknown>) => unknown = (tree) => tree,
    ) => {
      const values = distinctState(saver.spec.spec, BATCH, 7)
      const made = saver.spec.leaves.map((leaf) =>
        saver.backend.fromHost(
          patch(leaf.pathString) ?? (values.get(leaf.pathString) as HostTensor),
          { path: leaf.pathString, batchAxis: leaf.batchAxis, init: leaf.init },
        ),
      )
      const tree = unflattenLike(saver, made) as Record<string, unknown>
      const r = saver.save(reshape(tree) as StateTree<T>)
      for (const t of made) saver.backend.dispose(t)
      return r
    }

    unchanged(
      "save rejects a missing leaf (StructureMismatchError)",
      "StructureMismatchError",
      "b",
      (saver) =>
        rejectedSave(
          saver,
          () => undefined,
          (tree) => ({ ...tree, b: [(tree["b"] as T[])[0]] }),
        ),
    )
    unchanged(
      "save rejects a value that is not a live tensor",
      "StructureMismatchError",
      "a",
      (saver) =>
        rejectedSave(
          saver,
          () => undefined,
          (tree) => ({ ...tree, a: "not a tensor" }),
        ),
    )
    unchanged(
      "save rejects a wrong dtype (DTypeMismatchError)",
      "DTypeMismatchError",
      "b[1]",
      (saver) =>
        rejectedSave(saver, (p) =>
          p === "b[1]" ? new HostTensor("int32", [2, 2, BATCH]) : undefined,
        ),
    )
    unchanged(
      "save rejects a wrong batch size (BatchSizeMismatchError)",
      "BatchSizeMismatchError",
      "b[0]",
      (saver) =>
        rejectedSave(saver, (p) =>
          p === "b[0]" ? new HostTensor("float32", [2, BATCH + 1, 2]) : undefined,
        ),
    )
    unchanged(
      "save rejects a wrong fixed dim (ShapeMismatchError)",
      "ShapeMismatchError",
      "a",
      (saver) =>
        rejectedSave(saver, (p) => (p === "a" ? new HostTensor("float32", [BATCH, 4]) : undefined)),
    )
    unchanged(
      "save rejects a wrong rank (ShapeMismatchError)",
      "ShapeMismatchError",
      "odd.__proto__",
      (saver) =>
        rejectedSave(saver, (p) =>
          p === "odd.__proto__" ? new HostTensor("float32", [BATCH, 1]) : undefined,
        ),
    )
    unchanged(
      "save rejects one tensor given at two leaves (AliasedLeafError)",
      "AliasedLeafError",
      "b[0]",
      (saver) =>
        rejectedSave(
          saver,
          () => undefined,
          (tree) => ({ ...tree, b: [tree["a"], (tree["b"] as T[])[1]] }),
        ),
    )
    unchanged("reset rejects an out-of-range row (RowIndexError)", "RowIndexError", "", (saver) =>
      saver.reset([0, BATCH]),
    )
    unchanged(
      "reset rejects a mask of the wrong length (RowIndexError)",
      "RowIndexError",
      "",
      (saver) => saver.reset([true, false]),
    )
    unchanged(
      "select rejects a negative or fractional row (RowIndexError)",
      "RowIndexError",
      "",
      (saver) => saver.select([0, 1.5]),
    )
    unchanged("select rejects an empty selection (RowIndexError)", "RowIndexError", "", (saver) =>
      saver.select([]),
    )
    unchanged(
      "restore rejects a snapshot of another batch size",
      "BatchSizeMismatchError",
      "a",
      async (saver) => {
        const other = unwrap(
          createStateSaver({
            spec: saver.spec.spec,
            backend: saver.backend,
            batchSize: BATCH + 1,
          }),
        )
        const bytes = await snapshotBytes(other)
        other.dispose()
        return saver.restore(bytes)
      },
    )
    unchanged(
      "restore rejects truncated bytes (SnapshotFormatError)",
      "SnapshotFormatError",
      "odd.__proto__",
      async (saver) => {
        const bytes = await snapshotBytes(saver)
        return saver.restore(bytes.subarray(0, bytes.length - 3))
      },
    )
  })

  test("a backend failure mid-select frees the rows already gathered", async (kit) => {
    const failing = failingBackend(kit.backend, "gather", "b[1]")
    const saver = unwrap(
      createStateSaver({ spec: kitSpec("float32"), backend: failing, batchSize: BATCH }),
    )
    const live = kit.live()
    const before = await snapshotBytes(saver)
    const err = expectLeft(saver.select([1, 0]), "BackendError")
    expect(err.path).toBe("b[1]")
    expect(err.cause).toBeInstanceOf(Error)
    expect(err.message).toContain("injected gather failure")
    expectLive(kit.live(), live, "a select whose gather threw at leaf b[1]")
    expect(await snapshotBytes(saver)).toEqual(before)
    saver.dispose()
  })

  test("a backend failure mid-select in place (reorder) names the leaf and frees nothing", async (kit) => {
    if (kit.backend.reorder === undefined) kit.skip("the backend has no reorder (select gathers)")
    const failing = failingBackend(kit.backend, "reorder", "b[1]")
    const saver = unwrap(
      createStateSaver({ spec: kitSpec("float32"), backend: failing, batchSize: BATCH }),
    )
    const live = kit.live()
    const before = await read(saver)
    const rows = [1, 0, 3, 2]
    const err = expectLeft(saver.select(rows), "BackendError")
    expect(err.path).toBe("b[1]")
    expect((err as BackendError).operation).toBe("reorder")
    expect(err.message).toContain("injected reorder failure")
    expectLive(kit.live(), live, "a select whose reorder threw at leaf b[1]")
    // As documented: the leaves before b[1] hold their rows reordered, b[1] and those after
    // it are as they were.
    const after = await read(saver)
    const failedAt = saver.spec.leaves.findIndex((l) => l.pathString === "b[1]")
    expect(failedAt).toBeGreaterThan(0)
    saver.spec.leaves.forEach((leaf, i) => {
      const was = before.get(leaf.pathString) as HostTensor
      const want = i < failedAt ? referenceGather(was, leaf.batchAxis, rows, () => 0) : was
      expectTensor(after.get(leaf.pathString), want, `${leaf.pathString} after the failed reorder`)
    })
    expect(saver.batchSize).toBe(BATCH)
    saver.dispose()
  })
}

/** A backend that throws from `operation` on the leaf at `path` and forwards everything else. */
export function failingBackend<T, In>(
  backend: StateBackend<T, In>,
  operation: "gather" | "fill" | "adopt" | "reorder",
  path: string,
): StateBackend<T, In> {
  const { reorder } = backend
  const fail = (p: string) => {
    if (p === path) throw new Error(`injected ${operation} failure`)
  }
  return {
    name: backend.name,
    capabilities: backend.capabilities,
    describe: (x) => backend.describe(x),
    allocate: (s, d, l) => backend.allocate(s, d, l),
    gather: (src, rows, l) => {
      if (operation === "gather") fail(l.path)
      return backend.gather(src, rows, l)
    },
    scatter: (dst, rows, src, l) => backend.scatter(dst, rows, src, l),
    fill: (t, rows, l) => {
      if (operation === "fill") fail(l.path)
      backend.fill(t, rows, l)
    },
    adopt: (h, n, l) => {
      if (operation === "adopt") fail(l.path)
      return backend.adopt(h, n, l)
    },
    ...(reorder === undefined
      ? {}
      : {
          reorder: (t: T, rows: readonly number[], l: LeafContext) => {
            if (operation === "reorder") fail(l.path)
            reorder.call(backend, t, rows, l)
          },
        }),
    toHost: (t) => backend.toHost(t),
    fromHost: (h, l) => backend.fromHost(h, l),
    dispose: (t) => backend.dispose(t),
  }
}
