// The chat page: one room at a time over roost.js. User text only ever reaches the
// page through textContent (never innerHTML), so hostile bodies render as text.
// Identity: the server marks each message, arrival and presence meta `verified`
// (a token vouches for the name); the page shows a check mark for those and a "guest"
// tag for every other name. Only `verified === true` counts: anything else, an old
// message without the flag included, is shown as a guest.
// Names: the page asks for one before its first join (remembered in localStorage); a
// name changed while in a room is a `rename` push, which the room sees as `user:renamed`
// and in its online list, so messages, arrivals and the list always show one name.
// Older messages: scrolled to the top, the page asks for the page before its oldest
// message (`history` push), until the server says the history begins there.
import {Socket, Presence} from "./roost.js"
import {el, timeEl, identityMark, colourClass} from "./render.js"
import {createDirectory} from "./directory.js"
import {createPaging, freshOlder} from "./older.js"
import {MAX_NAME, askName, nameProblem, rememberName, storedName} from "./names.js"

const ROOM_RE = /^[A-Za-z0-9_-]{1,64}$/
const NAME_TAKEN = "name is taken by a verified user"

const $ = id => document.getElementById(id)
const ui = {
  room: $("room-input"),
  roomGo: $("room-go"),
  roomTitle: $("room-title"),
  status: $("status"),
  node: $("node"),
  messages: $("messages"),
  online: $("online-list"),
  onlineCount: $("online-count"),
  onlineEmpty: $("online-empty"),
  user: $("username"),
  message: $("message"),
  send: $("send"),
}

// -- location <-> room -----------------------------------------------------------------

function decode(text) {
  try {
    return decodeURIComponent(text)
  } catch {
    return text // a stray "%": shown as typed, then refused as a room name
  }
}

function roomFromLocation() {
  const hash = decode(location.hash.slice(1))
  if (hash) return hash
  const match = location.pathname.match(/^\/rooms\/([^/]+)\/?$/)
  return match ? decode(match[1]) : "lobby"
}

// -- rendering (text only) -------------------------------------------------------------

function append(item) {
  insert(item, null)
}

// puts `item` before `before` (or at the end), keeping the view at the bottom when it was
function insert(item, before) {
  const list = ui.messages
  const stick = list.scrollHeight - list.scrollTop - list.clientHeight < 40
  list.insertBefore(item, before)
  if (stick) list.scrollTop = list.scrollHeight
}

// where a message with `offset` goes: before the first row with a larger offset (null: at
// the end). Rows are kept in offset order, so one that arrives late takes its place; lines
// without an offset (arrivals, notices, messages sent while history was down) are stepped over
function rowAfter(offset) {
  let before = null
  for (let node = ui.messages.lastElementChild; node; node = node.previousElementSibling) {
    if (node.dataset.offset === undefined) continue
    if (Number(node.dataset.offset) > offset) before = node
    else break
  }
  return before
}

const seen = new Set()

function isOffset(value) {
  return Number.isSafeInteger(value) && value >= 0
}

// a message's row, or null when it was shown already (by id) or is not one
function messageRow(msg) {
  if (!msg || typeof msg !== "object") return null
  if (msg.id) {
    if (seen.has(msg.id)) return null
    seen.add(msg.id)
  }
  const user = msg.user || "anonymous"
  const item = el("li", "msg")
  if (msg.id) item.dataset.id = String(msg.id)
  if (isOffset(msg.offset)) item.dataset.offset = String(msg.offset)
  if (msg.node) item.title = `via ${msg.node}`
  const who = el("span", `user ${colourClass(user)}`, `[${user}]`)
  const body = el("span", "body", String(msg.body ?? ""))
  item.append(timeEl(msg.at), identityMark(msg.verified === true), who, " ", body)
  return item
}

// each message once (by id), in offset order
function showMessage(msg) {
  const item = messageRow(msg)
  if (item) insert(item, isOffset(msg.offset) ? rowAfter(msg.offset) : null)
}

// an empty list: a new room, or a rejoin whose missed messages could not be recovered
function resetMessages() {
  seen.clear()
  ui.messages.replaceChildren()
}

