/**
 * Speech segments from per-frame speech probabilities, with the thresholds of the Node demo
 * (`examples/src/ort-vad.ts`): a segment opens at a frame with p >= 0.5 and closes after 8 frames
 * (~250 ms) in a row with p < 0.35.
 */
export const START = 0.5
export const END = 0.35
export const HANGOVER = 8

export class SegmentTracker {
  /** Closed segments as [first frame, end frame). */
  readonly segments: [number, number][] = []
  private start: number | undefined
  private quiet = 0
  private frames = 0

  /** Takes the next frame's probability; returns the segment it closed, if any. */
  push(p: number): [number, number] | undefined {
    const f = this.frames++
    if (this.start === undefined) {
      if (p >= START) this.start = f
    } else if (p < END) {
      if (++this.quiet >= HANGOVER) {
        const closed: [number, number] = [this.start, f - this.quiet + 1]
        this.segments.push(closed)
        this.start = undefined
        this.quiet = 0
        return closed
      }
    } else this.quiet = 0
    return undefined
  }

  /** The open segment's first frame, if one is open. */
  get open(): number | undefined {
    return this.start
  }

  /** Ends the stream: an open segment closes at its last frame. */
  finish(): [number, number][] {
    if (this.start !== undefined) this.segments.push([this.start, this.frames])
    this.start = undefined
    return this.segments
  }
}

/** "0.67–1.57 s, 1.89–3.23 s" (frames of `frame` samples), or "no speech". */
export function formatSegments(
  segments: readonly (readonly [number, number])[],
  frame: number,
  sampleRate: number,
): string {
  if (segments.length === 0) return "no speech"
  const sec = (f: number) => ((f * frame) / sampleRate).toFixed(2)
  return segments.map(([a, b]) => `${sec(a)}–${sec(b)} s`).join(", ")
}
