// Where a store moves its rows so that a call's streams lie side by side in key order.

/** A move of a store's rows: row `i` of every slab takes what row `from[i]` held. */
export interface Arrangement {
  /** The first of the slots the call's keys hold after the move, in key order. */
  readonly start: number
  /** A permutation of the store's slots: slot `i` takes the rows of slot `from[i]`. */
  readonly from: number[]
}

/**
 * The move that puts the rows of `slots` (the call's keys' slots, in key order, distinct) at
 * slots `start` to `start + n - 1` of a store of `total` slots, with as few rows moved as can
 * be: `start` is `at` when given, else the one that finds most keys in place already (the
 * lowest of those tied). Rows in the way (other streams', free slots') take the slots the keys
 * leave.
 */
export function arrangement(slots: readonly number[], total: number, at?: number): Arrangement {
  const n = slots.length
  // Votes per start: key i is in place for start slots[i] - i.
  const votes = new Map<number, number>()
  let start = at ?? 0
  let best = 0
  for (let i = 0; at === undefined && i < n; i++) {
    const s = (slots[i] as number) - i
    if (s < 0 || s + n > total) continue
    const v = (votes.get(s) ?? 0) + 1
    votes.set(s, v)
    if (v > best || (v === best && s < start)) {
      best = v
      start = s
    }
  }
  const from = Array.from({ length: total }, (_, i) => i)
  const isKey = new Uint8Array(total)
  for (const s of slots) isKey[s] = 1
  // The keys' slots outside the target run are left; the target's other slots are freed up.
  const left: number[] = []
  for (const s of slots) if (s < start || s >= start + n) left.push(s)
  let j = 0
  for (let t = start; t < start + n; t++) {
    if (isKey[t] === 1) continue
    from[left[j++] as number] = t
  }
  for (let i = 0; i < n; i++) from[start + i] = slots[i] as number
  return { start, from }
}

/** The permutation that undoes `from`: `inverse(from)[from[i]] = i`. */
export function inverse(from: readonly number[]): number[] {
  const out: number[] = new Array(from.length)
  for (let i = 0; i < from.length; i++) out[from[i] as number] = i
  return out
}
