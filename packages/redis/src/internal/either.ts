import type { Either } from "fp-ts/lib/Either.js"

// fp-ts Eithers are plain `{ _tag, left }` / `{ _tag, right }` records: building them here keeps
// fp-ts (CommonJS, not tree-shaken) out of a bundle while the public type stays fp-ts's own.
export type { Either } from "fp-ts/lib/Either.js"

export const left = <E, A = never>(e: E): Either<E, A> => ({ _tag: "Left", left: e })

export const right = <A, E = never>(a: A): Either<E, A> => ({ _tag: "Right", right: a })