function showEntered(payload) {
  const item = el("li", "entered")
  item.append(
    timeEl(Date.now()),
    identityMark(payload.verified === true),
    el("em", null, `[${payload.user || "anonymous"} entered]`),
  )
  append(item)
}

function showRenamed(payload) {
  const item = el("li", "renamed")
  const from = String(payload.from || "anonymous")
  const to = String(payload.to || "anonymous")
  item.append(
    timeEl(Date.now()),
    identityMark(payload.verified === true),
    el("em", null, `[${from}] is now [${to}]`),
  )
  append(item)
}

function showSystem(text, kind = "info") {
  const item = el("li", `system ${kind}`)
  item.append(timeEl(Date.now()), el("span", null, text))
  append(item)
}

function setStatus(state, text) {
  ui.status.dataset.state = state
  ui.status.textContent = text || state
}

// one row per user, however many tabs they have open: "al ✓ ×2 n1, n2". A name held by a
// token holder and by guests (who had it first) is two rows: the verified one, the guests'.
function renderOnline(presence) {
  const person = (name, metas, verified) => ({
    name,
    verified,
    count: metas.length,
    nodes: [...new Set(metas.map(meta => meta.node).filter(Boolean).map(String))].sort(),
  })
  const people = presence
    .list((name, {metas}) => {
      const all = metas.filter(meta => meta && typeof meta === "object")
      const verified = all.filter(meta => meta.verified === true)
      const guests = all.filter(meta => meta.verified !== true)
      return [
        ...(verified.length ? [person(name, verified, true)] : []),
        ...(guests.length ? [person(name, guests, false)] : []),
      ]
    })
    .flat()
    .sort((a, b) => a.name.localeCompare(b.name) || Number(b.verified) - Number(a.verified))
  ui.online.replaceChildren(...people.map(({name, verified, count, nodes}) => {
    const item = el("li", null)
    item.dataset.user = name
    item.dataset.verified = String(verified)
    item.append(el("span", `dot ${colourClass(name)}`), el("span", "name", name), identityMark(verified))
    if (count > 1) item.append(el("span", "count", `×${count}`))
    if (nodes.length) item.append(el("span", "nodes", nodes.join(", ")))
    const tabs = count > 1 ? `${count} connections` : "1 connection"
    const who = `${name} (${verified ? "verified" : "guest"})`
    item.title = `${who}: ${tabs}${nodes.length ? ` on ${nodes.join(", ")}` : ""}`
    return item
  }))
  ui.onlineCount.textContent = people.length ? String(people.length) : ""
  ui.onlineEmpty.hidden = people.length > 0
}

// -- user name -------------------------------------------------------------------------

function currentName() {
  return ui.user.value.trim().slice(0, MAX_NAME)
}

// -- socket and room -------------------------------------------------------------------

// a proxy that refuses (or swallows) the WebSocket upgrade: the page chats over long-poll
const socket = new Socket("/socket", {longPollFallbackMs: 2500})
let everConnected = false
let room = null // {name, channel, presence, user, cursor, early, joined, older}
let named = false // a name was chosen: rooms may be joined

socket.onOpen(() => { everConnected = true })
socket.onError(() => lostConnection())
socket.onClose(() => lostConnection())

function lostConnection() {
  setStatus(everConnected ? "reconnecting" : "connecting", everConnected ? "reconnecting…" : "connecting…")
}

