// The live dashboard: joins admin:cluster with the admin secret over roost.js and merges
// the snapshots every node broadcasts there. Text reaches the page only through
// textContent. The secret lives in sessionStorage (this tab), never in localStorage.
import {Socket} from "/admin/lib/roost.js"

const SECRET_KEY = "roost:admin-secret"
const TOPIC = "admin:cluster"
const ADMIN_TOKEN = "roost-admin:" // access.py's TOKEN_PREFIX
const SHOWN_TOPICS = 20

const $ = id => document.getElementById(id)
const ui = {
  status: $("status"), via: $("via"), unlock: $("unlock"), secret: $("secret"),
  unlockError: $("unlock-error"), board: $("board"), lock: $("lock"),
  nodes: document.querySelector("#nodes tbody"), topics: document.querySelector("#topics tbody"),
  topicsEmpty: $("topics-empty"), interval: $("interval"), stale: $("stale"),
  total: {
    nodes: $("t-nodes"), connections: $("t-connections"), channels: $("t-channels"),
    in: $("t-in"), out: $("t-out"), broker: $("t-broker"),
  },
}

// node name -> {snap, heard (ms, this page's clock)}; registered: names from the registry
const state = {nodes: new Map(), registered: new Set(), staleMs: 10000}
let socket = null
let channel = null

function setStatus(kind, text) {
  ui.status.dataset.state = kind
  ui.status.textContent = text
}

function storedSecret() {
  try { return sessionStorage.getItem(SECRET_KEY) || "" } catch { return "" }
}

function keepSecret(secret) {
  try {
    if (secret) sessionStorage.setItem(SECRET_KEY, secret)
    else sessionStorage.removeItem(SECRET_KEY)
  } catch { /* storage off: asked again on reload */ }
}

function showLock(message) {
  ui.board.hidden = true
  ui.unlock.hidden = false
  ui.unlockError.hidden = !message
  ui.unlockError.textContent = message || ""
  ui.via.textContent = ""
  ui.secret.focus()
}

function stop() {
  if (channel) channel.leave()
  if (socket) socket.disconnect()
  channel = socket = null
}

function open(secret) {
  stop()
  state.nodes.clear()
  state.registered.clear()
  // the secret also opens the socket (the Sec-WebSocket-Protocol header, never the URL):
  // an application that admits no anonymous socket still admits this page's
  socket = new Socket("/socket", {longPollFallbackMs: 2500, authToken: `${ADMIN_TOKEN}${secret}`})
  let opened = false
  let failures = 0
  socket.onOpen(() => { opened = true })
  socket.onError(() => {
    setStatus("reconnecting", "reconnecting…")
    // never in: the server refuses this socket (a wrong secret where the application
    // admits no anonymous socket) or cannot be reached; stop asking
    if (!opened && ++failures >= 4) {
      stop()
      keepSecret("")
      setStatus("error", "cannot connect")
      showLock("cannot connect: a wrong admin secret, or the server is unreachable")
    }
  })
  socket.connect()
  channel = socket.channel(TOPIC, {secret})
  channel.on("snapshot", snap => heard(snap))
  setStatus("connecting", "joining…")
  channel.join()
    .receive("ok", reply => {
      keepSecret(secret)
      ui.unlock.hidden = true
      ui.board.hidden = false
      ui.via.textContent = reply.node ? `via node ${reply.node}` : ""
      if (Array.isArray(reply.nodes)) reply.nodes.forEach(name => state.registered.add(String(name)))
      if (reply.stale_after) state.staleMs = reply.stale_after * 1000
      ui.interval.textContent = String(reply.interval || 2)
      ui.stale.textContent = String(state.staleMs / 1000)
      setStatus("connected", "live")
      render()
    })
    .receive("error", reply => {
      const reason = (reply && reply.reason) || "refused"
      stop()
      keepSecret("")
      setStatus("error", reason)
      showLock(reason === "unauthorized" ? "unauthorized: wrong admin secret" : `refused: ${reason}`)
    })
    .receive("timeout", () => setStatus("reconnecting", "no answer yet…"))
}

function heard(snap) {
  if (!snap || typeof snap.node !== "string") return
  // a node's own stamps only go forward: an older one is a replay (Redis caught up after an
  // outage, the node's publish queue went out late) and says nothing about now
  const known = state.nodes.get(snap.node)
  if (known && typeof snap.at === "number" && snap.at < known.snap.at) return
  state.nodes.set(snap.node, {snap, heard: Date.now()})
  state.registered.add(snap.node)
  render()
}

// -- rendering -------------------------------------------------------------------------

const fmt = new Intl.NumberFormat("en", {maximumFractionDigits: 1})
const num = n => (typeof n === "number" && isFinite(n) ? fmt.format(n) : "–")

