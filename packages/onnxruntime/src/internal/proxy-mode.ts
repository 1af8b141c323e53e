// onnxruntime-web's proxy mode, which statesaver refuses: its worker is sent every input's
// ArrayBuffer as a transfer, so the arrays a session keeps and feeds (a fixed cache, a store's
// slab, lent masks) would be detached by the first run.
import { OptionError } from "@statesaver/core"
import { isObject } from "./validate.js"

/** The key of the check an `ortBackend` carries, for the sessions made over it (not public API). */
export const PROXY_CHECK: unique symbol = Symbol("statesaver.proxyCheck")

/** The refusal of `ort` in proxy mode on a page, or `undefined`. */
export function proxyRefusal(ort: unknown): OptionError | undefined {
  const env = (ort as { env?: { wasm?: { proxy?: unknown } } }).env
  // As onnxruntime-web decides: proxy mode applies on a page (a document), not in Node.
  if (env?.wasm?.proxy !== true || (globalThis as { document?: unknown }).document === undefined)
    return undefined
  return new OptionError({
    path: "ort.env.wasm.proxy",
    expected: "false: statesaver keeps the arrays it feeds, and proxy mode transfers them away",
    actual: true,
    detail:
      "onnxruntime-web's proxy worker detaches every input's ArrayBuffer; run the model and the session in a worker of your own instead",
  })
}

/**
 * The refusal of the runtime of `backend` (an `ortBackend`) in proxy mode now: a session made
 * after proxy mode was turned on runs its model in the proxy worker.
 */
export function backendProxyRefusal(backend: unknown): OptionError | undefined {
  const check = isObject(backend)
    ? (backend as { [PROXY_CHECK]?: unknown })[PROXY_CHECK]
    : undefined
  return typeof check === "function" ? (check as () => OptionError | undefined)() : undefined
}
