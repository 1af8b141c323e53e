/// <reference types="vite/client" />

/** The decoding page's models, written at build time (see vite.config.ts). */
declare module "virtual:tiny-decoder" {
  /** Sizes and seed of the decoder (`tinyDecoderConfig()` of the onnxruntime tests). */
  export const config: {
    readonly vocab: number
    readonly hidden: number
    readonly heads: number
    readonly headDim: number
    readonly layers: number
    readonly maxPosition: number
    readonly seed: number
  }
  /** Takes the whole preallocated cache and a mask; outputs only the new keys and values. */
  export const fixedCacheModel: Uint8Array
  /** Takes the past and outputs past ⧺ new (Optimum's `decoder_with_past`). */
  export const growingCacheModel: Uint8Array
  /** The same weights without a cache: `input_ids`, `attention_mask`, `position_ids` → `logits`. */
  export const noCacheModel: Uint8Array
}
