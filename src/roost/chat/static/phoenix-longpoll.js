// phoenix-longpoll.js: the LongPoll transport (/socket/longpoll), WebSocket-shaped for the Socket (part of roost.js, the page's Phoenix Channels client).

import {parseRetryAfter} from "./phoenix-core.js"

export const FALLBACK_KEY = "phx:fallback:LongPoll" // phoenix.js's key

export const defaultSessionStore = () => {
  try { return globalThis.sessionStorage || null } catch (_) { return null } // sandboxed frames throw
}

// -- LongPoll ------------------------------------------------------------------------------

const AUTH_TOKEN_PREFIX = "base64url.bearer.phx."
const MAX_LONGPOLL_BATCH = 100 // lines per POST: the server takes at most 100

const toBase64 = buffer => {
  let binary = ""
  for (const byte of new Uint8Array(buffer)) binary += String.fromCharCode(byte)
  return btoa(binary)
}

/**
 * The long-poll transport (Phoenix's /socket/longpoll), with the WebSocket interface the
 * Socket uses: readyState, send, close and the onopen/onerror/onmessage/onclose handlers.
 * A GET without a token opens a session ({"status": 410, "token"}); each later GET waits
 * for messages (200) or the window's end (204); sends are batched into one POST of
 * newline-separated frames (binary ones base64). A session that is gone (410 once open),
 * a 500 or a network error closes it like a dropped WebSocket (the Socket reconnects);
 * 403 closes it with 1008. A refused open (roost: HTTP 200, body status 500, and the
 * refusal's Retry-After header — 503 past --max-connections, 429 past the per-address
 * limits) puts that wait in the close event (`retryAfterMs`): the Socket waits it out
 * before its jittered reconnect delay. Unlike a WebSocket upgrade's, these headers are
 * visible to JavaScript (same origin, or a CORS Access-Control-Expose-Headers).
 */
export class LongPoll {
  constructor(endPoint, protocols) {
    if (protocols && protocols.length === 2 && protocols[1].startsWith(AUTH_TOKEN_PREFIX)) {
      const token = protocols[1].slice(AUTH_TOKEN_PREFIX.length).replace(/-/g, "+").replace(/_/g, "/")
      this.authToken = atob(token + "===".slice((token.length + 3) % 4))
    }
    this.pollEndpoint = endPoint
      .replace("ws://", "http://")
      .replace("wss://", "https://")
      .replace(/\/websocket(\?|$)/, "/longpoll$1")
    this.token = null
    this.timeout = 20000
    this.skipHeartbeat = true // every poll is a sign of life
    this.readyState = 0
    this.controllers = new Set()
    this.timers = new Set()
    this.outbox = []
    this.posting = false
    this.retryAfterMs = null // the last answer's Retry-After, ms (a refusal's)
    this.onopen = this.onerror = this.onmessage = this.onclose = null
    // the caller sets the handlers (and may close us) before the first poll
    this.later(() => this.poll())
  }

  endpointURL() {
    if (this.token === null) return this.pollEndpoint
    const sep = this.pollEndpoint.includes("?") ? "&" : "?"
    return `${this.pollEndpoint}${sep}token=${encodeURIComponent(this.token)}`
  }

  isActive() {
    return this.readyState === 0 || this.readyState === 1
  }

  later(fn) {
    const timer = setTimeout(() => { this.timers.delete(timer); fn() }, 0)
    this.timers.add(timer)
  }

  emit(handler, event) {
    if (this[handler]) this[handler](event)
  }

  poll() {
    if (!this.isActive()) return
    const headers = {Accept: "application/json"}
    if (this.authToken) headers["X-Phoenix-AuthToken"] = this.authToken
    this.request("GET", headers, null, resp => {
      const status = resp ? resp.status : 0
      if (status === 410 && this.token !== null) {
        return this.fail(1011, "session gone") // the Socket reconnects and rejoins
      }
      if (resp && resp.token) this.token = resp.token
      switch (status) {
        case 200:
          // one task per message, as WebSocket events are
          for (const msg of resp.messages || []) this.later(() => this.emit("onmessage", {data: msg}))
          return this.poll()
        case 204:
          return this.poll()
        case 410:
          this.readyState = 1
          this.emit("onopen", {})
          return this.poll()
        case 403:
          this.emit("onerror", 403)
          return this.close(1008, "forbidden")
        default:
          return this.fail(1011, `long-poll status ${status}`)
      }
    })
  }

  send(body) {
    if (!this.isActive()) throw new Error("long-poll transport is not open")
    this.outbox.push(typeof body === "string" ? body : toBase64(body))
    // the pushes of this task go together; the next batch waits for this one's answer
    if (this.outbox.length === 1 && !this.posting) this.later(() => this.flush())
  }

  flush() {
    if (this.posting || this.outbox.length === 0 || !this.isActive()) return
    const batch = this.outbox.splice(0, MAX_LONGPOLL_BATCH)
    this.posting = true
    this.request("POST", {"Content-Type": "application/x-ndjson"}, batch.join("\n"), resp => {
      this.posting = false
      if (!resp || resp.status !== 200) return this.fail(1011, `long-poll post status ${resp && resp.status}`)
      this.flush()
    })
  }

  // as a WebSocket that drops: error, then close (not clean)
  fail(code, reason) {
    if (!this.isActive()) return
    this.stop(3)
    this.emit("onerror", reason)
    this.emit("onclose", {code, reason, wasClean: false, retryAfterMs: this.retryAfterMs})
  }

  close(code = 1005, reason = "") {
    if (this.readyState === 3) return
    this.stop(3)
    this.emit("onclose", {code, reason, wasClean: true})
  }

  stop(readyState) {
    this.readyState = readyState
    const controllers = this.controllers
    this.controllers = new Set()
    for (const controller of controllers) controller.abort()
    for (const timer of this.timers) clearTimeout(timer)
    this.timers.clear()
    this.outbox = []
    this.posting = false
  }

  // fetch with a timeout; `callback(json or null)`, never after stop()
  request(method, headers, body, callback) {
    const controller = new AbortController()
    this.controllers.add(controller)
    const timer = setTimeout(() => controller.abort(), this.timeout)
    const done = resp => {
      clearTimeout(timer)
      if (this.controllers.delete(controller)) callback(resp)
    }
    fetch(this.endpointURL(), {method, headers, body, signal: controller.signal, cache: "no-store"})
      .then(resp => {
        if (this.controllers.has(controller)) {
          this.retryAfterMs = parseRetryAfter(resp.headers && resp.headers.get("Retry-After"))
        }
        return resp.json()
      })
      .then(done, () => done(null))
  }
}
