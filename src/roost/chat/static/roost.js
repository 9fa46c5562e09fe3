// roost.js: a Phoenix Channels client for browsers, written for roost.
//
// Plain ES module, no dependencies, no build step. It speaks protocol V2
// ("vsn=2.0.0": JSON arrays [join_ref, ref, topic, event, payload], plus the
// binary frames) and its API mirrors the official phoenix.js client:
//
//   import {Socket, Presence} from "/static/roost.js"
//   const socket = new Socket("/socket", {params: {token}})
//   socket.connect()
//   const channel = socket.channel("rooms:lobby", () => ({user: "al"}))
//   channel.on("new:msg", msg => ...)
//   channel.join().receive("ok", reply => ...).receive("error", ...).receive("timeout", ...)
//   channel.push("new:msg", {body: "hi"}).receive("ok", ...)
//
// Behaviour follows phoenix.js: heartbeat every 30 s (no reply by the next one
// closes the connection and reconnects), reconnect backoff 10, 50, 100, 150,
// 200, 250, 500, 1000, 2000 ms then 5 s, channel rejoin backoff 1, 2, 5 s then
// 10 s, pushes buffered until the join completes, replies for a stale join_ref
// dropped. Channel params may be a function: it is called for every (re)join,
// which is how a client asks for missed messages when it rejoins.
//
// Transports: WebSocket, or LongPoll (/socket/longpoll) given as `transport` or
// reached by `longPollFallbackMs` (phoenix.js 1.8's rule: see Socket). Frames from
// the server that do not parse — a binary frame whose lengths do not add up, say —
// are dropped and logged (socket.droppedFrames counts them), never half-read.

export const VSN = "2.0.0"
export const DEFAULT_TIMEOUT = 10000
export const WS_CLOSE_NORMAL = 1000
export const CHANNEL_EVENTS = Object.freeze({
  close: "phx_close",
  error: "phx_error",
  join: "phx_join",
  reply: "phx_reply",
  leave: "phx_leave",
})
export const CHANNEL_STATES = Object.freeze({
  closed: "closed",
  errored: "errored",
  joined: "joined",
  joining: "joining",
  leaving: "leaving",
})
const WS_OPEN = 1
const WS_CLOSED = 3

const closure = value => (typeof value === "function" ? value : () => value)

/** Calls `callback` after a delay that grows with every try: `timerCalc(tries)` ms. */
export class Timer {
  constructor(callback, timerCalc) {
    this.callback = callback
    this.timerCalc = timerCalc
    this.timer = null
    this.tries = 0
  }

  reset() {
    this.tries = 0
    clearTimeout(this.timer)
    this.timer = null
  }

  scheduleTimeout() {
    clearTimeout(this.timer)
    this.timer = setTimeout(() => {
      this.timer = null
      this.tries += 1
      this.callback()
    }, this.timerCalc(this.tries + 1))
  }
}

// -- serializer --------------------------------------------------------------------------

const KIND_PUSH = 0
const KIND_REPLY = 1
const KIND_BROADCAST = 2

