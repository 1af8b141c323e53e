/** uPlot charts that grow while the page runs, redrawn at most once per animation frame. */
import uPlot from "uplot"
import "uplot/dist/uPlot.min.css"

export interface SeriesStyle {
  readonly label: string
  readonly stroke: string
  readonly fill?: string
  readonly stepped?: boolean
  readonly dash?: number[]
}

export interface LivePlot {
  /** Appends one point: x and one value per series (null: no value). */
  push(x: number, ...ys: (number | null)[]): void
  /** Overwrites series `s` at point index `i` (a segment closed late). */
  set(s: number, i: number, y: number | null): void
  readonly plot: uPlot
}

const pending = new Set<() => void>()
let scheduled = false
function schedule(redraw: () => void): void {
  pending.add(redraw)
  if (scheduled) return
  scheduled = true
  requestAnimationFrame(() => {
    scheduled = false
    const all = [...pending]
    pending.clear()
    for (const r of all) r()
  })
}

/** A line chart in `el` whose data grows with `push`. */
export function livePlot(
  el: HTMLElement,
  options: {
    title?: string
    series: SeriesStyle[]
    x: { label: string; min?: number; max?: number }
    y: { label: string; min?: number; max?: number }
    height?: number
    /** Shows the series' names and values under the plot (default true). */
    legend?: boolean
  },
): LivePlot {
  const stepped = uPlot.paths.stepped?.({ align: 1 })
  const xs: number[] = []
  const ys: (number | null)[][] = options.series.map(() => [])
  const width = Math.max(280, el.clientWidth || 480)
  const plot = new uPlot(
    {
      ...(options.title === undefined ? {} : { title: options.title }),
      width,
      height: options.height ?? 180,
      legend: { show: options.legend ?? true },
      scales: {
        x: {
          time: false,
          ...(options.x.max === undefined
            ? {}
            : {
                range: (_u, min, max) => [
                  options.x.min ?? min,
                  Math.max(max, options.x.max ?? max),
                ],
              }),
        },
        y: {
          range: (_u, min, max) => [options.y.min ?? min, options.y.max ?? max],
        },
      },
      axes: [{ label: options.x.label }, { label: options.y.label }],
      series: [
        { label: options.x.label },
        ...options.series.map((s) => ({
          label: s.label,
          stroke: s.stroke,
          width: 2,
          points: { show: false },
          ...(s.fill === undefined ? {} : { fill: s.fill }),
          ...(s.dash === undefined ? {} : { dash: s.dash }),
          ...(s.stepped && stepped !== undefined ? { paths: stepped } : {}),
        })),
      ],
    },
    [xs, ...ys],
    el,
  )
  const redraw = () => plot.setData([xs, ...ys])
  new ResizeObserver(() => {
    const w = Math.max(280, el.clientWidth)
    if (w !== plot.width) plot.setSize({ width: w, height: plot.height })
  }).observe(el)
  return {
    plot,
    push(x, ...values) {
      xs.push(x)
      ys.forEach((s, i) => s.push(values[i] ?? null))
      schedule(redraw)
    },
    set(s, i, y) {
      const series = ys[s]
      if (series === undefined || i < 0 || i >= series.length) return
      series[i] = y
      schedule(redraw)
    },
  }
}
