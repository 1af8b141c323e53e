// The public surface of @statesaver/core, listed by name (test/exports.test.ts pins it).

export {
  AliasedLeafError,
  BackendError,
  BatchSizeMismatchError,
  BusyError,
  DisposedError,
  DTypeMismatchError,
  KeyError,
  OptionError,
  RowIndexError,
  ShapeMismatchError,
  SnapshotFormatError,
  SpecError,
  StateError,
  StructureMismatchError,
  isStateError,
  orThrow,
} from "./errors.js"
export type { AnyStateError, ErrorFields, Result, TensorCheckError } from "./errors.js"

export {
  flatten,
  formatPath,
  isDefaultLeaf,
  mapTree,
  sameStructure,
  unflatten,
  zipTrees,
} from "./state-tree.js"
export type { Flattened, IsLeaf, PathSegment, StateTree, TreeDef } from "./state-tree.js"

export {
  DTYPES,
  HostTensor,
  allocateData,
  dataMatchesDType,
  dtypeByteSize,
  dtypeOfData,
  float16BitsToFloat32,
  float32ToFloat16Bits,
  hostTensor,
  isDType,
  sizeOf,
} from "./host-tensor.js"
export type { DType, DTypeArrays, HostData } from "./host-tensor.js"

export { gruSpec, init, isLeafSpec, lstmSpec, resolveSpec, rnnSpec } from "./state-spec.js"
export type {
  Dim,
  Init,
  LeafSpec,
  RecurrentSpecOptions,
  ResolvedLeaf,
  ResolvedSpec,
  SpecOptions,
  StateSpec,
} from "./state-spec.js"

export type {
  BackendCapabilities,
  InputOf,
  LeafContext,
  StateBackend,
  TensorInfo,
  TensorOf,
} from "./backend.js"

export {
  fillRowsTyped,
  gatherRowsTyped,
  reorderRowsTyped,
  rowLayout,
  scatterRowsTyped,
} from "./typed-rows.js"
export { forEachBlockSpan, writeBlockTyped } from "./block-rows.js"
export type { RowLayout } from "./typed-rows.js"

export { hostBackend } from "./host-backend.js"
export type { HostBackend, HostBackendOptions } from "./host-backend.js"

export { SNAPSHOT_FORMAT, SNAPSHOT_VERSION, decodeSnapshot, encodeSnapshot } from "./snapshot.js"
export type { Snapshot, SnapshotLeaf, SnapshotMetadata, SnapshotOptions } from "./snapshot.js"

export { createStateSaver } from "./state-saver.js"
export type {
  CreateSaverError,
  RestoreError,
  RowsError,
  RowsInput,
  SaveError,
  SnapshotError,
  StateSaver,
  StateSaverOptions,
} from "./state-saver.js"

export { createStateStore, disposeTree } from "./state-store.js"
export type {
  CreateStoreError,
  GatherError,
  GatherOptions,
  ResizeDimError,
  ScatterError,
  ScatterOptions,
  StateStore,
  StateStoreOptions,
  StoreResetError,
  StoreRestoreError,
  StoreSnapshotError,
  StreamKey,
  StreamSnapshot,
} from "./state-store.js"