/** The V2 serializer: JSON text frames, and binary frames for ArrayBuffer payloads. */
export const Serializer = {
  encode(msg, callback) {
    if (msg.payload instanceof ArrayBuffer) {
      return callback(this.binaryEncode(msg))
    }
    return callback(JSON.stringify([msg.join_ref, msg.ref, msg.topic, msg.event, msg.payload]))
  },

  decode(raw, callback) {
    if (raw instanceof ArrayBuffer) {
      return callback(this.binaryDecode(raw))
    }
    let msg
    try {
      msg = JSON.parse(raw)
    } catch (_) {
      throw new FrameError("text frame is not JSON")
    }
    if (!Array.isArray(msg) || msg.length !== 5) {
      throw new FrameError("text frame is not a [join_ref, ref, topic, event, payload] array")
    }
    const [join_ref, ref, topic, event, payload] = msg
    if (typeof topic !== "string" || typeof event !== "string") {
      throw new FrameError("text frame without a string topic and event")
    }
    return callback({join_ref, ref, topic, event, payload})
  },

  binaryEncode({join_ref, ref, topic, event, payload}) {
    const utf8 = new TextEncoder()
    const fields = [join_ref || "", ref || "", topic, event].map(s => utf8.encode(s))
    fields.forEach(bytes => {
      if (bytes.byteLength > 255) throw new Error("binary frame fields are limited to 255 bytes")
    })
    const head = 1 + fields.length + fields.reduce((n, b) => n + b.byteLength, 0)
    const out = new Uint8Array(head + payload.byteLength)
    let at = 0
    out[at++] = KIND_PUSH
    fields.forEach(bytes => { out[at++] = bytes.byteLength })
    fields.forEach(bytes => { out.set(bytes, at); at += bytes.byteLength })
    out.set(new Uint8Array(payload), at)
    return out.buffer
  },

  // kind | one size byte per field | the fields (UTF-8) | payload. Every length is checked
  // against the frame before anything is read: a frame that does not add up is a FrameError.
  binaryDecode(buffer) {
    const bytes = new Uint8Array(buffer)
    if (bytes.byteLength === 0) throw new FrameError("empty binary frame")
    const kind = bytes[0]
    const count = FIELD_COUNTS[kind]
    if (count === undefined) throw new FrameError(`unknown binary frame kind ${kind}`)
    const head = 1 + count
    if (bytes.byteLength < head) throw new FrameError("binary frame shorter than its header")
    const sizes = Array.from(bytes.subarray(1, head))
    const end = sizes.reduce((at, size) => at + size, head)
    if (end > bytes.byteLength) throw new FrameError("binary frame field lengths run past its end")
    const utf8 = new TextDecoder("utf-8", {fatal: true})
    let at = head
    const strings = sizes.map(size => {
      const field = bytes.subarray(at, at + size)
      at += size
      try {
        return utf8.decode(field)
      } catch (_) {
        throw new FrameError("binary frame field is not UTF-8")
      }
    })
    const data = buffer.slice(end)
    if (kind === KIND_PUSH) {
      const [join_ref, topic, event] = strings
      requireNames(topic, event)
      return {join_ref: join_ref || null, ref: null, topic, event, payload: data}
    }
    if (kind === KIND_REPLY) {
      const [join_ref, ref, topic, status] = strings
      requireNames(topic, status)
      return {join_ref: join_ref || null, ref: ref || null, topic, event: CHANNEL_EVENTS.reply,
        payload: {status, response: data}}
    }
    const [topic, event] = strings
    requireNames(topic, event)
    return {join_ref: null, ref: null, topic, event, payload: data}
  },
}

/** A frame from the server that does not parse; the Socket drops it and reports it. */
export class FrameError extends Error {
  constructor(message) {
    super(message)
    this.name = "FrameError"
  }
}

const FIELD_COUNTS = {[KIND_PUSH]: 3, [KIND_REPLY]: 4, [KIND_BROADCAST]: 2}

function requireNames(topic, event) {
  if (!topic || !event) throw new FrameError("binary frame without topic or event")
}

// -- Push ----------------------------------------------------------------------------------

/** One message sent on a channel, with reply hooks for "ok", "error" and "timeout". */
export class Push {
  constructor(channel, event, payload, timeout) {
    this.channel = channel
    this.event = event
    this.payload = closure(payload || {})
    this.timeout = timeout
    this.ref = null
    this.refEvent = null
    this.receivedResp = null
    this.timeoutTimer = null
    this.recHooks = []
    this.sent = false
  }

  resend(timeout) {
    this.timeout = timeout
    this.reset()
    this.send()
  }

  send() {
    if (this.hasReceived("timeout")) return
    this.startTimeout()
    this.sent = true
    this.channel.socket.push({
      topic: this.channel.topic,
      event: this.event,
      payload: this.payload(),
      ref: this.ref,
      join_ref: this.channel.joinRef(),
    }, this.channel)
  }

  /** Calls `callback(response)` when the reply has `status`; also if it already arrived. */
  receive(status, callback) {
    if (this.hasReceived(status)) callback(this.receivedResp.response)
    this.recHooks.push({status, callback})
    return this
  }

  reset() {
    this.cancelRefEvent()
    this.ref = null
    this.refEvent = null
    this.receivedResp = null
    this.sent = false
  }

  matchReceive({status, response}) {
    this.recHooks.filter(hook => hook.status === status).forEach(hook => hook.callback(response))
  }

  cancelRefEvent() {
    if (this.refEvent) this.channel.off(this.refEvent)
  }

  cancelTimeout() {
    clearTimeout(this.timeoutTimer)
    this.timeoutTimer = null
  }

