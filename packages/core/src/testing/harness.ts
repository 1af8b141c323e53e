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
  /**
   * The backend under test behind the kit's ownership tracker (`trackOwnership`): every tensor
   * core or the kit frees goes through it, so a double free is seen even though core ignores
   * what `dispose` throws.
   */
  readonly backend: StateBackend<T, In>
  /** The backend's live tensors now (the options' `liveTensors`). */
  readonly live: () => number
  /** A tensor holding a copy of `host` as a model would give it: `makeInput`, else `fromHost`. */
  readonly input: (host: HostTensor, leaf: LeafContext) => T | In
  /** dtypes under test: the options' `capabilities.dtypes`, else the backend's declared ones. */
  readonly dtypes: readonly DType[]
  /** Length of the leak loops. */
  readonly iterations: number
  /** Ends the test as skipped, with a note (a dtype the backend does not declare). */
  readonly skip: (note: string) => never
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
    it(name, async (context) => {
      const backend = await options.backend()
      const make = options.makeInput
      const tracker = trackOwnership<T, In>(backend)
      const kit: Kit<T, In> = {
        backend: tracker.backend,
        live: () => options.liveTensors(backend),
        input: (host, leaf) =>
          tracker.received(
            make === undefined ? tracker.backend.fromHost(host, leaf) : make(host),
            `makeInput for leaf ${leaf.path}`,
          ),
        dtypes: options.capabilities?.dtypes ?? backend.capabilities.dtypes,
        iterations,
        skip: (note) => context.skip(note),
      }
      try {
        await body(kit)
        tracker.check()
      } finally {
        await options.teardown?.(backend)
      }
    })
  }
}

/** What the tracker knows of one tensor. */
interface Tracked {
  /** Where it came from: the primitive, the leaf, dtype and shape. */
  readonly what: string
  state: "live" | "disposed" | "given to adopt"
}

/** `describe` that never throws (the tracker must not change what a test sees). */
function safeDescribe<T, In>(backend: StateBackend<T, In>, t: unknown): string {
  try {
    const info = backend.describe(t)
    return info === undefined ? "" : ` ${info.dtype} [${info.shape.join(", ")}]`
  } catch {
    return ""
  }
}

/**
 * Wraps a backend so that every tensor it returns (and every `makeInput` tensor the kit hands
 * core) is recorded, and every `dispose` is checked: a second dispose of one tensor, a dispose
 * of a tensor given to a successful `adopt` (which frees what it does not return), a dispose of
 * something neither the backend nor the kit made, and a `dispose` that throws are recorded, and
 * `check()` fails the test with the list. Core ignores a throwing `dispose`
 * (`disposeQuietly`), so without this a double free, or a strict backend's refusal of one,
 * would go unseen.
 */
export function trackOwnership<T, In>(
  backend: StateBackend<T, In>,
): {
  readonly backend: StateBackend<T, In>
  readonly received: <X extends T | In>(t: X, what: string) => X
  readonly check: () => void
} {
  const seen = new Map<unknown, Tracked>()
  const problems: string[] = []
  const received = <X>(t: X, what: string): X => {
    seen.set(t, { what: `${what}${safeDescribe(backend, t)}`, state: "live" })
    return t
  }
  const at = (leaf: LeafContext) => `for leaf ${leaf.path}`
  const tracked: StateBackend<T, In> = {
    name: backend.name,
    capabilities: backend.capabilities,
    describe: (x) => backend.describe(x),
    allocate: (shape, dtype, leaf) =>
      received(backend.allocate(shape, dtype, leaf), `allocate ${at(leaf)}`),
    gather: (src, rows, leaf) =>
      received(
        backend.gather(src, rows, leaf),
        `gather of rows [${rows.map(String).join(", ")}] ${at(leaf)}`,
      ),
    scatter: (dst, rows, src, leaf) => backend.scatter(dst, rows, src, leaf),
    fill: (t, rows, leaf) => backend.fill(t, rows, leaf),
    ...(backend.writeAt === undefined
      ? {}
      : {
          writeAt: (
            dst: T,
            axis: number,
            offsets: readonly number[],
            src: T | In,
            leaf: LeafContext,
          ) => backend.writeAt?.(dst, axis, offsets, src, leaf),
        }),
    ...(backend.reorder === undefined
      ? {}
      : {
          reorder: (t: T, rows: readonly number[], leaf: LeafContext) =>
            backend.reorder?.(t, rows, leaf),
        }),
    ...(backend.view === undefined
      ? {}
      : {
          view: (src: T, start: number, count: number, leaf: LeafContext) => {
            const v = backend.view?.(src, start, count, leaf)
            return v === undefined ? v : received(v, `view of ${count} rows ${at(leaf)}`)
          },
        }),
    adopt: (held, next, leaf) => {
      const kept = backend.adopt(held, next, leaf)
      for (const t of [held, next]) {
        const entry = seen.get(t)
        if (entry !== undefined) entry.state = "given to adopt"
      }
      return received(kept, `adopt ${at(leaf)}`)
    },
    toHost: (t) => backend.toHost(t),
    fromHost: (host, leaf) => received(backend.fromHost(host, leaf), `fromHost ${at(leaf)}`),
    dispose: (t) => {
      const entry = seen.get(t)
      if (entry === undefined) {
        problems.push(`dispose of a value the backend never returned: ${describeValue(t)}`)
      } else if (entry.state === "disposed") {
        problems.push(`double free: a second dispose of the tensor from ${entry.what}`)
      } else if (entry.state === "given to adopt") {
        problems.push(
          `double free: dispose of the tensor from ${entry.what}, already given to adopt (which frees what it does not return)`,
        )
      }
      if (entry !== undefined) entry.state = "disposed"
      try {
        backend.dispose(t)
      } catch (e) {
        problems.push(
          `dispose threw (core ignores it, so the tensor may never be freed): ${
            e instanceof Error ? e.message : String(e)
          }, freeing ${entry === undefined ? describeValue(t) : `the tensor from ${entry.what}`}`,
        )
        throw e
      }
    },
  }
  return {
    backend: tracked,
    received,
    check: () => {
      if (problems.length === 0) return
      const shown = problems.slice(0, 5).map((p) => `  - ${p}`)
      if (problems.length > 5) shown.push(`  - ... and ${problems.length - 5} more`)
      throw new Error(
        `dispose: ${problems.length} ownership problem(s) in this test:\n${shown.join("\n")}`,
      )
    },
  }
}

function describeValue(x: unknown): string {
  if (x === null || typeof x !== "object") return typeof x === "string" ? `"${x}"` : String(x)
  return `a ${(x as object).constructor?.name ?? "object"}`
}
