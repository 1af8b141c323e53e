import type { HostTensor } from "../host-tensor.js"
import { type SnapshotMetadata, encodeSnapshot } from "../snapshot.js"
import type { ResolvedSpec } from "../state-spec.js"

/** Encodes host copies of a state's leaves (in spec order) as snapshot bytes. */
export function encodeState(
  spec: ResolvedSpec,
  batchSize: number,
  hosts: readonly HostTensor[],
  metadata?: SnapshotMetadata,
): Uint8Array {
  return encodeSnapshot({
    batchDim: spec.batchDim,
    batchSize,
    metadata,
    leaves: spec.leaves.map((l) => ({
      path: l.pathString,
      batchAxis: l.batchAxis,
      dtype: l.dtype,
      spec: l.spec.shape,
      init: l.init.kind,
    })),
    tensors: new Map(spec.leaves.map((l, i) => [l.pathString, hosts[i] as HostTensor])),
  })
}