  startTimeout() {
    this.cancelTimeout()
    this.cancelRefEvent()
    this.ref = this.channel.socket.makeRef()
    this.refEvent = this.channel.replyEventName(this.ref)
    this.channel.on(this.refEvent, reply => {
      this.cancelRefEvent()
      this.cancelTimeout()
      this.receivedResp = reply
      this.matchReceive(reply)
    })
    this.timeoutTimer = setTimeout(() => this.trigger("timeout", {}), this.timeout)
  }

  hasReceived(status) {
    return !!this.receivedResp && this.receivedResp.status === status
  }

  trigger(status, response) {
    this.channel.trigger(this.refEvent, {status, response})
  }
}

// -- Channel -------------------------------------------------------------------------------

/** A topic joined over a Socket. Create it with `socket.channel(topic, params)`. */
export class Channel {
  constructor(topic, params, socket) {
    this.state = CHANNEL_STATES.closed
    this.topic = topic
    this.params = closure(params || {})
    this.socket = socket
    this.bindings = []
    this.bindingRef = 0
    this.timeout = socket.timeout
    this.joinedOnce = false
    this.joinPush = new Push(this, CHANNEL_EVENTS.join, this.params, this.timeout)
    this.pushBuffer = []
    this.stateChangeRefs = []

    this.rejoinTimer = new Timer(() => {
      if (this.socket.isConnected()) this.rejoin()
    }, socket.rejoinAfterMs)

    this.stateChangeRefs.push(socket.onError(() => this.rejoinTimer.reset()))
    this.stateChangeRefs.push(socket.onOpen(() => {
      this.rejoinTimer.reset()
      if (this.isErrored()) this.rejoin()
    }))

    this.joinPush.receive("ok", () => {
      this.state = CHANNEL_STATES.joined
      this.rejoinTimer.reset()
      this.pushBuffer.forEach(push => push.send())
      this.pushBuffer = []
    })
    this.joinPush.receive("error", () => {
      this.state = CHANNEL_STATES.errored
      if (this.socket.isConnected()) this.rejoinTimer.scheduleTimeout()
    })
    this.joinPush.receive("timeout", () => {
      this.socket.log("channel", `join timeout ${this.topic} (${this.joinRef()})`)
      new Push(this, CHANNEL_EVENTS.leave, {}, this.timeout).send()
      this.state = CHANNEL_STATES.errored
      this.joinPush.reset()
      if (this.socket.isConnected()) this.rejoinTimer.scheduleTimeout()
    })
    this.onClose(() => {
      this.rejoinTimer.reset()
      this.socket.log("channel", `close ${this.topic} ${this.joinRef()}`)
      this.state = CHANNEL_STATES.closed
      this.socket.remove(this)
    })
    this.onError(reason => {
      this.socket.log("channel", `error ${this.topic}`, reason)
      if (this.isJoining()) this.joinPush.reset()
      this.state = CHANNEL_STATES.errored
      if (this.socket.isConnected()) this.rejoinTimer.scheduleTimeout()
    })
    this.on(CHANNEL_EVENTS.reply, (payload, ref) => this.trigger(this.replyEventName(ref), payload))
  }

  /** Joins the topic (once per Channel instance); returns the join Push for receive(). */
  join(timeout = this.timeout) {
    if (this.joinedOnce) {
      throw new Error("tried to join multiple times: join can only be called once per channel")
    }
    this.timeout = timeout
    this.joinedOnce = true
    this.rejoin()
    return this.joinPush
  }

  onClose(callback) {
    return this.on(CHANNEL_EVENTS.close, callback)
  }

  onError(callback) {
    return this.on(CHANNEL_EVENTS.error, reason => callback(reason))
  }

  /** Subscribes `callback(payload, ref, joinRef)` to `event`; returns a ref for off(). */
  on(event, callback) {
    const ref = this.bindingRef++
    this.bindings.push({event, ref, callback})
    return ref
  }

  /** Removes one binding (by the ref on() returned) or all bindings of `event`. */
  off(event, ref) {
    this.bindings = this.bindings.filter(b => !(b.event === event && (ref === undefined || ref === b.ref)))
  }

  canPush() {
    return this.socket.isConnected() && this.isJoined()
  }

  /** Sends `event` with `payload`; buffered until the join completes. Returns a Push. */
  push(event, payload, timeout = this.timeout) {
    if (!this.joinedOnce) {
      throw new Error(`tried to push '${event}' to '${this.topic}' before joining`)
    }
    const push = new Push(this, event, () => payload || {}, timeout)
    if (this.canPush()) {
      push.send()
    } else {
      push.startTimeout()
      this.pushBuffer.push(push)
    }
    return push
  }

