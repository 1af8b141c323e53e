// Input rules of the tests' own (a caller's rules beside the built-in ones).
import type { HostTensor } from "@statesaver/core"
import type { InputRule } from "../../src/index.js"

/**
 * A rule that derives nothing and counts each row's runs in a bookkeeping leaf `count` (int32,
 * one per row), with `misbehave` put over it.
 */
export const counting = (misbehave: Partial<InputRule> = {}): InputRule => ({
  name: "counting",
  inputs: [],
  state: { count: { row: [], dtype: "int32" } },
  derive: () => ({}),
  next: ({ state }) => {
    const c = state["count"] as HostTensor
    return {
      count: new (c.constructor as typeof HostTensor)(
        "int32",
        c.shape,
        Int32Array.from(c.data as Int32Array, (v) => v + 1),
      ),
    }
  },
  ...misbehave,
})
