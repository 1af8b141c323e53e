/*
 * Broken variants of the host backend, one planted bug each (bugs a backend author is likely to make), for
 * broken-backends.kit.ts.
 */
import { HostTensor, type HostBackend, hostBackend } from "../../src/index.js"
import { isHostTensorDisposed, sizeOf } from "../../src/host-tensor.js"

/** Names of the variants, as the suites print them: `StateBackend conformance: <name>`. */
export const VARIANTS = [
  "unbroken",
  "toHost copies after an await",
  "toHost copies after a setTimeout",
  "fromHost keeps the caller's array",
  "gather of rows 0..n-1 returns a view of its source",
  "describe answers for a disposed tensor",
  "int64 stored through a JS number",
  "scatter frees its source; dispose throws on the double free",
  "gather of a 0-sized tensor returns the kernel's collapsed shape",
  "reorder copies rows in index order, over rows not yet read",
] as const

type Variant = (typeof VARIANTS)[number]

/** The host backend with one primitive replaced. */
export function broken(variant: Variant): HostBackend {
  const host = hostBackend()
  switch (variant) {
    case "unbroken":
      return host
    case "toHost copies after an await":
      return {
        ...host,
        toHost: async (t) => {
          await Promise.resolve()
          return host.toHost(t)
        },
      }
    case "toHost copies after a setTimeout":
      return {
        ...host,
        toHost: (t) =>
          new Promise((resolve, reject) =>
            setTimeout(() => {
              try {
                resolve(host.toHost(t))
              } catch (e) {
                reject(e)
              }
            }, 0),
          ),
      }
    case "fromHost keeps the caller's array": {
      // Returns a tensor over the caller's array: allocate a tensor to count it live, then swap in
      // a look-alike over `host.data` that disposes the counted one.
      const kept = new Map<HostTensor, HostTensor>()
      return {
        ...host,
        fromHost: (h, leaf) => {
          const counted = host.allocate(h.shape, h.dtype, leaf)
          const t = new HostTensor(h.dtype, h.shape, h.data)
          kept.set(t, counted)
          return t
        },
        dispose: (t) => {
          const counted = kept.get(t as HostTensor)
          kept.delete(t as HostTensor)
          host.dispose(counted ?? t)
        },
      }
    }
    case "gather of rows 0..n-1 returns a view of its source":
      return {
        ...host,
        gather: (src, rows, leaf) =>
          rows.length === src.shape[leaf.batchAxis] && rows.every((r, i) => r === i)
            ? new HostTensor(src.dtype, src.shape, src.data)
            : host.gather(src, rows, leaf),
      }
    case "describe answers for a disposed tensor":
      return {
        ...host,
        describe: (x) => (x instanceof HostTensor ? { shape: x.shape, dtype: x.dtype } : undefined),
      }
    case "int64 stored through a JS number":
      return {
        ...host,
        fromHost: (h, leaf) =>
          host.fromHost(
            h.dtype === "int64"
              ? new HostTensor(
                  "int64",
                  h.shape,
                  BigInt64Array.from(h.data as BigInt64Array, (v) => BigInt(Number(v))),
                )
              : h,
            leaf,
          ),
      }
    case "scatter frees its source; dispose throws on the double free":
      return {
        ...host,
        scatter: (dst, rows, src, leaf) => {
          host.scatter(dst, rows, src, leaf)
          host.dispose(src)
        },
        dispose: (t) => {
          if (isHostTensorDisposed(t as HostTensor)) throw new Error("host tensor freed twice")
          host.dispose(t)
        },
      }
    case "gather of a 0-sized tensor returns the kernel's collapsed shape":
      // As a gather kernel that flattens to [1, outer, rows, inner] and returns early when there
      // is nothing to copy, without restoring the shape.
      return {
        ...host,
        gather: (src, rows, leaf) => {
          if (src.data.length > 0) return host.gather(src, rows, leaf)
          const outer = sizeOf(src.shape.slice(0, leaf.batchAxis))
          const inner = sizeOf(src.shape.slice(leaf.batchAxis + 1))
          return host.allocate([1, outer, rows.length, inner], src.dtype, leaf)
        },
      }
    case "reorder copies rows in index order, over rows not yet read":
      // The first in-place loop one writes: row i takes row rows[i] as it is now, which an
      // earlier write may already have replaced (any order with a cycle).
      return {
        ...host,
        reorder: (t, rows, leaf) => {
          const outer = sizeOf(t.shape.slice(0, leaf.batchAxis))
          const inner = sizeOf(t.shape.slice(leaf.batchAxis + 1))
          const n = t.shape[leaf.batchAxis] as number
          for (let i = 0; i < rows.length; i++)
            for (let o = 0; o < outer; o++) {
              const from = (o * n + (rows[i] as number)) * inner
              t.data.copyWithin((o * n + i) * inner, from, from + inner)
            }
        },
      }
  }
}
