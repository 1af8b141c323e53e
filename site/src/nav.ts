/** The header every page shares. */
export function siteHeader(current: string): void {
  const pages = [
    ["index.html", "statesaver"],
    ["streams.html", "Many streams, one model"],
    ["recall.html", "Carried vs reset"],
    ["decoding.html", "Decoding with a cache"],
  ] as const
  const header = document.createElement("header")
  header.className = "site"
  for (const [href, title] of pages) {
    const el = document.createElement(href === current ? "strong" : "a")
    el.textContent = title
    if (el instanceof HTMLAnchorElement) el.href = href
    header.append(el)
  }
  document.body.prepend(header)
}

/** Sets the text of the element with this id. */
export function show(id: string, text: string): void {
  const el = document.getElementById(id)
  if (el) el.textContent = text
}

/** The page's query parameters (?backend=webgpu&pace=fast&autostart=1). */
export const params = new URLSearchParams(location.search)