  /** Leaves the topic; triggers onClose once the server acknowledges (or times out). */
  leave(timeout = this.timeout) {
    this.rejoinTimer.reset()
    this.joinPush.cancelTimeout()
    this.state = CHANNEL_STATES.leaving
    const onClose = () => this.trigger(CHANNEL_EVENTS.close, "leave")
    const push = new Push(this, CHANNEL_EVENTS.leave, {}, timeout)
    push.receive("ok", onClose).receive("timeout", onClose)
    push.send()
    if (!this.canPush()) push.trigger("ok", {})
    return push
  }

  /** Overridable hook: sees every incoming payload and returns it (possibly changed). */
  onMessage(_event, payload, _ref) {
    return payload
  }

  isMember(topic, event, payload, joinRef) {
    if (this.topic !== topic) return false
    if (joinRef && joinRef !== this.joinRef()) {
      this.socket.log("channel", "dropping outdated message", {topic, event, payload, joinRef})
      return false
    }
    return true
  }

  joinRef() {
    return this.joinPush.ref
  }

  rejoin(timeout = this.timeout) {
    if (this.isLeaving()) return
    this.socket.leaveOpenTopic(this.topic)
    this.state = CHANNEL_STATES.joining
    this.joinPush.resend(timeout)
  }

  trigger(event, payload, ref, joinRef) {
    const handled = this.onMessage(event, payload, ref, joinRef)
    if (payload && !handled) {
      throw new Error("channel onMessage callbacks must return the payload, modified or unmodified")
    }
    // a callback may bind or unbind, so dispatch over the bindings as they are now
    const bindings = this.bindings.filter(b => b.event === event)
    for (const b of bindings) b.callback(handled, ref, joinRef || this.joinRef())
  }

  replyEventName(ref) {
    return `chan_reply_${ref}`
  }

  isClosed() { return this.state === CHANNEL_STATES.closed }
  isErrored() { return this.state === CHANNEL_STATES.errored }
  isJoined() { return this.state === CHANNEL_STATES.joined }
  isJoining() { return this.state === CHANNEL_STATES.joining }
  isLeaving() { return this.state === CHANNEL_STATES.leaving }
}

const FALLBACK_KEY = "phx:fallback:LongPoll" // phoenix.js's key

const defaultSessionStore = () => {
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
 * 403 closes it with 1008.
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
    this.emit("onclose", {code, reason, wasClean: false})
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
      .then(resp => resp.json())
      .then(done, () => done(null))
  }
}

// -- Socket --------------------------------------------------------------------------------

/** One WebSocket connection to `endPoint` (e.g. "/socket") carrying many channels. */
export class Socket {
  constructor(endPoint, opts = {}) {
    this.stateChangeCallbacks = {open: [], close: [], error: [], message: []}
    this.channels = []
    this.sendBuffer = []
    this.ref = 0
    this.timeout = opts.timeout || DEFAULT_TIMEOUT
    this.transport = opts.transport || globalThis.WebSocket || LongPoll
    // WebSocket first; after it fails (an error before it opens, no open within this many
    // ms, or no answer to a ping within as many ms after it opens) LongPoll, remembered
    // for the tab in sessionStorage. Off unless set, as in phoenix.js. Unlike phoenix.js,
    // a socket whose WebSocket once worked does not fall back when a reconnect fails.
    this.longPollFallbackMs = opts.longPollFallbackMs
    this.longpollerTimeout = opts.longpollerTimeout || 20000
    this.sessionStore = opts.sessionStorage !== undefined ? opts.sessionStorage : defaultSessionStore()
    this.fallbackTimer = null
    this.fallbackRefs = []
    this.primaryPassedHealthCheck = false
    this.encode = opts.encode || Serializer.encode.bind(Serializer)
    this.decode = opts.decode || Serializer.decode.bind(Serializer)
    this.binaryType = opts.binaryType || "arraybuffer"
    this.heartbeatIntervalMs = opts.heartbeatIntervalMs || 30000
    this.rejoinAfterMs = tries =>
      opts.rejoinAfterMs ? opts.rejoinAfterMs(tries) : [1000, 2000, 5000][tries - 1] || 10000
    this.reconnectAfterMs = tries =>
      opts.reconnectAfterMs
        ? opts.reconnectAfterMs(tries)
        : [10, 50, 100, 150, 200, 250, 500, 1000, 2000][tries - 1] || 5000
    this.logger = opts.logger || (opts.debug ? (kind, msg, data) => console.log(`${kind}: ${msg}`, data) : null)
    this.params = closure(opts.params || {})
    this.endPoint = `${endPoint}/websocket`
    this.vsn = opts.vsn || VSN
    this.authToken = opts.authToken ? closure(opts.authToken) : null
    this.conn = null
    this.closeWasClean = false
    this.heartbeatTimer = null
    this.heartbeatTimeoutTimer = null
    this.pendingHeartbeatRef = null
    /** Frames from the server that did not parse (dropped; each one is logged). */
    this.droppedFrames = 0
    this.reconnectTimer = new Timer(() => this.teardown(() => this.connect()), this.reconnectAfterMs)
  }

