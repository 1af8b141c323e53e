import type { HostTensor } from "../host-tensor.js"
import { encodeSnapshot } from "../snapshot.js"
import type { ResolvedSpec } from "../state-spec.js"

/** Encodes host copies of a state's leaves (in spec order) as snapshot bytes. */
export function encodeState(
  spec: ResolvedSpec,
  batchSize: number,
  hosts: readonly HostTensor[],
): Uint8Array {
  return encodeSnapshot({
    batchDim: spec.batchDim,
    batchSize,
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
