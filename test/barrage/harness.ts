// The barrage: bad and adversarial inputs thrown at the public API. Every case asserts the error's
// `_tag`, its path and message, and that nothing changed: the state's snapshot bytes, the live
// tensor count, and the tensors the caller passed (still live, same values).
import { expect } from "vitest"
import { type AnyStateError, StateError, isStateError } from "@statesaver/core"

/** One bad input: what to call, and the error it must give. */
export interface BadInput<S> {
  readonly name: string
  /**
   * What kind of promise the case guards: 1 a typed error where a plain TypeError was thrown,
   * 2 bad input refused rather than accepted, 3 nothing changed although the call failed late,
   * 4 no change while a run is in flight, 5 the actual value printed as given, 6 eviction
   * callbacks, 7 bounded work on untrusted snapshots.
   */
  readonly category: 1 | 2 | 3 | 4 | 5 | 6 | 7
  /** Calls the API; returns a result (an Either or a promise of one) or throws. */
  readonly call: (subject: S) => unknown
  readonly tag: AnyStateError["_tag"]
  /** The path the error must name; `undefined` skips the check. */
  readonly path?: string
  /** Text the message must contain (the actual value as given, the leaf...). */
  readonly says?: readonly string[]
  /** Tensors the caller passed: after the call they must still be live and hold the same values. */
  readonly given?: (subject: S) => readonly unknown[]
}

/** What a subject exposes for the unchanged-state checks. */
export interface Observed {
  /** Bytes that capture the whole state (a snapshot; for a store, every stream's). */
  readonly state: () => Promise<Uint8Array>
  readonly live: () => number
  /** Whether a tensor the caller passed is still usable, and a copy of its values. */
  readonly probe?: (x: unknown) => Promise<string | undefined>
}

/** The error a call gave, as a Left, a rejected promise or a throw; fails when it gave none. */
export async function errorOf(call: () => unknown): Promise<StateError> {
  let out: unknown
  try {
    out = await call()
  } catch (e) {
    if (!isStateError(e)) {
      throw new Error(`expected a StateError, got a thrown ${String(e)}`, { cause: e })
    }
    return e
  }
  const r = out as { _tag?: unknown; left?: unknown } | undefined
  if (r === undefined || r._tag !== "Left") {
    throw new Error(`expected a Left, got ${r === undefined ? "undefined" : String(r._tag)}`)
  }
  if (!(r.left instanceof StateError)) throw new Error("the Left does not hold a StateError")
  return r.left
}

/** Runs one case against a fresh subject and checks the error and that nothing changed. */
export async function expectRefused<S>(
  subject: S,
  observe: Observed,
  c: BadInput<S>,
): Promise<StateError> {
  const given = c.given?.(subject) ?? []
  const probe = observe.probe
  const givenBefore = probe ? await Promise.all(given.map((x) => probe(x))) : []
  const before = await observe.state()
  const liveBefore = observe.live()
  const e = await errorOf(() => c.call(subject))
  expect(e._tag, e.message).toBe(c.tag)
  expect(e.name).toBe(c.tag)
  expect(e.message.length).toBeGreaterThan(0)
  if (c.path !== undefined) {
    expect(e.path).toBe(c.path)
    if (c.path !== "") expect(e.message).toContain(c.path)
  }
  for (const text of c.says ?? []) expect(e.message).toContain(text)
  expect(observe.live(), "live tensors after the refused call").toBe(liveBefore)
  const after = await observe.state()
  expect(Buffer.from(after).equals(Buffer.from(before)), "state bytes after the refused call").toBe(
    true,
  )
  if (probe) {
    const givenAfter = await Promise.all(given.map((x) => probe(x)))
    expect(givenAfter, "the caller's tensors after the refused call").toEqual(givenBefore)
    for (const g of givenAfter)
      expect(g, "a tensor the caller passed was freed").not.toBeUndefined()
  }
  return e
}
