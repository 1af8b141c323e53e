/**
 * The tiny decoders of the onnxruntime tests (2 layers of real attention, random weights, Optimum
 * input and output names), loaded from their builder at run time: the examples' project does
 * not compile test files, so the builder's signatures are restated here.
 */

/** Sizes of a decoder (all layers attention); the same sizes and seed give the same weights. */
export interface DecoderConfig {
  readonly vocab: number
  readonly hidden: number
  readonly heads: number
  readonly headDim: number
  readonly layers: number
  /** Rows of the position embedding: a sequence must stay shorter. */
  readonly maxPosition: number
  readonly seed: number
}

/** ONNX model bytes of a decoder, in each way it can take its past. */
export interface DecoderBuilders {
  /** vocab 32, hidden 16, 2 heads of 8, 2 layers, 64 positions, seed 1, with `overrides`. */
  tinyDecoderConfig(overrides?: Partial<DecoderConfig>): DecoderConfig
  /** Takes the whole preallocated cache and a mask; outputs only the new keys and values. */
  fixedCacheDecoder(cfg: DecoderConfig): Uint8Array
  /** Takes the past and outputs past ⧺ new (Optimum's `decoder_with_past`). */
  growingDecoder(cfg: DecoderConfig): Uint8Array
  /** No past at all: `input_ids`, `attention_mask`, `position_ids` → `logits`. */
  noCacheDecoder(cfg: DecoderConfig): Uint8Array
}

const BUILDER = new URL("../../packages/onnxruntime/test/helpers/decoders.ts", import.meta.url)
const NAMES = ["tinyDecoderConfig", "fixedCacheDecoder", "growingDecoder", "noCacheDecoder"]

/** Imports the decoder builder (run the examples with tsx, which loads TypeScript). */
export async function loadDecoders(): Promise<DecoderBuilders> {
  const mod = (await import(BUILDER.href)) as Record<string, unknown>
  const missing = NAMES.filter((name) => typeof mod[name] !== "function")
  if (missing.length > 0) {
    throw new Error(`${BUILDER.pathname} no longer exports ${missing.join(", ")}`)
  }
  return mod as unknown as DecoderBuilders
}
