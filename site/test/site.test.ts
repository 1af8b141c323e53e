// The built site in headless Chromium: each page runs, shows the numbers it should, and draws.
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import type { Browser, Page } from "playwright"
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest"
import { streamPlans } from "../src/audio.js"
import {
  CHROMIUM,
  buildSite,
  hasChromium,
  launch,
  open,
  repoRoot,
  serveSite,
  siteRoot,
} from "./harness.js"
import { pixelStats } from "./pixels.js"
import { type Reference, decodingReference } from "./decoding-reference.js"
import { expectedSegments, parseSegments, speech } from "./reference.js"

const screenshots = join(repoRoot, ".tmp/site-screenshots")
let outDir = ""

beforeAll(async () => {
  outDir = await buildSite()
})
afterAll(() => {
  if (outDir !== "") rmSync(outDir, { recursive: true, force: true })
})

describe("site build", () => {
  it("writes the four pages, with the model, the audio and ONNX Runtime's wasm as files of the folder", () => {
    const files = readdirSync(outDir)
    expect(files).toEqual(
      expect.arrayContaining(["index.html", "streams.html", "recall.html", "decoding.html"]),
    )
    const assets = readdirSync(join(outDir, "assets"))
    for (const pattern of [
      /^silero_vad_v5-.*\.onnx$/,
      /^speech-.*\.wav$/,
      /^ort-wasm-simd-threaded\.asyncify-.*\.wasm$/,
      /^ort-wasm-simd-threaded\.asyncify-.*\.mjs$/,
    ]) {
      expect(
        assets.some((f) => pattern.test(f)),
        String(pattern),
      ).toBe(true)
    }
  })
})

const waitDone = (page: Page, timeout: number) =>
  page.waitForFunction(
    () => ["done", "error"].includes(document.getElementById("status")?.dataset["state"] ?? ""),
    null,
    { timeout },
  )

/** Screenshot of the element (saved under .tmp/site-screenshots/) and its pixel statistics. */
async function shoot(browser: Browser, page: Page, selector: string, name: string) {
  mkdirSync(screenshots, { recursive: true })
  await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => r(null))))
  const png = await page.locator(selector).first().screenshot()
  writeFileSync(join(screenshots, `${name}.png`), png)
  return pixelStats(browser, png)
}

