import { it } from "vitest"
import type { LeafContext, StateBackend } from "../backend.js"
import type { DType, HostTensor } from "../host-tensor.js"

/**
 * Options of `describeBackendConformance`. `T` is the backend's tensor type, `In` what its
 * `save` and `scatter` also accept, `B` the backend's own type (so `liveTensors` and `teardown`
 * see its extra members without a cast).
 *
 * @example
 * const options: ConformanceOptions<HostTensor, HostTensor, HostBackend> = {
 *   name: "host",
 *   backend: () => hostBackend(),
 *   liveTensors: (backend) => backend.liveTensors(),
 * }
 * @category testing
 * @since 0.1.0
 */
export interface ConformanceOptions<
  T,
  In = T,
  B extends StateBackend<T, In> = StateBackend<T, In>,
> {
  /** Shown as the suite name: `StateBackend conformance: <name>`. */
  readonly name: string
  /** Makes the backend under test; called once per test (may be async, e.g. to init a runtime). */
  readonly backend: () => (B & StateBackend<T, In>) | Promise<B & StateBackend<T, In>>
  /**
   * Live tensors the backend owns right now (tfjs `tf.memory().numTensors`, live ORT tensors,
   * `hostBackend().liveTensors()`). Read before and after loops: it must not grow.
   */
  readonly liveTensors: (backend: B) => number
  /**
   * Makes an `In` tensor holding a copy of `host`, as a model step would return it (tfjs: a plain
   * `tf.Tensor`, where the backend holds `tf.Variable`s). The kit saves and scatters these besides
   * the backend's own tensors. Default: the backend's `fromHost`. Called only for declared dtypes.
   */
  readonly makeInput?: (host: HostTensor) => NoInfer<In>
  /** Restrict what is tested; defaults to the backend's own declared capabilities. */
  readonly capabilities?: { readonly dtypes?: readonly DType[] }
  /** Names of tests to skip, exactly as printed (they are stable). Each skip is reported. */
  readonly skip?: readonly string[]
  /** Iterations of the leak loops. Default 500. */
  readonly iterations?: number
  /** Called after each test with the backend it used. */
  readonly teardown?: (backend: B) => void | Promise<void>
}

/** What a test body gets: the backend under test and the kit's view of it. */
export interface Kit<T, In> {
  readonly backend: StateBackend<T, In>
  /** The backend's live tensors now (the options' `liveTensors`). */
  readonly live: () => number
  /** A tensor holding a copy of `host` as a model would give it: `makeInput`, else `fromHost`. */
  readonly input: (host: HostTensor, leaf: LeafContext) => T | In
  /** dtypes under test: the options' `capabilities.dtypes`, else the backend's declared ones. */
  readonly dtypes: readonly DType[]
  /** Length of the leak loops. */
  readonly iterations: number
}

/** Registers one kit test (or its skip) under a stable name. */
export type KitTest<T, In> = (name: string, body: (kit: Kit<T, In>) => Promise<void>) => void

/**
 * The test registrar every suite uses: a fresh backend per test, teardown after it, and a
 * reported skip for a name listed in `skip`.
 */
export function kitTest<T, In, B extends StateBackend<T, In>>(
  options: ConformanceOptions<T, In, B>,
): KitTest<T, In> {
  const skip = new Set(options.skip ?? [])
  const iterations = options.iterations ?? 500
  return (name, body) => {
    if (skip.has(name)) {
      it.skip(`${name} (skipped by ${options.name})`, () => undefined)
      return
    }
    it(name, async () => {
      const backend = await options.backend()
      const make = options.makeInput
      const kit: Kit<T, In> = {
        backend,
        live: () => options.liveTensors(backend),
        input:
          make === undefined ? (host, leaf) => backend.fromHost(host, leaf) : (host) => make(host),
        dtypes: options.capabilities?.dtypes ?? backend.capabilities.dtypes,
        iterations,
      }
      try {
        await body(kit)
      } finally {
        await options.teardown?.(backend)
      }
    })
  }
}