  protocol() {
    return location.protocol.startsWith("https") ? "wss" : "ws"
  }

  endPointURL() {
    const query = new URLSearchParams()
    for (const [key, value] of Object.entries(this.params())) query.append(key, value)
    query.append("vsn", this.vsn)
    const uri = `${this.endPoint}?${query}`
    if (uri.charAt(0) !== "/") return uri
    if (uri.charAt(1) === "/") return `${this.protocol()}:${uri}`
    return `${this.protocol()}://${location.host}${uri}`
  }

  /** Opens the connection (no-op while one exists); it reconnects by itself until disconnect(). */
  connect() {
    if (this.conn) return
    // once the WebSocket has answered a ping, a later failure is an outage, not a proxy that
    // blocks it: reconnects stay on WebSocket (phoenix.js would fall back then too)
    if (this.longPollFallbackMs && this.transport !== LongPoll && !this.primaryPassedHealthCheck) {
      this.connectWithFallback(LongPoll, this.longPollFallbackMs)
    } else {
      this.transportConnect()
    }
  }

  // The rule of phoenix.js 1.8's connectWithFallback: see longPollFallbackMs above.
  connectWithFallback(fallbackTransport, fallbackMs) {
    this.cancelFallback()
    if (this.getSession(FALLBACK_KEY)) return this.fallBack(fallbackTransport, "memorized")
    let established = false
    this.fallbackTimer = setTimeout(() => this.fallBack(fallbackTransport, "timeout"), fallbackMs)
    const errorRef = this.onError(reason => {
      if (this.transport !== fallbackTransport && !established) this.fallBack(fallbackTransport, reason)
    })
    const openRef = this.onOpen(() => {
      if (this.transport === fallbackTransport) {
        if (!this.primaryPassedHealthCheck) this.storeSession(FALLBACK_KEY, "true")
        this.log("transport", "established LongPoll fallback")
        return
      }
      // open is not enough (a proxy may pass the upgrade but no frames): a ping must come back
      established = true
      clearTimeout(this.fallbackTimer)
      this.fallbackTimer = setTimeout(() => this.fallBack(fallbackTransport, "no pong"), fallbackMs)
      this.ping(rtt => {
        this.log("transport", `connected to primary after ${rtt} ms`)
        this.primaryPassedHealthCheck = true
        clearTimeout(this.fallbackTimer)
      })
    })
    this.fallbackRefs = [errorRef, openRef]
    this.transportConnect()
  }

  fallBack(fallbackTransport, reason) {
    this.log("transport", "falling back to LongPoll...", reason)
    clearTimeout(this.fallbackTimer)
    this.off(this.fallbackRefs.slice(0, 1)) // the open callback stays, to remember it
    this.transport = fallbackTransport
    this.reconnectTimer.reset()
    this.teardown(() => this.transportConnect())
  }

  cancelFallback() {
    clearTimeout(this.fallbackTimer)
    this.off(this.fallbackRefs)
    this.fallbackRefs = []
  }

  getSession(key) {
    try { return this.sessionStore ? this.sessionStore.getItem(key) : null } catch (_) { return null }
  }

  storeSession(key, value) {
    try { if (this.sessionStore) this.sessionStore.setItem(key, value) } catch (_) { /* private mode */ }
  }

