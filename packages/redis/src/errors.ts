import { StateError } from "@statesaver/core"

/**
 * Another worker owns the stream, or owned it since this worker took it: its lease is held
 * elsewhere (`holder`), or a newer fencing token was granted (`current` > `token`). The write or
 * run was refused and this worker dropped its copy of the stream. `path` names the stream.
 *
 * @example
 * import { LeaseError } from "@statesaver/redis"
 * const e = new LeaseError({ path: "call-7", token: 4, current: 5, holder: "worker-b" })
 * console.log(e.message) // stream call-7: expected the lease of fencing token 4, got token 5 (held by "worker-b")
 * @category errors
 * @since 0.3.0
 */
export class LeaseError extends StateError {
  readonly _tag = "LeaseError" as const
  /** The token this worker held (0 when it never got one). */
  readonly token: number
  /** The newest token granted for the stream (0 when none is known). */
  readonly current: number
  /** The owner holding the lease now, when one does. */
  readonly holder: string | undefined

  constructor(fields: {
    readonly path: string
    readonly token: number
    readonly current: number
    readonly holder?: string | undefined
    readonly detail?: string
  }) {
    const expected =
      fields.token === 0
        ? "a stream no other worker holds"
        : `the lease of fencing token ${fields.token}`
    const held =
      fields.holder === undefined ? undefined : `held by ${JSON.stringify(fields.holder)}`
    const detail = [held, fields.detail].filter((s) => s !== undefined).join("; ")
    super(
      `stream ${fields.path}: expected ${expected}, got token ${fields.current}${detail === "" ? "" : ` (${detail})`}`,
      {
        path: fields.path,
        expected,
        actual: fields.current,
        ...(detail === "" ? {} : { detail }),
      },
    )
    this.token = fields.token
    this.current = fields.current
    this.holder = fields.holder
  }
}
