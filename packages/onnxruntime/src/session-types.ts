// The types the sessions' modules and their internal parts share: what a session takes of an
// `InferenceSession`, a call's feeds, and the busy-guarded view of a session's saver or store.
import type { BusyError, StreamKey } from "@statesaver/core"
import type * as common from "onnxruntime-common"
import type { OrtTensor } from "./ort-backend.js"
import type * as E from "./internal/either.js"

/**
 * The parts of an `InferenceSession` a `StatefulSession` uses.
 *
 * @category sessions
 * @since 0.1.0
 */
export type OrtSession = Pick<
  common.InferenceSession,
  "run" | "inputNames" | "outputNames" | "inputMetadata" | "outputMetadata"
>

/**
 * Feeds by input name, without the state inputs (the session supplies them).
 *
 * @category sessions
 * @since 0.1.0
 */
export type Feeds = Readonly<Record<string, OrtTensor>>

/**
 * One stream's part of a batched run: its key and its feeds, each with one row along the
 * input's batch axis.
 *
 * @category sessions
 * @since 0.1.0
 */
export interface StreamFeeds {
  readonly key: StreamKey
  readonly feeds: Feeds
}

/** A call's result with `BusyError` added to the errors it can return. */
type WithBusy<R> = [R] extends [Promise<infer P>]
  ? Promise<WithBusy<P>>
  : [R] extends [E.Either<infer L, infer A>]
    ? E.Either<L | BusyError, A>
    : R

/**
 * An object with the members of `I` (a `StateSaver` or `StateStore`) whose `Either`-returning
 * calls may also return `BusyError`: the view of a session's saver or store, which refuses them
 * while a run of the session is in flight.
 *
 * @category sessions
 * @since 0.2.0
 */
export type BusyGuarded<I> = {
  readonly [K in keyof I]: I[K] extends (...args: infer A) => infer R
    ? (...args: A) => WithBusy<R>
    : I[K]
}
