import { describe, it } from "vitest"
import { HostTensor, hostBackend, hostTensor } from "@statesaver/core"
import { type BadInput, expectRefused } from "./harness.js"

// Constructors cannot return an Either: they throw the typed error instead of a TypeError.
const cases: [string, 1 | 2 | 5, () => unknown, BadInput<null>["tag"], string?][] = [
  [
    "new HostTensor with an unknown dtype",
    1,
    () => new HostTensor("float64" as never, [2]),
    "DTypeMismatchError",
    "float64",
  ],
  [
    "new HostTensor with a shape that is not an array",
    1,
    () => new HostTensor("float32", 3 as never),
    "ShapeMismatchError",
    "3",
  ],
  [
    "new HostTensor with shape null",
    1,
    () => new HostTensor("float32", null as never),
    "ShapeMismatchError",
    "null",
  ],
  [
    "new HostTensor with a negative dim",
    1,
    () => new HostTensor("float32", [2, -1]),
    "ShapeMismatchError",
    "-1",
  ],
  [
    "new HostTensor with a fractional dim",
    1,
    () => new HostTensor("float32", [1.5]),
    "ShapeMismatchError",
    "1.5",
  ],
  [
    "new HostTensor with a NaN dim",
    5,
    () => new HostTensor("float32", [Number.NaN]),
    "ShapeMismatchError",
    "NaN",
  ],
  [
    'new HostTensor with a "2" dim',
    5,
    () => new HostTensor("float32", ["2" as never]),
    "ShapeMismatchError",
    '"2"',
  ],
  [
    "new HostTensor with data of another type",
    1,
    () => new HostTensor("float32", [2], new Int32Array(2) as never),
    "DTypeMismatchError",
    "Int32Array",
  ],
  [
    "new HostTensor with a plain array as data",
    1,
    () => new HostTensor("float32", [2], [1, 2] as never),
    "DTypeMismatchError",
  ],
  [
    "new HostTensor with data too short",
    1,
    () => new HostTensor("float32", [2, 3], new Float32Array(5)),
    "ShapeMismatchError",
    "5",
  ],
  [
    "new HostTensor with data too long",
    1,
    () => new HostTensor("int32", [2], new Int32Array(3)),
    "ShapeMismatchError",
    "3",
  ],
  [
    "new HostTensor with a shape too big to allocate",
    2,
    () => new HostTensor("float32", [2 ** 40, 2 ** 20]),
    "ShapeMismatchError",
  ],
  [
    "hostTensor with too few values",
    1,
    () => hostTensor("float32", [3], [1, 2]),
    "ShapeMismatchError",
  ],
  [
    "hostTensor with values that are a number",
    1,
    () => hostTensor("float32", [3], 5 as never),
    "ShapeMismatchError",
    "5",
  ],
  [
    "hostTensor with values null",
    1,
    () => hostTensor("float32", [3], null as never),
    "ShapeMismatchError",
    "null",
  ],
  [
    "hostTensor 1.5 as int32",
    2,
    () => hostTensor("int32", [1], [1.5]),
    "DTypeMismatchError",
    "1.5",
  ],
  [
    "hostTensor 2**31 as int32",
    2,
    () => hostTensor("int32", [1], [2 ** 31]),
    "DTypeMismatchError",
    "2147483648",
  ],
  [
    "hostTensor NaN as int32",
    5,
    () => hostTensor("int32", [1], [Number.NaN]),
    "DTypeMismatchError",
    "NaN",
  ],
  [
    "hostTensor 300 as uint8",
    2,
    () => hostTensor("uint8", [1], [300]),
    "DTypeMismatchError",
    "300",
  ],
  ["hostTensor -1 as uint8", 2, () => hostTensor("uint8", [1], [-1]), "DTypeMismatchError", "-1"],
  ["hostTensor 2 as bool", 2, () => hostTensor("bool", [1], [2]), "DTypeMismatchError", "2"],
  [
    "hostTensor 2n**70n as int64",
    2,
    () => hostTensor("int64", [1], [2n ** 70n]),
    "DTypeMismatchError",
    "1180591620717411303424n",
  ],
  ["hostTensor 2**53 as int64", 2, () => hostTensor("int64", [1], [2 ** 53]), "DTypeMismatchError"],
  [
    "hostTensor 70000 as float16",
    2,
    () => hostTensor("float16", [1], [70000]),
    "DTypeMismatchError",
    "70000",
  ],
  [
    "hostTensor an unknown dtype",
    1,
    () => hostTensor("complex64" as never, [1], [0]),
    "DTypeMismatchError",
    "complex64",
  ],
]

describe("barrage: HostTensor and hostTensor", () => {
  const backend = hostBackend()
  for (const [name, category, call, tag, says] of cases) {
    it(`[${category}] ${name} throws ${tag}`, async () => {
      await expectRefused(
        null,
        { state: async () => new Uint8Array(0), live: () => backend.liveTensors() },
        { name, category, call, tag, ...(says === undefined ? {} : { says: [says] }) },
      )
    })
  }
})
