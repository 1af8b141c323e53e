import {
  type BatchSizeMismatchError,
  showValue,
  type DTypeMismatchError,
  type ShapeMismatchError,
  SnapshotFormatError,
  SpecError,
} from "../errors.js"
import { HostTensor } from "../host-tensor.js"
import { checkTensor } from "./dtype-values.js"
import { type Snapshot, decodeSnapshot } from "../snapshot.js"
import type { ResolvedSpec } from "../state-spec.js"
import { checkInfo } from "./checks.js"
import * as E from "./either.js"
import { fail as failWith, failSnapshot as fail } from "./fail.js"
import { isArray } from "./predicates.js"

/** Errors of checking a snapshot against a spec. */
export type SnapshotCheckError =
  SnapshotFormatError | SpecError | DTypeMismatchError | ShapeMismatchError | BatchSizeMismatchError

/**
 * Decodes snapshot bytes, or checks that a decoded `Snapshot` given by hand is one: its host
 * tensors' data must match their dtype and shape (a swapped `data` array is caught here).
 */
export function toSnapshot(input: unknown): E.Either<SnapshotFormatError, Snapshot> {
  if (input instanceof Uint8Array) return decodeSnapshot(input)
  const snap = input as Partial<Snapshot> | null
  if (
    !snap ||
    typeof snap !== "object" ||
    typeof snap.batchDim !== "string" ||
    !isArray(snap.leaves) ||
    // `checkSnapshot` reads each leaf record's `path` and `batchAxis`.
    snap.leaves.some((l: unknown) => !l || typeof l !== "object") ||
    !(snap.tensors instanceof Map)
  ) {
    return fail(
      "snapshot bytes (a Uint8Array) or a decoded Snapshot { batchDim, leaves, tensors }",
      showValue(input),
    )
  }
  for (const [path, t] of snap.tensors as Map<unknown, unknown>) {
    const where = typeof path === "string" ? path : ""
    if (!(t instanceof HostTensor)) return fail("a HostTensor", showValue(t), where)
    const bad = checkTensor(t.dtype, t.shape, t.data, "decoded Snapshot")
    if (bad) {
      return failWith(
        SnapshotFormatError,
        where,
        `data of dtype ${t.dtype} for shape ${showValue(t.shape)}`,
        showValue(t.data),
        bad.detail,
      )
    }
  }
  return E.right(snap as Snapshot)
}

/**
 * Checks a decoded snapshot against a resolved spec and batch size; returns the host tensors in
 * leaf order. Linear in the number of leaves.
 */
export function checkSnapshot(
  spec: ResolvedSpec,
  snap: Snapshot,
  batchSize: number,
): E.Either<SnapshotCheckError, HostTensor[]> {
  if (snap.batchDim !== spec.batchDim) {
    return fail(`batch dim "${spec.batchDim}"`, snap.batchDim)
  }
  const byPath = new Map(snap.leaves.map((l) => [l.path, l]))
  const paths = new Set(spec.leaves.map((l) => l.pathString))
  const missing = spec.leaves.find(
    (l) => !byPath.has(l.pathString) || !snap.tensors.has(l.pathString),
  )
  const extra = snap.leaves.find((l) => !paths.has(l.path))
  if (missing || extra) {
    // Say what the snapshot holds: a snapshot of another model fails here.
    const held = snap.leaves.slice(0, 9).map((l) => l.path)
    return failWith(
      SnapshotFormatError,
      missing?.pathString ?? extra?.path,
      missing ? "a tensor for this leaf" : "only leaves of this spec",
      missing ? "none" : `extra leaf ${extra?.path}`,
      `the snapshot holds ${held.join(", ")}${snap.leaves.length > 9 ? "…" : ""}`,
    )
  }
  const named = new Map<string, { size: number; path: string }>()
  const out: HostTensor[] = []
  for (const leaf of spec.leaves) {
    const p = leaf.pathString
    const recorded = byPath.get(p) as Snapshot["leaves"][number]
    const t = snap.tensors.get(p) as HostTensor
    if (recorded.batchAxis !== leaf.batchAxis) {
      return failWith(SpecError, p, `batch axis ${leaf.batchAxis}`, recorded.batchAxis)
    }
    const err = checkInfo(leaf, t, batchSize, named)
    if (err) return E.left(err)
    out.push(t)
  }
  return E.right(out)
}
