/**
 * A small seeded PRNG (mulberry32): uniform numbers in [0, 1), the same sequence for a seed on
 * every platform. For deterministic test data and interleavings.
 *
 * @example
 * const random = mulberry32(7)
 * const order = ["a", "b", "c"].sort(() => random() - 0.5)
 * @category testing
 * @since 0.1.0
 */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
