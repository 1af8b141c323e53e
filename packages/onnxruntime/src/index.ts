export type {
  BatcherEvent,
  PushOptions,
  PushResult,
  StreamBatcher,
  StreamBatcherOptions,
  StreamTier,
  TierStore,
} from "./batcher.js"
export { AbortedError, createStreamBatcher } from "./batcher.js"
export type { OrtBackend, OrtBackendOptions, OrtRuntime, OrtTensor } from "./ort-backend.js"
export { ortBackend } from "./ort-backend.js"
export type {
  PairingError,
  SessionSpecError,
  SessionSpecOptions,
  StatePair,
} from "./state-pairing.js"
export {
  conventionalInput,
  pairStateNames,
  sessionStateSpec,
  stateOutputLocations,
} from "./state-pairing.js"
export type { BusyGuarded, Feeds, OrtSession, StreamFeeds } from "./session-types.js"
export type {
  CreateStatefulSessionError,
  SessionSaver,
  StatefulRunError,
  StatefulSession,
  StatefulSessionOptions,
} from "./stateful-session.js"
export { createStatefulSession } from "./stateful-session.js"
export type {
  CreateStreamingSessionError,
  SessionStore,
  StreamingRunError,
  StreamingBatchOptions,
  StreamingRunOptions,
  StreamingSession,
  StreamingSessionOptions,
} from "./streaming-session.js"
export { createStreamingSession } from "./streaming-session.js"
export type {
  InputRule,
  RuleCall,
  RuleError,
  RuleLeaf,
  SileroContextOptions,
} from "./input-rules.js"
export { sileroContext } from "./input-rules.js"
export type { KvCacheOptions, RewindError } from "./kv-cache.js"
export type { OrtDType, OrtData, OrtElement, TensorDataError } from "./tensor-data.js"
export { tensorData, tensorScalar } from "./tensor-data.js"
