/** Reads a screenshot's pixels in the browser (its PNG decoder): no image library needed. */
import type { Browser } from "playwright"

export interface PixelStats {
  readonly width: number
  readonly height: number
  /** Variance of the luminance (0–255), over all pixels. */
  readonly variance: number
  /**
   * Colored pixels (channels more than 20 apart) by their strongest channel. Axes, grid lines
   * and text are gray, so an empty plot has none: these count the data drawn.
   */
  readonly red: number
  readonly green: number
  readonly blue: number
}

export async function pixelStats(browser: Browser, png: Buffer): Promise<PixelStats> {
  const page = await browser.newPage()
  try {
    return await page.evaluate(async (b64) => {
      const img = new Image()
      img.src = `data:image/png;base64,${b64}`
      await img.decode()
      const canvas = document.createElement("canvas")
      canvas.width = img.naturalWidth
      canvas.height = img.naturalHeight
      const ctx = canvas.getContext("2d") as CanvasRenderingContext2D
      ctx.drawImage(img, 0, 0)
      const { data } = ctx.getImageData(0, 0, canvas.width, canvas.height)
      const counts = [0, 0, 0]
      let sum = 0
      let sum2 = 0
      const n = data.length / 4
      for (let i = 0; i < data.length; i += 4) {
        const rgb = [data[i] as number, data[i + 1] as number, data[i + 2] as number]
        const y =
          0.2126 * (rgb[0] as number) + 0.7152 * (rgb[1] as number) + 0.0722 * (rgb[2] as number)
        sum += y
        sum2 += y * y
        const max = Math.max(...rgb)
        if (max - Math.min(...rgb) > 20) {
          const k = rgb.indexOf(max)
          counts[k] = (counts[k] as number) + 1
        }
      }
      const mean = sum / n
      return {
        width: canvas.width,
        height: canvas.height,
        variance: sum2 / n - mean * mean,
        red: counts[0] as number,
        green: counts[1] as number,
        blue: counts[2] as number,
      }
    }, png.toString("base64"))
  } finally {
    await page.close()
  }
}
