import * as tf from "@tensorflow/tfjs"
import { RowIndexError } from "@statesaver/core"
import { type MaskInput, checkMask, checkSelection } from "./checks.js"
import * as E from "./either.js"

const GRID_DTYPES = ["bool", "int32", "float32"]

const isRowArray = (x: unknown): boolean => Array.isArray(x) || x instanceof Uint8Array

/** True when `mask` is given in its `[batch, n]` form (a rank-2 tensor or an array of rows). */
export const isGridMask = (mask: unknown): boolean =>
  mask instanceof tf.Tensor
    ? mask.rank === 2
    : Array.isArray(mask) && mask.length > 0 && isRowArray(mask[0])

/**
 * Checks a `[rows, cols]` mask and returns its columns as host flags (`out[c][r]` is 1 where
 * row `r` is flagged at column `c`). A tensor mask is read back once (it is a batch's input).
 */
export function checkGridMask(
  mask: unknown,
  rows: number,
  cols: number,
  field: string,
  colName: string,
): E.Either<RowIndexError, Uint8Array[]> {
  const shape = `a [${rows}, ${cols}] mask (rows, ${colName})`
  const out = Array.from({ length: cols }, () => new Uint8Array(rows))
  if (mask instanceof tf.Tensor) {
    if (mask.isDisposed)
      return E.left(
        new RowIndexError({ expected: shape, actual: mask, detail: `${field}: it was disposed` }),
      )
    if (mask.rank !== 2 || mask.shape[0] !== rows || mask.shape[1] !== cols) {
      return E.left(
        new RowIndexError({
          expected: shape,
          actual: mask.shape,
          detail: `${field}: the mask tensor's shape`,
        }),
      )
    }
    if (!GRID_DTYPES.includes(mask.dtype)) {
      return E.left(
        new RowIndexError({
          expected: "a mask tensor of dtype bool, int32 or float32",
          actual: mask.dtype,
          detail: field,
        }),
      )
    }
    const data = mask.dataSync()
    for (let r = 0; r < rows; r++)
      for (let c = 0; c < cols; c++) if (data[r * cols + c] !== 0) (out[c] as Uint8Array)[r] = 1
    return E.right(out)
  }
  if (!Array.isArray(mask) || mask.length !== rows) {
    return E.left(
      new RowIndexError({
        expected: shape,
        actual: mask,
        detail: Array.isArray(mask) ? `${field}: ${mask.length} rows` : field,
      }),
    )
  }
  for (let r = 0; r < rows; r++) {
    const row: unknown = mask[r]
    if (!isRowArray(row) || (row as ArrayLike<unknown>).length !== cols) {
      return E.left(
        new RowIndexError({
          expected: `${cols} entries per row (${colName})`,
          actual: row,
          detail: `${field}: row ${r}`,
        }),
      )
    }
    const entries = row as ArrayLike<unknown>
    for (let c = 0; c < cols; c++) {
      const v = entries[c]
      if (typeof v !== "boolean" && v !== 0 && v !== 1) {
        return E.left(
          new RowIndexError({
            expected: "mask entries true/false or 0/1",
            actual: v,
            detail: `${field}: row ${r}, entry ${c}`,
          }),
        )
      }
      if (v === true || v === 1) (out[c] as Uint8Array)[r] = 1
    }
  }
  return E.right(out)
}

/** One call of the step: `size` steps from `begin` (within the window), after `resets`. */
export interface Segment {
  readonly begin: number
  readonly size: number
  /** Masks applied (`resetWhere`) to the state before this segment, in order. */
  readonly resets: readonly MaskInput[]
}

/** One window of a batch: its place in the batch and the step calls it is split into. */
export interface WindowPlan {
  readonly index: number
  readonly begin: number
  readonly size: number
  readonly segments: readonly Segment[]
}

/** How a batch is cut into windows and where rows are reset. */
export interface BatchPlan {
  readonly windows: readonly WindowPlan[]
  /** The held rows the batch's rows continue (`saver.select`), or undefined to keep them as they are. */
  readonly resize: (number | null)[] | undefined
}

const any = (flags: Uint8Array | undefined): flags is Uint8Array =>
  flags !== undefined && flags.includes(1)

/**
 * Checks the batch's `starts`, `windowStarts` and `rows` and plans its windows: a window is cut
 * into segments where some row starts a sequence inside it, each segment starting with the masks
 * of the rows it resets.
 */
export function planBatch(
  batch: Readonly<Record<string, unknown>>,
  dims: {
    readonly rows: number
    readonly time: number
    readonly held: number
    readonly windowSize: number
    readonly resetEveryWindow: boolean
  },
): E.Either<RowIndexError, BatchPlan> {
  const { rows, time, held, windowSize, resetEveryWindow } = dims
  const count = Math.ceil(time / windowSize)
  /** Host flags per time step (rows reset right before that step), where some row is. */
  const at = new Map<number, Uint8Array>()
  const flag = (t: number, flags: Uint8Array): void => {
    if (!any(flags)) return
    const prior = at.get(t)
    if (prior === undefined) at.set(t, flags.slice())
    else for (let r = 0; r < rows; r++) prior[r] = (prior[r] ?? 0) | (flags[r] ?? 0)
  }
  let first: MaskInput | undefined
  const starts: unknown = batch["starts"]
  if (starts !== undefined) {
    if (isGridMask(starts)) {
      const grid = checkGridMask(starts, rows, time, "starts", "time steps")
      if (grid._tag === "Left") return grid
      grid.right.forEach((flags, t) => flag(t, flags))
    } else {
      const mask = checkMask(starts, rows)
      if (mask._tag === "Left") return mask
      first = mask.right
    }
  }
  const windowStarts: unknown = batch["windowStarts"]
  if (windowStarts !== undefined) {
    const grid = checkGridMask(windowStarts, rows, count, "windowStarts", "windows")
    if (grid._tag === "Left") return grid
    grid.right.forEach((flags, w) => flag(w * windowSize, flags))
  }
  let resize: (number | null)[] | undefined
  const picked: unknown = batch["rows"]
  if (picked !== undefined) {
    const valid = checkSelection(picked, held)
    if (valid._tag === "Left") return valid
    if (valid.right.length !== rows) {
      return E.left(
        new RowIndexError({
          expected: `${rows} entries, one per row of inputs`,
          actual: picked,
          detail: `rows: ${valid.right.length} entries`,
        }),
      )
    }
    resize = rows === held && valid.right.every((r, i) => r === i) ? undefined : [...valid.right]
  } else if (rows !== held) {
    resize = Array.from({ length: rows }, (_, i) => (i < held ? i : null))
  }
  const everyRow = new Uint8Array(rows).fill(1)
  const windows: WindowPlan[] = []
  for (let w = 0; w < count; w++) {
    const begin = w * windowSize
    const size = Math.min(windowSize, time - begin)
    const segments: Segment[] = []
    let from = 0
    let resets: MaskInput[] = []
    if (resetEveryWindow) resets.push(everyRow)
    else {
      if (w === 0 && first !== undefined) resets.push(first)
      const flags = at.get(begin)
      if (flags !== undefined) resets.push(flags)
    }
    for (let t = 1; t < size; t++) {
      const flags = at.get(begin + t)
      if (flags === undefined) continue
      segments.push({ begin: from, size: t - from, resets })
      from = t
      resets = [flags]
    }
    segments.push({ begin: from, size: size - from, resets })
    windows.push({ index: w, begin, size, segments })
  }
  return E.right({ windows, resize })
}