function joinRoom(name) {
  if (!named) return
  if (room && room.name === name && room.user === currentName()) return
  if (!ROOM_RE.test(name)) {
    showSystem(`"${name}" is not a valid room name (letters, digits, _ and -, up to 64)`, "error")
    return
  }
  const sameRoom = room !== null && room.name === name
  // a rename rejoins the same room: it keeps the list, and asks only for what it lacks
  const cursor = sameRoom ? room.cursor : null
  if (room) {
    const old = room
    room = null // its callbacks are no longer active, its close included
    old.channel.leave()
  }
  if (!sameRoom) {
    // a new room starts with an empty list, filled by the join reply's history
    resetMessages()
    renderOnline({list: () => []})
  }
  ui.room.value = name
  ui.roomTitle.textContent = `#${name}`
  document.title = `#${name} · roost`

  const user = currentName()
  // cursor: the room's history position this page has shown everything up to
  // ({offset, epoch}, from the join reply, advanced by every new:msg); early: the
  // messages that arrived for the join in flight, before its reply
  // joined: the server accepted the latest join (a rename is then a push); older: the
  // paging back through history ({loading, done})
  const current = {name, user, cursor, early: null, refused: false, joined: false, older: freshOlder()}
  // params are computed at every (re)join: a rejoin asks for what it missed since the
  // position it last saw, and the reply says whether that could be recovered
  const channel = socket.channel(`rooms:${name}`, () => {
    current.early = []
    const params = current.user ? {user: current.user} : {}
    if (current.cursor) params.since = {...current.cursor}
    return params
  })
  current.channel = channel
  current.presence = new Presence(channel)
  room = current
  const active = () => room === current

  current.presence.onSync(() => active() && renderOnline(current.presence))
  channel.on("new:msg", msg => {
    if (!active()) return
    if (current.early) current.early.push(msg)
    else advance(current, msg)
    showMessage(msg)
  })
  channel.on("user:entered", payload => active() && showEntered(payload))
  channel.on("user:renamed", payload => active() && payload && showRenamed(payload))
  channel.onError(() => {
    current.joined = false
    if (active()) lostConnection()
  })
  // the server closed this channel (we leave only channels that are no longer active)
  channel.onClose(() => active() && !current.refused && setStatus("error", "left by the server"))

  setStatus(everConnected ? "reconnecting" : "connecting", "joining…")
  channel.join()
    .receive("ok", reply => {
      if (!active()) return
      current.joined = true
      joined(current, reply || {})
      ui.node.textContent = reply && reply.node ? `node ${reply.node}` : ""
      ui.node.title = reply && reply.node ? `served by node ${reply.node}` : ""
      setStatus("connected", "connected")
      setTimeout(() => active() && paging.ifShort(), 0)
    })
    .receive("error", reply => {
      if (!active()) return
      current.early = null
      const reason = (reply && reply.reason) || "join refused"
      setStatus("error", `can't join: ${reason}`)
      if (reason === NAME_TAKEN) {
        // retrying cannot help while the token holder is here: a new name rejoins
        current.refused = true
        showSystem(`can't join #${name}: "${user}" is taken by a verified user; pick another name`, "error")
        channel.leave()
        return
      }
      showSystem(`can't join #${name}: ${reason}`, "error")
      if (reason === "invalid room") channel.leave()
    })
    .receive("timeout", () => active() && setStatus("reconnecting", "join timed out, retrying…"))
}

// The join reply: {history, offset, epoch, recovered, node}. recovered: true → history is
// exactly what this page missed since its cursor; recovered: false → history is the room's
// latest messages (the gap could not be filled, or this is a first join), shown afresh.
function joined(current, reply) {
  const early = current.early || []
  current.early = null
  const history = Array.isArray(reply.history) ? reply.history : []
  const positioned = isOffset(reply.offset) && reply.epoch !== undefined && reply.epoch !== null
  if (positioned && reply.recovered !== true) {
    const hadCursor = current.cursor !== null
    resetMessages()
    current.older = freshOlder()
    if (hadCursor) {
      showSystem("reconnected: the messages missed meanwhile could not all be recovered; showing the latest ones")
    }
  }
  if (positioned) current.cursor = {offset: reply.offset, epoch: reply.epoch}
  // history, then whatever arrived live before the reply (a message in both shows once)
  for (const msg of [...history, ...early]) {
    showMessage(msg)
    advance(current, msg)
  }
}

// a new:msg carries its offset (the epoch is the join reply's): move the cursor past it
function advance(current, msg) {
  if (current.cursor && msg && isOffset(msg.offset) && msg.offset > current.cursor.offset) {
    current.cursor = {offset: msg.offset, epoch: current.cursor.epoch}
  }
}

// -- sending, names, rooms ----------------------------------------------------------------

