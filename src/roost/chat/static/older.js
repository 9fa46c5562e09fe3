// Older messages, a page at a time: scrolled to the top, the chat asks its room for the
// messages before the oldest one shown (`history` push {before, limit, epoch}) and puts
// them above it, the view staying where it was, each message once (messageRow skips the
// ones shown already); the top then says where the history begins, or that the one the
// page held was lost (a new epoch: `reset`).
import {el} from "./render.js"

const PAGE = 50 // older messages per `history` push
const NEAR_TOP = 80 // px: scrolled this close to the top, older messages are loaded

export function freshOlder() {
  return {loading: false, done: false}
}

// room: {name, channel, joined, cursor, older} (chat.js); messageRow(msg): a message's
// row, or null when it is shown already
export function createPaging({list, activeRoom, messageRow}) {
  function oldestOffset() {
    for (let node = list.firstElementChild; node; node = node.nextElementSibling) {
      if (node.dataset.offset !== undefined) return Number(node.dataset.offset)
    }
    return null
  }

  // the top of the list: where the history begins, or where an older one was lost
  function showEdge(text) {
    const item = el("li", "edge", text)
    list.insertBefore(item, list.firstElementChild)
  }

  function load() {
    const current = activeRoom()
    if (!current || !current.joined || !current.cursor) return
    const older = current.older
    if (older.loading || older.done) return
    const oldest = oldestOffset()
    const before = oldest === null ? current.cursor.offset + 1 : oldest
    if (before <= 1) {
      older.done = true
      showEdge(`beginning of the history of #${current.name}`)
      return
    }
    older.loading = true
    current.channel.push("history", {before, limit: PAGE, epoch: current.cursor.epoch})
      .receive("ok", reply => {
        older.loading = false
        if (activeRoom() === current && current.older === older) prepend(current, reply || {})
      })
      .receive("error", reply => {
        older.loading = false
        if (activeRoom() !== current || current.older !== older) return
        older.done = true // a new scroll to the top after a rejoin asks again
        showEdge(`older messages are unavailable: ${(reply && reply.reason) || "refused"}`)
      })
      .receive("timeout", () => { older.loading = false })
  }

  // a page of older messages goes above the oldest one shown, the view staying where it was
  function prepend(current, reply) {
    const fromBottom = list.scrollHeight - list.scrollTop
    let anchor = list.firstElementChild
    while (anchor && anchor.dataset.offset === undefined) anchor = anchor.nextElementSibling
    anchor = anchor || list.firstElementChild
    for (const msg of Array.isArray(reply.history) ? reply.history : []) {
      const item = messageRow(msg)
      if (item) list.insertBefore(item, anchor)
    }
    if (reply.reset === true) {
      current.older.done = true
      showEdge("older messages belonged to an earlier history of this room (a new epoch began): they are gone")
    } else if (reply.beginning === true) {
      current.older.done = true
      showEdge(`beginning of the history of #${current.name}`)
    }
    list.scrollTop = list.scrollHeight - fromBottom
    setTimeout(() => activeRoom() === current && ifShort(), 0)
  }

  // still at the top (the list does not fill the view, or the page was short): one more
  function ifShort() {
    if (list.scrollTop < NEAR_TOP) load()
  }

  list.addEventListener("scroll", () => {
    if (list.scrollTop < NEAR_TOP) load()
  }, {passive: true})
  return {load, ifShort}
}
