/** Microphone frames at 16 kHz: the browser resamples, an AudioWorklet cuts 512-sample frames. */
import workletUrl from "./mic-worklet.ts?worker&url"

export interface Microphone {
  stop(): void
}

/** Asks for the microphone and calls `onFrame` with each `frame`-sample frame at `sampleRate`. */
export async function startMicrophone(
  sampleRate: number,
  frame: number,
  onFrame: (samples: Float32Array) => void,
): Promise<Microphone> {
  const media = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: true, noiseSuppression: false },
  })
  const context = new AudioContext({ sampleRate })
  await context.audioWorklet.addModule(workletUrl)
  const source = context.createMediaStreamSource(media)
  const node = new AudioWorkletNode(context, "frames", { processorOptions: { frame } })
  node.port.onmessage = (e: MessageEvent<Float32Array>) => onFrame(e.data)
  source.connect(node)
  let stopped = false
  return {
    stop() {
      if (stopped) return
      stopped = true
      node.port.onmessage = null
      source.disconnect()
      for (const t of media.getTracks()) t.stop()
      void context.close()
    },
  }
}
