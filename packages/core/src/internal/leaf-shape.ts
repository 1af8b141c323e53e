import type { ResolvedLeaf } from "../state-spec.js"

/** The concrete starting shape of a resolved leaf for `batchSize` rows. */
export function leafShape(leaf: ResolvedLeaf, batchSize: number): number[] {
  return leaf.shape.map((d, axis) => (axis === leaf.batchAxis ? batchSize : (d as number)))
}