  /** Sends a heartbeat and calls `callback(round trip ms)` when its reply comes back. */
  ping(callback) {
    if (!this.isConnected()) return false
    const ref = this.makeRef()
    const start = Date.now()
    this.push({topic: "phoenix", event: "heartbeat", payload: {}, ref, join_ref: null})
    const onMsgRef = this.onMessage(msg => {
      if (msg.ref === ref) {
        this.off([onMsgRef])
        callback(Date.now() - start)
      }
    })
    return true
  }

  transportConnect() {
    this.closeWasClean = false
    let protocols
    if (this.authToken) {
      const token = btoa(this.authToken()).replace(/=/g, "").replace(/\+/g, "-").replace(/\//g, "_")
      protocols = ["phoenix", `base64url.bearer.phx.${token}`]
    }
    const conn = new this.transport(this.endPointURL(), protocols)
    conn.binaryType = this.binaryType
    if (this.transport === LongPoll) conn.timeout = this.longpollerTimeout
    conn.onopen = () => this.onConnOpen()
    conn.onerror = error => this.onConnError(error)
    conn.onmessage = event => this.onConnMessage(event)
    conn.onclose = event => this.onConnClose(event)
    this.conn = conn
  }

  /** Closes the connection for good (no reconnect) and calls `callback` when done. */
  disconnect(callback, code, reason) {
    this.closeWasClean = true
    clearTimeout(this.fallbackTimer)
    this.reconnectTimer.reset()
    this.teardown(callback, code, reason)
  }

  // Forgets the current connection: closes it, stops its heartbeat and errors the channels
  // joined over it. Its late events are ignored, so a reconnect cannot be started twice.
  teardown(callback, code, reason) {
    const conn = this.conn
    if (!conn) return callback && callback()
    this.conn = null
    conn.onopen = conn.onerror = conn.onmessage = null
    conn.onclose = null
    const wasOpen = conn.readyState === WS_OPEN
    if (conn.readyState !== WS_CLOSED) {
      code === undefined ? conn.close() : conn.close(code, reason || "")
    }
    this.clearHeartbeats()
    if (wasOpen) {
      this.triggerChanError("connection_closed")
      const event = {code: code || WS_CLOSE_NORMAL, reason: reason || "", wasClean: true}
      this.stateChangeCallbacks.close.forEach(([, cb]) => cb(event))
    }
    callback && callback()
  }

  log(kind, msg, data) {
    if (this.logger) this.logger(kind, msg, data)
  }

  hasLogger() {
    return this.logger !== null
  }

  onOpen(callback) { return this.addCallback("open", callback) }
  onClose(callback) { return this.addCallback("close", callback) }
  onError(callback) { return this.addCallback("error", callback) }
  onMessage(callback) { return this.addCallback("message", callback) }

  addCallback(kind, callback) {
    const ref = this.makeRef()
    this.stateChangeCallbacks[kind].push([ref, callback])
    return ref
  }

  /** Removes the state callbacks whose refs (from onOpen/onClose/...) are in `refs`. */
  off(refs) {
    for (const kind of Object.keys(this.stateChangeCallbacks)) {
      this.stateChangeCallbacks[kind] = this.stateChangeCallbacks[kind].filter(([ref]) => !refs.includes(ref))
    }
  }

  onConnOpen() {
    this.log("transport", `connected to ${this.endPointURL()}`)
    this.closeWasClean = false
    this.flushSendBuffer()
    this.reconnectTimer.reset()
    this.resetHeartbeat()
    this.stateChangeCallbacks.open.forEach(([, cb]) => cb())
  }

  onConnClose(event) {
    this.log("transport", "close", event)
    this.conn = null
    this.clearHeartbeats()
    this.triggerChanError("connection_closed")
    if (!this.closeWasClean) this.reconnectTimer.scheduleTimeout()
    this.stateChangeCallbacks.close.forEach(([, cb]) => cb(event))
  }

  onConnError(error) {
    this.log("transport", "error", error)
    this.stateChangeCallbacks.error.forEach(([, cb]) => cb(error))
    this.triggerChanError("connection_error")
  }

  triggerChanError(reason) {
    for (const channel of this.channels.slice()) {
      if (!(channel.isErrored() || channel.isLeaving() || channel.isClosed())) {
        channel.trigger(CHANNEL_EVENTS.error, {source: "transport", reason})
      }
    }
  }

  connectionState() {
    switch (this.conn && this.conn.readyState) {
      case 0: return "connecting"
      case 1: return "open"
      case 2: return "closing"
      default: return "closed"
    }
  }

  isConnected() {
    return this.connectionState() === "open"
  }

  /** A new Channel for `topic`; `params` (object or function) is sent with every join. */
  channel(topic, params = {}) {
    const channel = new Channel(topic, params, this)
    this.channels.push(channel)
    return channel
  }

  remove(channel) {
    this.off(channel.stateChangeRefs)
    this.channels = this.channels.filter(c => c !== channel)
  }

  push(data, channel) {
    this.log("push", `${data.topic} ${data.event} (${data.join_ref}, ${data.ref})`, data.payload)
    if (this.isConnected()) {
      this.send(data)
    } else {
      // a buffered frame is dropped if its channel rejoined or closed meanwhile
      this.sendBuffer.push(() => {
        if (!this.isOutdated(data, channel)) this.send(data)
      })
    }
  }

  send(data) {
    const conn = this.conn
    this.encode(data, frame => conn.send(frame))
  }

  isOutdated(data, channel) {
    if (!channel || data.event === CHANNEL_EVENTS.leave) return false
    return data.join_ref !== channel.joinRef() || channel.isClosed()
  }

  makeRef() {
    this.ref = this.ref >= Number.MAX_SAFE_INTEGER ? 1 : this.ref + 1
    return String(this.ref)
  }

  flushSendBuffer() {
    if (!this.isConnected() || this.sendBuffer.length === 0) return
    const buffered = this.sendBuffer
    this.sendBuffer = []
    buffered.forEach(send => send())
  }

  clearHeartbeats() {
    clearTimeout(this.heartbeatTimer)
    clearTimeout(this.heartbeatTimeoutTimer)
    this.heartbeatTimer = null
    this.heartbeatTimeoutTimer = null
    this.pendingHeartbeatRef = null
  }

  resetHeartbeat() {
    this.clearHeartbeats()
    if (this.conn && this.conn.skipHeartbeat) return // long-poll: every poll is one
    this.heartbeatTimer = setTimeout(() => this.sendHeartbeat(), this.heartbeatIntervalMs)
  }

  sendHeartbeat() {
    if (!this.isConnected()) return
    this.pendingHeartbeatRef = this.makeRef()
    this.push({topic: "phoenix", event: "heartbeat", payload: {}, ref: this.pendingHeartbeatRef, join_ref: null})
    this.heartbeatTimeoutTimer = setTimeout(() => this.heartbeatTimeout(), this.heartbeatIntervalMs)
  }

  heartbeatTimeout() {
    if (!this.pendingHeartbeatRef) return
    this.log("transport", "heartbeat timeout, reconnecting")
    this.closeWasClean = false
    this.teardown(() => this.reconnectTimer.scheduleTimeout(), WS_CLOSE_NORMAL, "heartbeat timeout")
  }

  onConnMessage(raw) {
    let msg = null
    try {
      this.decode(raw.data, decoded => { msg = decoded })
    } catch (error) {
      // a frame that does not parse is dropped, never half-read; the connection stays
      this.droppedFrames += 1
      this.log("transport", `dropped a malformed frame: ${error.message}`, raw.data)
      return
    }
    const {topic, event, payload, ref, join_ref} = msg
    if (ref && ref === this.pendingHeartbeatRef) this.resetHeartbeat()
    this.log("receive", `${(payload && payload.status) || ""} ${topic} ${event} ${ref ? `(${ref})` : ""}`, payload)
    for (const channel of this.channels.slice()) {
      if (channel.isMember(topic, event, payload, join_ref)) channel.trigger(event, payload, ref, join_ref)
    }
    this.stateChangeCallbacks.message.forEach(([, cb]) => cb(msg))
  }

  leaveOpenTopic(topic) {
    const dup = this.channels.find(c => c.topic === topic && (c.isJoined() || c.isJoining()))
    if (dup) {
      this.log("transport", `leaving duplicate topic "${topic}"`)
      dup.leave()
    }
  }
}

// -- Presence ------------------------------------------------------------------------------

const nullProto = obj => {
  if (Object.getPrototypeOf(obj) === null) return obj
  const out = Object.create(null)
  for (const key of Object.getOwnPropertyNames(obj)) out[key] = obj[key]
  return out
}
const clone = obj => JSON.parse(JSON.stringify(obj))
const eachKey = (obj, fn) => Object.getOwnPropertyNames(obj).map(key => fn(key, obj[key]))
const refsOf = presence => presence.metas.map(meta => meta.phx_ref)

/**
 * Tracks who is on a channel from "presence_state" and "presence_diff" events, with the
 * phoenix.js semantics: diffs that arrive before the state (or from an earlier join) are
 * held back until the state for the current join arrives. State keys are presence keys
 * (e.g. user names), each `{metas: [{phx_ref, ...}, ...]}`.
 */
export class Presence {
  constructor(channel, opts = {}) {
    const events = opts.events || {state: "presence_state", diff: "presence_diff"}
    this.state = Object.create(null)
    this.pendingDiffs = []
    this.channel = channel
    this.joinRef = null
    this.caller = {onJoin() {}, onLeave() {}, onSync() {}}

    channel.on(events.state, newState => {
      const {onJoin, onLeave, onSync} = this.caller
      this.joinRef = channel.joinRef()
      this.state = Presence.syncState(this.state, newState, onJoin, onLeave)
      for (const diff of this.pendingDiffs) {
        this.state = Presence.syncDiff(this.state, diff, onJoin, onLeave)
      }
      this.pendingDiffs = []
      onSync()
    })

    channel.on(events.diff, diff => {
      const {onJoin, onLeave, onSync} = this.caller
      if (this.inPendingSyncState()) {
        this.pendingDiffs.push(diff)
      } else {
        this.state = Presence.syncDiff(this.state, diff, onJoin, onLeave)
        onSync()
      }
    })
  }