// Every message carries an idempotency key, the same on each retry: a message whose answer
// was lost (`timeout`) or refused for a moment is sent again and the room still sees it once.
const RETRY_AFTER_MS = [500, 1500, 3000]
const RETRYABLE = new Set(["timeout", "temporarily unavailable"])

function newKey() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID()
  const bytes = new Uint8Array(16)
  crypto.getRandomValues(bytes)
  return Array.from(bytes, b => b.toString(16).padStart(2, "0")).join("")
}

function sendMessage() {
  const body = ui.message.value
  if (!body.trim() || !room) return
  ui.message.value = ""
  sendWithKey(room, body, newKey(), 0)
}

function sendWithKey(target, body, key, attempt) {
  const again = why => {
    if (attempt < RETRY_AFTER_MS.length && target === room) {
      setTimeout(() => sendWithKey(target, body, key, attempt + 1), RETRY_AFTER_MS[attempt])
      return
    }
    showSystem(`not sent: ${why}`, "error")
    if (!ui.message.value) ui.message.value = body
  }
  target.channel.push("new:msg", {body, key})
    .receive("error", reply => {
      const reason = (reply && reply.reason) || "refused"
      if (RETRYABLE.has(reason)) again(reason)
      else {
        showSystem(`not sent: ${reason}`, "error")
        if (!ui.message.value) ui.message.value = body
      }
    })
    .receive("timeout", () => again("no answer from the server (timeout)"))
}

// a name typed while in a room: announced to it (`rename`), or the next join's name
function rename(name) {
  const problem = nameProblem(name)
  if (problem) {
    showSystem(`can't use that name: ${problem}`, "error")
    ui.user.value = room ? room.user : storedName()
    return
  }
  if (!room || !room.joined) {
    rememberName(name)
    if (room) joinRoom(room.name) // (re)joins under the new name
    return
  }
  if (name === room.user) return
  const current = room
  current.channel.push("rename", {user: name})
    .receive("ok", reply => {
      current.user = (reply && reply.user) || name
      rememberName(current.user)
    })
    .receive("error", reply => {
      showSystem(`can't rename: ${(reply && reply.reason) || "refused"}`, "error")
      if (room === current) ui.user.value = current.user
    })
    .receive("timeout", () => {
      showSystem("can't rename: no answer from the server (timeout)", "error")
      if (room === current) ui.user.value = current.user
    })
}

function goToRoom(name) {
  if (!name || (room && name === room.name)) return
  if (!ROOM_RE.test(name)) {
    showSystem(`"${name}" is not a valid room name (letters, digits, _ and -, up to 64)`, "error")
    return
  }
  history.pushState(null, "", `/rooms/${encodeURIComponent(name)}`)
  joinRoom(name)
  ui.message.focus()
}

function switchRoom() {
  goToRoom(ui.room.value.trim())
}

// -- wiring ----------------------------------------------------------------------------

ui.user.addEventListener("change", () => rename(currentName()))
ui.user.addEventListener("keydown", event => {
  if (event.key === "Enter") {
    event.preventDefault()
    ui.message.focus() // blur commits the name through "change"
  }
})
ui.message.addEventListener("keydown", event => {
  if (event.key === "Enter" && !event.isComposing) {
    event.preventDefault()
    sendMessage()
  }
})
ui.send.addEventListener("click", () => {
  sendMessage()
  ui.message.focus()
})
ui.room.addEventListener("keydown", event => {
  if (event.key === "Enter") {
    event.preventDefault()
    switchRoom()
  }
})
ui.roomGo.addEventListener("click", switchRoom)
window.addEventListener("popstate", () => joinRoom(roomFromLocation()))
window.addEventListener("hashchange", () => joinRoom(roomFromLocation()))

const paging = createPaging({list: ui.messages, activeRoom: () => room, messageRow})
createDirectory({
  channel: () => (room && room.joined ? room.channel : null),
  currentRoom: () => (room ? room.name : null),
  go: goToRoom,
})

function begin(name) {
  named = true
  ui.user.value = name
  rememberName(name)
  joinRoom(roomFromLocation())
  ui.message.focus()
}

socket.connect()
const remembered = storedName().trim()
if (remembered && !nameProblem(remembered)) begin(remembered)
else askName().then(begin)