if (!hasChromium()) {
  const line = "!".repeat(78)
  console.warn(
    `\n${line}\n!! site: every page test was SKIPPED: ${CHROMIUM} not found.\n!! Install Debian's chromium (apt-get install -y chromium) to run them.\n${line}\n`,
  )
  describe("site pages (headless Chromium)", () => {
    if (process.env["CI"] === "true") {
      it("runs in headless Chromium (required when CI=true)", () => {
        expect.fail(`site pages cannot run: ${CHROMIUM} not found`)
      })
    } else {
      it.skip(`skipped: ${CHROMIUM} not found`, () => undefined)
    }
  })
} else {
  describe("site pages (headless Chromium)", () => {
    let browser: Browser
    let server: { url: string; close: () => Promise<void> }
    beforeAll(async () => {
      server = await serveSite(outDir)
      browser = await launch()
    })
    afterAll(async () => {
      await browser?.close()
      await server?.close()
    })

    it("landing page: links to the three pages, every guide in docs/ and the API reference", async () => {
      const { page, errors } = await open(browser, `${server.url}index.html`)
      const guides = await page.$$eval("#guides a", (as) =>
        as.map((a) => [a.getAttribute("href"), a.textContent]),
      )
      const docs = readdirSync(join(repoRoot, "docs")).filter((f) => f.endsWith(".md"))
      expect(guides.map(([href]) => href).sort()).toEqual(
        docs.map((f) => `api/documents/${f.replace(/\.md$/, ".html")}`).sort(),
      )
      expect(guides.find(([href]) => href?.endsWith("/concepts.html"))?.[1]).toBe("Concepts")
      expect(await page.getAttribute("#api", "href")).toBe("api/index.html")
      // After `pnpm site:build` (a CI step), site/dist holds the guides and the API reference:
      // every guide its landing page links to is there.
      const full = join(siteRoot, "dist")
      if (existsSync(join(full, "api/index.html"))) {
        const linked = [
          ...readFileSync(join(full, "index.html"), "utf8").matchAll(
            /href="(api\/documents\/[^"]+)"/g,
          ),
        ].map((m) => m[1] as string)
        expect(linked.length).toBeGreaterThan(0)
        for (const href of linked) expect(existsSync(join(full, href)), href).toBe(true)
      } else {
        console.warn("site/dist/api not built (pnpm site:build): guide links checked by name only")
      }
      const stats = await shoot(browser, page, "body", "index")
      expect(stats.variance).toBeGreaterThan(100)
      await page.click("text=Carried vs reset")
      await page.waitForURL(/recall\.html$/)
      expect(await page.textContent("h1")).toBe("Carried vs reset")
      await page.goBack()
      await page.click("text=Many streams, one model")
      await page.waitForURL(/streams\.html$/)
      expect(await page.textContent("h1")).toBe("Many streams, one model")
      await page.goBack()
      await page.click("text=Decoding with a cache")
      await page.waitForURL(/decoding\.html$/)
      expect(await page.textContent("h1")).toBe("Decoding with a cache")
      expect(errors).toEqual([])
      await page.close()
    })

    it("streams page on wasm: every stream's segments equal Node's, the same audio run alone on onnxruntime-node", async () => {
      const { samples, sampleRate } = speech()
      const plans = streamPlans(samples, sampleRate)
      const expected = await expectedSegments(
        plans.map((p) => p.audio),
        sampleRate,
      )
      const { page, errors } = await open(
        browser,
        `${server.url}streams.html?backend=wasm&pace=fast&autostart=1`,
      )
      await waitDone(page, 180_000)
      expect(await page.textContent("#status")).toMatch(/^done: /)
      // The headers the site documents make the page cross-origin isolated (wasm threads).
      expect(await page.evaluate(() => crossOriginIsolated)).toBe(true)
      const shown = await page.$$eval(".segments", (els) =>
        els.map((e) => [e.dataset["key"], e.dataset["done"], e.textContent]),
      )
      expect(shown.map(([key]) => key)).toEqual(plans.map((p) => p.key))
      const probabilities = await page.evaluate(() =>
        Object.fromEntries(
          (globalThis as unknown as { statesaverDemo: { probabilities: Map<string, number[]> } })
            .statesaverDemo.probabilities,
        ),
      )
      plans.forEach((plan, i) => {
        const [, done, text] = shown[i] as [string, string, string]
        const want = expected[i] as (typeof expected)[number]
        expect(done, plan.key).toBe("true")
        expect(parseSegments(text), `${plan.key}: ${text}`).toEqual(want.segments)
        const got = probabilities[plan.key] as number[]
        expect(got.length, plan.key).toBe(want.probabilities.length)
        const diff = Math.max(...got.map((p, f) => Math.abs(p - (want.probabilities[f] as number))))
        expect(diff, `${plan.key}: largest probability difference`).toBeLessThan(1e-3)
      })
      expect(Number(await page.getAttribute("body", "data-frames"))).toBe(
        expected.reduce((n, e) => n + e.probabilities.length, 0),
      )
      // Every stream's plot: the probability line (blue) and the segments (green band).
      const stats = await shoot(
        browser,
        page,
        'section.card[data-key="recording"] .plot',
        "streams-wasm",
      )
      expect(stats.blue, "probability line (blue) pixels").toBeGreaterThan(300)
      expect(stats.green, "segment band (green) pixels").toBeGreaterThan(3000)
      await shoot(browser, page, "body", "streams-wasm-page")
      expect(errors).toEqual([])
      await page.close()
    })

    it("the Node reference is the Node demo: the recording's segments equal examples/src/ort-vad.ts's output", async () => {
      const lines: string[] = []
      const log = vi.spyOn(console, "log").mockImplementation((...args: unknown[]) => {
        lines.push(args.join(" "))
      })
      try {
        const demo = (await import("../../examples/src/ort-vad.js")) as {
          main: () => Promise<void>
        }
        await demo.main()
      } finally {
        log.mockRestore()
      }
      const fromDemo = lines.flatMap((l) => parseSegments(l))
      const { samples, sampleRate } = speech()
      const [reference] = await expectedSegments([samples], sampleRate)
      expect(fromDemo.length).toBeGreaterThan(0)
      expect(fromDemo).toEqual(reference?.segments)
    })

    it("streams page on WebGPU: the state is never read back to the CPU; only ONNX Runtime's outputs are, in every call", async () => {
      const { page, errors } = await open(
        browser,
        `${server.url}streams.html?backend=webgpu&pace=fast&autostart=1&streams=recording,shifted&frames=24`,
      )
      await waitDone(page, 180_000)
      expect(await page.textContent("#status")).toMatch(/^done: .* on webgpu/)
      const data = await page.evaluate(() => ({ ...document.body.dataset }))
      // recording: ticks 0–23, shifted: ticks 10–33; both streams in the calls of ticks 10–23.
      expect(Number(data["frames"])).toBe(48)
      expect(Number(data["calls"])).toBe(34)
      expect(Number(data["stateReads"])).toBe(0)
      expect(await page.textContent("#state-reads")).toBe("0")
      // The counter sees reads: ONNX Runtime brings the probabilities back in every call.
      expect(Number(data["outputReads"])).toBeGreaterThanOrEqual(Number(data["calls"]))
      const stats = await shoot(
        browser,
        page,
        'section.card[data-key="recording"] .plot',
        "streams-webgpu",
      )
      expect(stats.blue, "probability line (blue) pixels").toBeGreaterThan(50)
      await shoot(browser, page, "body", "streams-webgpu-page")
      expect(errors.filter((e) => !e.includes("VerifyEachNodeIsAssignedToAnEp"))).toEqual([])
      await page.close()
    })

    it("streams page, by hand: a microphone and a joined stream come and go during a run", async () => {
      // Chromium's fake capture device (a beep) stands in for a microphone, granted without asking.
      const withMic = await launch([
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
      ])
      try {
        const { page, errors } = await open(
          withMic,
          `${server.url}streams.html?backend=wasm&pace=realtime&autostart=1&streams=recording`,
        )
        const frames = (key: string) =>
          page.evaluate(
            (k) =>
              (
                globalThis as unknown as {
                  statesaverDemo: { probabilities: Map<string, number[]> }
                }
              ).statesaverDemo.probabilities.get(k)?.length ?? 0,
            key,
          )
        await page.waitForFunction(
          () => document.getElementById("status")?.dataset["state"] === "running",
        )
        await page.click("#mic")
        await page.click("#join")
        await page.waitForFunction(
          () =>
            ((
              globalThis as unknown as { statesaverDemo: { probabilities: Map<string, number[]> } }
            ).statesaverDemo.probabilities.get("microphone")?.length ?? 0) >= 20,
          null,
          { timeout: 30_000 },
        )
        await page.click('section.card[data-key="microphone"] button')
        await waitDone(page, 60_000)
        expect(await page.textContent("#status")).toMatch(/^done: /)
        const done = await page.$$eval(".segments", (els) =>
          Object.fromEntries(els.map((e) => [e.dataset["key"], e.dataset["done"]])),
        )
        expect(done).toEqual({ recording: "true", microphone: "true", "joined-1": "true" })
        expect(await frames("microphone")).toBeGreaterThanOrEqual(20)
        // The joined stream plays 3 s of the recording: 93 frames.
        expect(await frames("joined-1")).toBe(93)
        expect(await frames("recording")).toBe(284)
        expect(errors).toEqual([])
        await page.close()
      } finally {
        await withMic.close()
      }
    })

    it("recall page on WebGL: the model trained with carried state answers clearly better than the one trained with resets", async () => {
      const { page, errors } = await open(
        browser,
        `${server.url}recall.html?backend=webgl&batches=60&autostart=1`,
      )
      await waitDone(page, 180_000)
      expect(await page.textContent("#status")).toMatch(/^done in /)
      const carried = Number(await page.getAttribute("#result", "data-carried"))
      const reset = Number(await page.getAttribute("#result", "data-reset"))
      console.info(`recall page (webgl, 60 batches): carried ${carried}, reset ${reset}`)
      expect(carried).toBeGreaterThan(0.8)
      expect(reset).toBeLessThan(0.5)
      expect(carried - reset).toBeGreaterThan(0.3)
      expect(await page.textContent("#carried-acc")).toBe(`${(100 * carried).toFixed(1)}%`)
      for (const plot of ["#loss-plot", "#acc-plot"]) {
        const stats = await shoot(browser, page, plot, `recall-${plot.slice(1)}`)
        expect(stats.blue, `${plot}: carried (blue) pixels`).toBeGreaterThan(200)
        expect(stats.red, `${plot}: reset (red) pixels`).toBeGreaterThan(200)
      }
      await shoot(browser, page, "body", "recall-page")
      expect(errors).toEqual([])
      await page.close()
    })

    describe("decoding page", () => {
      const GREEDY_PROMPTS = [
        [3, 1, 4, 1, 5],
        [2, 7, 1],
        [1, 4, 1, 4, 2, 1, 3],
      ]
      const BEAM_PROMPT = [9, 2, 6, 5, 3, 5]
      const STEPS = 12
      const WIDTH = 4
      const CAPACITY = 64
      /** Sums of natural-log probabilities: cached on wasm or WebGPU vs no cache on Node. */
      const SCORE_TOL = 1e-4
      /** Bytes of one token's keys and values: 2 layers × (key, value) × 2 heads × 8 × float32. */
      const KV_BYTES_PER_TOKEN = 2 * 2 * 2 * 8 * 4

      let reference: Reference
      let expected: {
        greedy: Awaited<ReturnType<Reference["greedy"]>>[]
        beam: Awaited<ReturnType<Reference["beam"]>>
      }
      beforeAll(async () => {
        reference = await decodingReference()
        expected = {
          greedy: await Promise.all(GREEDY_PROMPTS.map((p) => reference.greedy(p, STEPS))),
          beam: await reference.beam(BEAM_PROMPT, WIDTH, STEPS),
        }
      })
      afterAll(async () => {
        await reference?.release()
      })

      interface Shown {
        cache: string
        greedy: { prompt: number[]; tokens: number[]; logProb: number; lengths: number[] }[]
        beams: { tokens: number[]; logProb: number }[]
        steps: { parents: number[]; lengths: number[]; positions: number }[]
        runs: number
        tokens: number
        stateReads: number
        logitReads: number
        worstDelta: number
        timings: Record<
          "fixed" | "growing",
          { tokensPerSecond: number; stateReadsPerToken: number; bytesCopiedPerToken: number }
        >
      }

      /** Opens the page, waits for its run, and returns what it showed. */
      async function run(query: string) {
        const { page, errors } = await open(browser, `${server.url}decoding.html?${query}`)
        await waitDone(page, 120_000)
        expect(await page.textContent("#status")).toMatch(/^done: /)
        const shown = await page.evaluate(() => {
          const demo = (
            globalThis as unknown as { statesaverDemo: { last: Record<string, unknown> } }
          ).statesaverDemo.last
          const timings = demo["timings"] as Record<string, Record<string, unknown>>
          // Maps do not cross to Node: the timing fields the tests read.
          return {
            ...demo,
            timings: Object.fromEntries(
              Object.entries(timings).map(([k, t]) => [k, { ...t, msByLength: undefined }]),
            ),
          }
        })
        return { page, errors, shown: shown as unknown as Shown }
      }

      /** The page's greedy and beam outputs equal the Node reference's, token for token. */
      function expectReference(shown: Shown): void {
        expect(expected.beam.gap, "beam ranking decided well beyond float error").toBeGreaterThan(
          1e-3,
        )
        shown.greedy.forEach((row, r) => {
          const want = expected.greedy[r] as (typeof expected.greedy)[number]
          expect(want.gap, "greedy choices decided well beyond float error").toBeGreaterThan(1e-3)
          expect(row.prompt).toEqual(GREEDY_PROMPTS[r])
          expect(row.tokens, `greedy row ${r}`).toEqual(want.tokens)
          expect(Math.abs(row.logProb - want.score)).toBeLessThan(SCORE_TOL)
        })
        expect(shown.greedy).toHaveLength(GREEDY_PROMPTS.length)
        expect(shown.beams.map((b) => b.tokens)).toEqual(expected.beam.beams.map((b) => b.tokens))
        shown.beams.forEach((b, i) => {
          expect(Math.abs(b.logProb - (expected.beam.beams[i]?.score as number))).toBeLessThan(
            SCORE_TOL,
          )
        })
        expect(shown.steps.map((s) => s.parents)).toEqual(expected.beam.parents)
        // Cache lengths read from the session: prompt, then one more per step, per row.
        shown.greedy.forEach((row) =>
          expect(row.lengths).toEqual(
            Array.from({ length: STEPS + 1 }, (_, t) => row.prompt.length + t),
          ),
        )
        shown.steps.forEach((s, t) =>
          expect(s.lengths).toEqual(Array(WIDTH).fill(BEAM_PROMPT.length + t + 1)),
        )
      }

      it("on wasm with a fixed cache: greedy and beam search (width 4) equal the Node reference without a cache, per-step lengths and select rows shown, plots drawn", async () => {
        const { page, errors, shown } = await run("backend=wasm&cache=fixed&autostart=1&rounds=1")
        expect(shown.cache).toBe("fixed")
        expectReference(shown)
        expect(shown.steps.map((s) => s.positions)).toEqual(Array(STEPS).fill(CAPACITY))
        // One prefill and 12 steps of greedy, one prefill and 12 steps of beam search.
        expect(shown.runs).toBe(26)
        // The tables show the same tokens.
        const greedyText = await page.$$eval("#greedy tr[data-row]", (trs) =>
          trs.map((tr) => tr.children[1]?.textContent),
        )
        expect(greedyText).toEqual(expected.greedy.map((g) => g.tokens.join(" ")))
        const beamText = await page.$$eval("#beam-result tr", (trs) =>
          trs.slice(1).map((tr) => tr.children[1]?.textContent),
        )
        expect(beamText).toEqual(expected.beam.beams.map((b) => `[${b.tokens.join(" ")}]`))
        const selects = await page.$$eval("#beams tr.select td", (tds) =>
          tds.slice(1).map((td) => td.textContent),
        )
        expect(selects).toEqual(expected.beam.parents.map((p) => p.join(" ")))
        // A fixed cache copies each new token's keys and values into place; a growing one none.
        expect(shown.timings.fixed.bytesCopiedPerToken).toBe(KV_BYTES_PER_TOKEN)
        expect(shown.timings.growing.bytesCopiedPerToken).toBe(0)
        for (const kind of ["fixed", "growing"] as const)
          expect(shown.timings[kind].tokensPerSecond).toBeGreaterThan(0)
        console.info(
          `decoding page (wasm): fixed ${shown.timings.fixed.tokensPerSecond.toFixed(0)} tokens/s, growing ${shown.timings.growing.tokensPerSecond.toFixed(0)} tokens/s; largest log p difference from no cache in the page ${shown.worstDelta.toExponential(1)}`,
        )
        const beams = await shoot(browser, page, "#beams", "decoding-beams")
        expect(beams.blue + beams.red + beams.green, "beam cells (colored)").toBeGreaterThan(2000)
        const scores = await shoot(browser, page, "#score-plot", "decoding-scores")
        expect(scores.blue, "best beam's score line (blue)").toBeGreaterThan(100)
        const timing = await shoot(browser, page, "#timing-plot", "decoding-timing")
        expect(timing.blue, "fixed cache (blue) pixels").toBeGreaterThan(200)
        expect(timing.red, "growing cache (red) pixels").toBeGreaterThan(200)
        await shoot(browser, page, "body", "decoding-wasm-page")
        expect(errors).toEqual([])
        await page.close()
      })

      it("on wasm with a growing cache: the same tokens, the cache grown one position per step", async () => {
        const { page, errors, shown } = await run(
          "backend=wasm&cache=growing&autostart=1&rounds=1&until=12",
        )
        expect(shown.cache).toBe("growing")
        expectReference(shown)
        expect(shown.steps.map((s) => s.positions)).toEqual(
          Array.from({ length: STEPS }, (_, t) => BEAM_PROMPT.length + t + 1),
        )
        expect(errors).toEqual([])
        await page.close()
      })

      it("on WebGPU with a fixed cache: the same tokens, and the cache is never read back to the CPU; only the logits are, in every run", async () => {
        const { page, errors, shown } = await run(
          "backend=webgpu&cache=fixed&autostart=1&rounds=1&until=16",
        )
        expect(await page.textContent("#status")).toMatch(/ on webgpu /)
        expectReference(shown)
        expect(shown.stateReads).toBe(0)
        expect(await page.textContent("#state-reads")).toBe("0")
        for (const kind of ["fixed", "growing"] as const)
          expect(shown.timings[kind].stateReadsPerToken, kind).toBe(0)
        // The counter sees reads: ONNX Runtime brings the logits back in every run.
        expect(shown.logitReads).toBeGreaterThanOrEqual(shown.runs)
        expect(shown.timings.fixed.bytesCopiedPerToken).toBe(KV_BYTES_PER_TOKEN)
        expect(await page.isVisible("#gpu-note")).toBe(true)
        const timing = await shoot(browser, page, "#timing-plot", "decoding-webgpu-timing")
        expect(timing.blue, "fixed cache (blue) pixels").toBeGreaterThan(100)
        await shoot(browser, page, "body", "decoding-webgpu-page")
        expect(errors.filter((e) => !e.includes("VerifyEachNodeIsAssignedToAnEp"))).toEqual([])
        await page.close()
      })
    })
  })
}
