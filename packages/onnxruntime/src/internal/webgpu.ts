// The slice of the WebGPU API the backend uses, typed structurally so that the package needs no
// WebGPU type declarations and runs where `GPUDevice` is not a global (Node).

export interface GpuBuffer {
  readonly size: number
  destroy(): void
  mapAsync(mode: number, offset?: number, size?: number): Promise<void>
  getMappedRange(offset?: number, size?: number): ArrayBuffer
  unmap(): void
}

export interface GpuCommandEncoder {
  copyBufferToBuffer(
    src: GpuBuffer,
    srcOffset: number,
    dst: GpuBuffer,
    dstOffset: number,
    size: number,
  ): void
  finish(): unknown
}

export interface GpuDevice {
  createBuffer(descriptor: { size: number; usage: number; mappedAtCreation?: boolean }): GpuBuffer
  createCommandEncoder(): GpuCommandEncoder
  readonly queue: {
    writeBuffer(
      buffer: GpuBuffer,
      offset: number,
      data: ArrayBufferView,
      dataOffset?: number,
      size?: number,
    ): void
    submit(commands: unknown[]): void
  }
}

export const USAGE_MAP_READ = 0x0001
export const USAGE_COPY_SRC = 0x0004
export const USAGE_COPY_DST = 0x0008
export const USAGE_STORAGE = 0x0080
export const MAP_MODE_READ = 0x0001

/** Rounds a byte size up to a multiple of `to`. */
export const roundUp = (bytes: number, to: number): number => Math.ceil(bytes / to) * to

/** The compute slice of the WebGPU API, for row operations on elements smaller than 4 bytes. */
export interface GpuComputeDevice extends GpuDevice {
  createShaderModule(descriptor: { code: string }): unknown
  createComputePipeline(descriptor: {
    layout: "auto"
    compute: { module: unknown; entryPoint: string }
  }): GpuComputePipeline
  createBindGroup(descriptor: {
    layout: unknown
    entries: { binding: number; resource: { buffer: GpuBuffer } }[]
  }): unknown
  createCommandEncoder(): GpuCommandEncoder & {
    beginComputePass(): {
      setPipeline(pipeline: GpuComputePipeline): void
      setBindGroup(index: number, group: unknown): void
      dispatchWorkgroups(x: number): void
      end(): void
    }
  }
}

export interface GpuComputePipeline {
  getBindGroupLayout(index: number): unknown
}

export const USAGE_UNIFORM = 0x0040
