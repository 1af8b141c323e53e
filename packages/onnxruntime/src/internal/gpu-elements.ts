// Row operations on GPU tensors whose rows are not whole 4-byte words (float16, uint8 and bool rows
// of odd sizes): WebGPU copies and writes need 4-byte offsets and sizes, so these rows are written
// by a compute pass that rebuilds each touched 32-bit word from its 2 or 4 elements.
import {
  type GpuBuffer,
  type GpuComputeDevice,
  type GpuComputePipeline,
  USAGE_COPY_DST,
  USAGE_STORAGE,
  USAGE_UNIFORM,
  roundUp,
} from "./webgpu.js"

const WORKGROUP = 64
const MAX_GROUPS = 65535
const KEEP = 0xffffffff
const FROM_INIT = 0x80000000

// One invocation per touched destination word. plan[i * (k + 1)] is the word's index; the k codes
// after it say, per element of the word, where it comes from: KEEP, a source element, or (high
// bit set) an element of the init buffer.
const SHADER = /* wgsl */ `
struct Params { words: u32, k: u32, bits: u32, first: u32 }
@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read> initb: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;
@group(0) @binding(3) var<storage, read> plan: array<u32>;
@group(0) @binding(4) var<uniform> p: Params;

fn element(fromInit: bool, index: u32, mask: u32) -> u32 {
  let shift = (index % p.k) * p.bits;
  var w: u32;
  if (fromInit) { w = initb[index / p.k]; } else { w = src[index / p.k]; }
  return (w >> shift) & mask;
}

@compute @workgroup_size(${WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x + p.first;
  if (i >= p.words) { return; }
  let base = i * (p.k + 1u);
  let wi = plan[base];
  let mask = (1u << p.bits) - 1u;
  var w = dst[wi];
  for (var j = 0u; j < p.k; j = j + 1u) {
    let code = plan[base + 1u + j];
    if (code == ${KEEP}u) { continue; }
    let v = element((code & ${FROM_INIT}u) != 0u, code & ${FROM_INIT - 1}u, mask);
    let shift = j * p.bits;
    w = (w & ~(mask << shift)) | (v << shift);
  }
  dst[wi] = w;
}
`

const pipelines = new WeakMap<GpuComputeDevice, GpuComputePipeline>()

function pipelineFor(dev: GpuComputeDevice): GpuComputePipeline {
  let p = pipelines.get(dev)
  if (p === undefined) {
    const module = dev.createShaderModule({ code: SHADER })
    p = dev.createComputePipeline({ layout: "auto", compute: { module, entryPoint: "main" } })
    pipelines.set(dev, p)
  }
  return p
}

/** One element write: destination element index, and its source element (in `src` or `init`). */
export interface ElementWrite {
  readonly to: number
  readonly from: number
  readonly fromInit: boolean
}

function storage(dev: GpuComputeDevice, data: Uint8Array | Uint32Array): GpuBuffer {
  const bytes = Math.max(16, roundUp(data.byteLength, 16))
  const buffer = dev.createBuffer({ size: bytes, usage: USAGE_STORAGE | USAGE_COPY_DST })
  if (data.byteLength > 0) {
    const padded = new Uint8Array(roundUp(data.byteLength, 4))
    padded.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength))
    dev.queue.writeBuffer(buffer, 0, padded)
  }
  return buffer
}

/**
 * Queues element writes into `dst` (elements of `elementBytes` = 1 or 2 bytes): each from `src`
 * or from `init` (host bytes, one row block). Nothing is read back; the temporary buffers are
 * destroyed once queued (WebGPU keeps them alive until the pass has run).
 */
export function writeElements(
  dev: GpuComputeDevice,
  dst: GpuBuffer,
  src: GpuBuffer | undefined,
  init: Uint8Array | undefined,
  elementBytes: 1 | 2,
  writes: readonly ElementWrite[],
): void {
  if (writes.length === 0) return
  const k = 4 / elementBytes
  const words = new Map<number, Uint32Array>()
  for (const { to, from, fromInit } of writes) {
    const w = Math.floor(to / k)
    let codes = words.get(w)
    if (codes === undefined) {
      codes = new Uint32Array(k).fill(KEEP)
      words.set(w, codes)
    }
    codes[to % k] = fromInit ? (from | FROM_INIT) >>> 0 : from
  }
  const plan = new Uint32Array(words.size * (k + 1))
  let at = 0
  for (const [w, codes] of words) {
    plan[at] = w
    plan.set(codes, at + 1)
    at += k + 1
  }
  const initBuffer = storage(dev, init ?? new Uint8Array(4))
  const planBuffer = storage(dev, plan)
  const pipeline = pipelineFor(dev)
  const temporaries = [initBuffer, planBuffer]
  const encoder = dev.createCommandEncoder()
  const perPass = MAX_GROUPS * WORKGROUP
  for (let first = 0; first < words.size; first += perPass) {
    const params = dev.createBuffer({ size: 16, usage: USAGE_UNIFORM | USAGE_COPY_DST })
    dev.queue.writeBuffer(params, 0, new Uint32Array([words.size, k, 8 * elementBytes, first]))
    temporaries.push(params)
    const group = dev.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: [
        { binding: 0, resource: { buffer: src ?? initBuffer } },
        { binding: 1, resource: { buffer: initBuffer } },
        { binding: 2, resource: { buffer: dst } },
        { binding: 3, resource: { buffer: planBuffer } },
        { binding: 4, resource: { buffer: params } },
      ],
    })
    const pass = encoder.beginComputePass()
    pass.setPipeline(pipeline)
    pass.setBindGroup(0, group)
    pass.dispatchWorkgroups(Math.ceil(Math.min(perPass, words.size - first) / WORKGROUP))
    pass.end()
  }
  dev.queue.submit([encoder.finish()])
  for (const b of temporaries) b.destroy()
}
