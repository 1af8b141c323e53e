// Runs in the AudioWorkletGlobalScope: gathers 128-sample render quanta into frames.
declare class AudioWorkletProcessor {
  readonly port: MessagePort
  constructor(options?: { processorOptions?: { frame?: number } })
}
declare function registerProcessor(name: string, ctor: typeof AudioWorkletProcessor): void

class Frames extends AudioWorkletProcessor {
  private readonly size: number
  private buffer: Float32Array
  private filled = 0

  constructor(options?: { processorOptions?: { frame?: number } }) {
    super(options)
    this.size = options?.processorOptions?.frame ?? 512
    this.buffer = new Float32Array(this.size)
  }

  process(inputs: Float32Array[][]): boolean {
    const channel = inputs[0]?.[0]
    if (channel === undefined) return true
    let at = 0
    while (at < channel.length) {
      const n = Math.min(this.size - this.filled, channel.length - at)
      this.buffer.set(channel.subarray(at, at + n), this.filled)
      this.filled += n
      at += n
      if (this.filled === this.size) {
        this.port.postMessage(this.buffer, [this.buffer.buffer])
        this.buffer = new Float32Array(this.size)
        this.filled = 0
      }
    }
    return true
  }
}

registerProcessor("frames", Frames)