  onJoin(callback) { this.caller.onJoin = callback }
  onLeave(callback) { this.caller.onLeave = callback }
  onSync(callback) { this.caller.onSync = callback }

  list(chooser) {
    return Presence.list(this.state, chooser)
  }

  inPendingSyncState() {
    return !this.joinRef || this.joinRef !== this.channel.joinRef()
  }

  /**
   * Replaces `currentState` with the server's `newState`, reporting the difference as
   * joins and leaves (keys missing from `newState` leave). Returns the new state.
   */
  static syncState(currentState, newState, onJoin, onLeave) {
    const state = nullProto(clone(currentState))
    newState = nullProto(newState)
    const joins = Object.create(null)
    const leaves = Object.create(null)

    eachKey(state, (key, presence) => {
      if (!newState[key]) leaves[key] = presence
    })
    eachKey(newState, (key, incoming) => {
      const current = state[key]
      if (!current) {
        joins[key] = incoming
        return
      }
      const incomingRefs = refsOf(incoming)
      const currentRefs = refsOf(current)
      const joined = incoming.metas.filter(meta => !currentRefs.includes(meta.phx_ref))
      const left = current.metas.filter(meta => !incomingRefs.includes(meta.phx_ref))
      if (joined.length > 0) {
        joins[key] = incoming
        joins[key].metas = joined
      }
      if (left.length > 0) {
        leaves[key] = clone(current)
        leaves[key].metas = left
      }
    })
    return Presence.syncDiff(state, {joins, leaves}, onJoin, onLeave)
  }

