// The public surface of @statesaver/redis, listed by name (test/exports.test.ts pins it).

export { LeaseError } from "./errors.js"
export { FlushError, createRedisTier, streamPath } from "./redis-tier.js"
export type {
  CheckpointPolicy,
  PrepareError,
  RedisConnection,
  RedisTier,
  RedisTierOptions,
  TierEvent,
  TierRequest,
  TierStore,
  WriteError,
  WriteReason,
} from "./redis-tier.js"
