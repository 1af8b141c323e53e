// Stacking streams' feeds into one batch and splitting a batched run's outputs per stream.
import {
  BackendError,
  BatchSizeMismatchError,
  type DType,
  type StreamKey,
  formatPath,
} from "@statesaver/core"
import type { OrtRuntime, OrtTensor } from "../ort-backend.js"
import * as E from "./either.js"
import { isSupportedOrtType } from "./dtypes.js"
import type { Lend } from "./scratch.js"
import { type TensorData, copyData, sliceRow, stackRows } from "./rows.js"
import { setKey } from "./session-state.js"

/** Batch axis of each non-state input and output; `null` for per-call values. */
type Axes = Readonly<Record<string, number | null>>

/**
 * The feeds of a run: the per-call feeds, then each stacked input (one stream's feed as it is,
 * several streams' rows stacked along the input's batch axis into a new tensor). `stacked` lists
 * the new tensors, which the caller frees after the run.
 */
export function stackFeeds(
  ort: OrtRuntime,
  shared: Readonly<Record<string, OrtTensor>>,
  batched: ReadonlyMap<string, readonly OrtTensor[]>,
  axes: Axes,
  lend?: Lend,
): { feeds: Record<string, OrtTensor>; stacked: OrtTensor[] } {
  const feeds: Record<string, OrtTensor> = {}
  for (const name of Object.keys(shared)) setKey(feeds, name, shared[name] as OrtTensor)
  const stacked: OrtTensor[] = []
  for (const [name, parts] of batched) {
    if (parts.length === 1) {
      setKey(feeds, name, parts[0] as OrtTensor)
      continue
    }
    const first = parts[0] as OrtTensor
    const axis = axes[name] as number
    const dims = [...first.dims]
    dims[axis] = parts.length
    const data = stackRows(
      parts.map((p) => p.data as TensorData),
      first.dims,
      axis,
      lend === undefined || !isSupportedOrtType(first.type)
        ? undefined
        : (length) => {
            const lent = lend(name, first.type as DType, length)
            // The array kind the runtime expects for this type (a float16 Float16Array aside).
            return lent.constructor === first.data.constructor ? (lent as TensorData) : undefined
          },
    )
    const t = new ort.Tensor(first.type as "float32", data as Float32Array, dims)
    stacked.push(t)
    setKey(feeds, name, t)
  }
  return { feeds, stacked }
}

type Read = E.Either<BatchSizeMismatchError | BackendError, Map<string, TensorData>>

/**
 * Host data of each non-state output of a batched run, after checking its batch size (nothing is
 * read for a run of one stream, whose outputs are handed over as they are, nor without `read`).
 * A promise only when an output must be read from a device: outputs on the CPU are read without
 * a turn of the loop.
 */
export function readOutputs(
  outputs: Readonly<Record<string, OrtTensor>>,
  stateOutputs: ReadonlySet<string>,
  axes: Axes,
  batchSize: number,
  backend: string,
  read: boolean,
): Read | Promise<Read> {
  const data = new Map<string, TensorData>()
  let onDevice: string[] | undefined
  for (const name in outputs) {
    if (stateOutputs.has(name)) continue
    const t = outputs[name] as OrtTensor
    const axis = axes[name] ?? null
    if (axis !== null && t.dims[axis] !== batchSize) {
      return E.left(
        new BatchSizeMismatchError({
          path: formatPath([name]),
          expected: batchSize,
          actual: t.dims[axis] ?? 0,
          axis,
        }),
      )
    }
    if (batchSize === 1 || !read) continue
    if (t.location === "cpu") data.set(name, t.data as TensorData)
    else (onDevice ??= []).push(name)
  }
  return onDevice === undefined ? E.right(data) : download(outputs, onDevice, data, backend)
}

/** Reads the outputs named `names` from their device into `data`. */
async function download(
  outputs: Readonly<Record<string, OrtTensor>>,
  names: readonly string[],
  data: Map<string, TensorData>,
  backend: string,
): Promise<Read> {
  for (const name of names) {
    try {
      data.set(name, (await (outputs[name] as OrtTensor).getData()) as TensorData)
    } catch (cause) {
      return E.left(
        new BackendError({ backend, operation: "getData", path: formatPath([name]), cause }),
      )
    }
  }
  return E.right(data)
}

/**
 * Each stream's row of every output; outputs without a batch axis are copied to each stream. A
 * run of one stream hands the outputs over as they are; otherwise the batched outputs are freed.
 */
export function splitOutputs(
  ort: OrtRuntime,
  keys: readonly StreamKey[],
  outputs: Record<string, OrtTensor>,
  data: ReadonlyMap<string, TensorData>,
  axes: Axes,
): Map<StreamKey, Record<string, OrtTensor>> {
  const result = new Map<StreamKey, Record<string, OrtTensor>>()
  if (keys.length === 1) {
    result.set(keys[0] as StreamKey, outputs)
    return result
  }
  const records: Record<string, OrtTensor>[] = new Array(keys.length)
  for (let row = 0; row < keys.length; row++) {
    const record: Record<string, OrtTensor> = {}
    records[row] = record
    result.set(keys[row] as StreamKey, record)
  }
  for (const name in outputs) {
    const t = outputs[name] as OrtTensor
    const axis = axes[name] ?? null
    const all = data.get(name) as TensorData
    const dims = [...t.dims]
    if (axis !== null) dims[axis] = 1
    for (let row = 0; row < keys.length; row++) {
      const rowData = axis === null ? copyData(all) : sliceRow(all, t.dims, axis, row)
      const out = new ort.Tensor(t.type as "float32", rowData as Float32Array, dims)
      setKey(records[row] as Record<string, OrtTensor>, name, out)
    }
    t.dispose()
  }
  return result
}
