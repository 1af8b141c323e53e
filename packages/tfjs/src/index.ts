// The public surface of @statesaver/tfjs, listed by name (test/exports.test.ts pins it).
// Helpers that are not public live in ./internal/ and are not reachable from here.

export { tfjsBackend } from "./tfjs-backend.js"
export type { TfjsBackend, TfjsBackendOptions } from "./tfjs-backend.js"

export { cellLayout, fromTfjsStates, specFromCells, toTfjsStates } from "./cell-spec.js"
export type {
  CellLayout,
  CellLayoutError,
  CellSource,
  CellSpecOptions,
  RnnCell,
  TfjsStatesError,
} from "./cell-spec.js"

export { resetWhere, selectRows } from "./training-state.js"
export type { RowMask, RowOpError, StepMask } from "./training-state.js"

export { createStatefulRnn, statefulRnn } from "./stateful-rnn.js"
export type {
  ApplyError,
  ApplyStreamsError,
  CreateStatefulRnnError,
  RnnResult,
  RunError,
  RunOptions,
  StatefulRnn,
} from "./stateful-rnn.js"

export { createTbpttTrainer, evaluateTbptt } from "./tbptt.js"
export type {
  CreateTbpttTrainerError,
  EvaluateTbpttError,
  EvaluateTbpttOptions,
  TbpttBatch,
  TbpttEvaluateOptions,
  TbpttEvaluation,
  TbpttOptions,
  TbpttStepResult,
  TbpttTrainer,
  TbpttWindow,
  TrainBatchError,
  WindowReport,
} from "./tbptt.js"
