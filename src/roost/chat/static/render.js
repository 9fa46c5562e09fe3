// Rendering helpers of the chat page. Text reaches the page only through textContent.

export function el(tag, className, text) {
  const node = document.createElement(tag)
  if (className) node.className = className
  if (text !== undefined) node.textContent = text
  return node
}

export function timeEl(at) {
  const date = Number.isFinite(at) ? new Date(at) : new Date()
  const clock = date.toLocaleTimeString([], {hour: "2-digit", minute: "2-digit", hourCycle: "h23"})
  const node = el("time", "at", clock)
  node.dateTime = date.toISOString()
  node.title = date.toLocaleString()
  return node
}

// ✓ for a name a token vouches for, "guest" for any other
export function identityMark(verified) {
  const mark = verified
    ? el("span", "mark verified", "\u2713")
    : el("span", "mark guest", "guest")
  mark.title = verified
    ? "verified: a token signed by the server vouches for this name"
    : "guest: not verified, anyone may use this name"
  return mark
}

// a stable colour per user name, chosen from the palette in style.css
export function colourClass(name) {
  let hash = 0
  for (const ch of name) hash = (hash * 31 + ch.codePointAt(0)) >>> 0
  return `c${hash % 8}`
}
