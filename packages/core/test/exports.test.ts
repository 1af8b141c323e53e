import { describe, expect, test } from "vitest"
import * as core from "../src/index.js"
import * as testing from "../src/testing/index.js"

// The public surface, by name: adding or removing an export is a deliberate change to this list.
describe("public exports", () => {
  test("@statesaver/core exports exactly these runtime names", () => {
    expect(Object.keys(core).sort()).toEqual([
      "AliasedLeafError",
      "BackendError",
      "BatchSizeMismatchError",
      "BusyError",
      "DTYPES",
      "DTypeMismatchError",
      "DisposedError",
      "HostTensor",
      "KeyError",
      "OptionError",
      "RowIndexError",
      "SNAPSHOT_FORMAT",
      "SNAPSHOT_VERSION",
      "ShapeMismatchError",
      "SnapshotFormatError",
      "SpecError",
      "StateError",
      "StructureMismatchError",
      "allocateData",
      "createStateSaver",
      "createStateStore",
      "dataMatchesDType",
      "decodeSnapshot",
      "disposeTree",
      "dtypeByteSize",
      "dtypeOfData",
      "encodeSnapshot",
      "fillRowsTyped",
      "flatten",
      "float16BitsToFloat32",
      "float32ToFloat16Bits",
      "forEachBlockSpan",
      "formatPath",
      "gatherRowsTyped",
      "gruSpec",
      "hostBackend",
      "hostTensor",
      "init",
      "isDType",
      "isDefaultLeaf",
      "isLeafSpec",
      "isStateError",
      "lstmSpec",
      "mapTree",
      "orThrow",
      "reorderRowsTyped",
      "resolveSpec",
      "rnnSpec",
      "rowLayout",
      "sameStructure",
      "scatterRowsTyped",
      "sizeOf",
      "unflatten",
      "writeBlockTyped",
      "zipTrees",
    ])
  })

  test("@statesaver/core/testing exports a non-empty, explicit list", () => {
    expect(Object.keys(testing).length).toBeGreaterThan(0)
    expect(Object.keys(testing)).not.toContain("default")
  })
})