  /**
   * Applies `{joins, leaves}`: joined metas are added to a key (current ones kept first),
   * left metas are removed by phx_ref, and a key with no metas left is deleted.
   * Calls onJoin(key, currentPresence, newPresence) and onLeave(key, currentPresence, leftPresence).
   */
  static syncDiff(state, diff, onJoin = () => {}, onLeave = () => {}) {
    state = nullProto(state)
    const {joins, leaves} = clone(diff)

    eachKey(joins, (key, incoming) => {
      const current = state[key]
      state[key] = clone(incoming)
      if (current) {
        const joinedRefs = refsOf(state[key])
        const kept = current.metas.filter(meta => !joinedRefs.includes(meta.phx_ref))
        state[key].metas.unshift(...kept)
      }
      onJoin(key, current, incoming)
    })
    eachKey(leaves, (key, left) => {
      const current = state[key]
      if (!current) return
      const gone = refsOf(left)
      current.metas = current.metas.filter(meta => !gone.includes(meta.phx_ref))
      onLeave(key, current, left)
      if (current.metas.length === 0) delete state[key]
    })
    return state
  }

  /** `chooser(key, presence)` for every key (default: the presence itself). */
  static list(presences, chooser = (_key, presence) => presence) {
    return eachKey(presences, (key, presence) => chooser(key, presence))
  }
}

export default {Socket, Channel, Push, Presence, Serializer, Timer, LongPoll, FrameError}
