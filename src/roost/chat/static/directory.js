// The room directory: the busiest public rooms with how many are online in each, asked
// of the server with a `rooms` push on the joined room's channel (answered from
// presence, every node's members, at most one reading per two seconds per node).
import {el} from "./render.js"

const $ = id => document.getElementById(id)

export function createDirectory({channel, currentRoom, go}) {
  const ui = {
    panel: $("directory"),
    list: $("directory-list"),
    note: $("directory-note"),
    open: $("rooms-open"),
    close: $("rooms-close"),
  }
  let asked = 0 // answers to an earlier opening are ignored

  function note(text) {
    ui.note.hidden = !text
    ui.note.textContent = text || ""
  }

  function render(rooms) {
    const here = currentRoom()
    const rows = rooms
      .filter(r => r && typeof r.room === "string" && Number.isSafeInteger(r.online))
      .map(({room, online}) => {
        const item = el("li", null)
        const button = el("button", "room-link")
        button.type = "button"
        button.dataset.room = room
        if (room === here) button.setAttribute("aria-current", "true")
        button.append(el("span", "room-name", `#${room}`), el("span", "room-online", `${online} online`))
        button.addEventListener("click", () => {
          hide()
          go(room)
        })
        item.append(button)
        return item
      })
    ui.list.replaceChildren(...rows)
    note(rows.length ? "" : "no rooms with people in them yet")
  }

  function show() {
    ui.panel.hidden = false
    ui.open.setAttribute("aria-expanded", "true")
    ui.list.replaceChildren()
    const ch = channel()
    if (!ch) {
      note("not connected yet: try again in a moment")
      return
    }
    note("loading…")
    const mine = ++asked
    ch.push("rooms", {})
      .receive("ok", reply => mine === asked && render(Array.isArray(reply && reply.rooms) ? reply.rooms : []))
      .receive("error", reply => mine === asked && note(`the room list is unavailable: ${(reply && reply.reason) || "refused"}`))
      .receive("timeout", () => mine === asked && note("the room list is unavailable: no answer (timeout)"))
  }

  function hide() {
    asked++
    ui.panel.hidden = true
    ui.open.setAttribute("aria-expanded", "false")
  }

  ui.open.addEventListener("click", () => (ui.panel.hidden ? show() : hide()))
  ui.close.addEventListener("click", hide)
  document.addEventListener("keydown", event => {
    if (event.key === "Escape" && !ui.panel.hidden) hide()
  })
  return {show, hide}
}