function duration(seconds) {
  if (typeof seconds !== "number") return "–"
  const s = Math.floor(seconds)
  if (s < 60) return `${s}s`
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor(s % 3600 / 60)}m`
  return `${Math.floor(s / 86400)}d ${Math.floor(s % 86400 / 3600)}h`
}

function cell(text, cls) {
  const td = document.createElement("td")
  td.textContent = text
  if (cls) td.className = cls
  return td
}

function brokerText(b) {
  if (!b) return ["–", ""]
  const kind = b.kind === "RedisBroker" ? "redis" : b.kind === "MemoryBroker" ? "memory" : String(b.kind || "?")
  if (!b.connected) return [`${kind} down`, "bad"]
  const trouble = (b.reconnects || 0) + (b.publish_errors || 0) + (b.dropped || 0) + (b.unfillable || 0)
  return [trouble ? `${kind} ok (${trouble} faults)` : `${kind} ok`, trouble ? "warn" : "ok"]
}

function render() {
  const now = Date.now()
  const rows = []
  const live = []
  for (const name of [...state.registered].sort()) {
    const entry = state.nodes.get(name)
    const row = document.createElement("tr")
    row.dataset.node = name
    if (!entry) {
      row.className = "silent"
      row.append(cell(name, "name"), cell("registered, silent", "state"))
      for (let i = 0; i < 9; i++) row.append(cell("–", "n"))
      rows.push(row)
      continue
    }
    const {snap} = entry
    const age = now - entry.heard
    const gone = age > state.staleMs
    if (!gone) live.push(snap)
    row.className = gone ? "gone" : "live"
    const [btext, bcls] = brokerText(snap.broker)
    const r = snap.rates || {}
    const label = gone ? "gone" : snap.draining ? "draining" : "live"
    const name_ = snap.workers ? `${name} (${snap.workers.index}/${snap.workers.count})` : name
    row.append(
      cell(name_, "name"), cell(label, "state"), cell(num(snap.connections), "n"),
      cell(num(snap.channels), "n"), cell(num(snap.topics), "n"), cell(num(r.pushes_in), "n"),
      cell(num(r.delivered), "n"), cell(num(r.joins), "n"), cell(btext, `broker ${bcls}`),
      cell(duration(snap.uptime), "n"), cell(`${Math.round(age / 1000)}s ago`, "n"),
    )
    rows.push(row)
  }
  ui.nodes.replaceChildren(...rows)
  renderTotals(live)
  renderTopics(live)
}

function renderTotals(live) {
  const sum = f => live.reduce((acc, s) => acc + (f(s) || 0), 0)
  ui.total.nodes.textContent = `${live.length} / ${state.registered.size}`
  ui.total.connections.textContent = num(sum(s => s.connections))
  ui.total.channels.textContent = num(sum(s => s.channels))
  ui.total.in.textContent = num(sum(s => s.rates && s.rates.pushes_in))
  ui.total.out.textContent = num(sum(s => s.rates && s.rates.delivered))
  const down = live.filter(s => !(s.broker && s.broker.connected)).length
  ui.total.broker.textContent = live.length ? (down ? `${down} down` : "all ok") : "–"
  ui.total.broker.className = `value ${down ? "bad" : "ok"}`
}

function renderTopics(live) {
  const topics = new Map() // topic -> {members, presence, nodes: [name, ...]}
  for (const snap of live) {
    for (const t of Array.isArray(snap.top) ? snap.top : []) {
      const entry = topics.get(t.topic) || {members: 0, presence: 0, nodes: []}
      entry.members += t.members || 0
      entry.presence += t.presence || 0
      entry.nodes.push(`${snap.node}: ${t.members}`)
      topics.set(t.topic, entry)
    }
  }
  const busiest = [...topics.entries()]
    .sort((a, b) => b[1].members - a[1].members || (a[0] < b[0] ? -1 : 1))
    .slice(0, SHOWN_TOPICS)
  ui.topics.replaceChildren(...busiest.map(([topic, t]) => {
    const row = document.createElement("tr")
    row.dataset.topic = topic
    row.append(
      cell(topic, "name"), cell(num(t.members), "n members"),
      cell(t.presence ? num(t.presence) : "–", "n"), cell(t.nodes.sort().join(" · "), "where"),
    )
    return row
  }))
  ui.topicsEmpty.hidden = busiest.length > 0
}

// -- wiring ----------------------------------------------------------------------------

ui.unlock.addEventListener("submit", event => {
  event.preventDefault()
  const secret = ui.secret.value
  ui.secret.value = ""
  if (secret) open(secret)
})
ui.lock.addEventListener("click", () => {
  stop()
  keepSecret("")
  setStatus("locked", "locked")
  showLock("")
})
setInterval(() => { if (!ui.board.hidden) render() }, 1000)

const remembered = storedSecret()
if (remembered) open(remembered)
else showLock("")
