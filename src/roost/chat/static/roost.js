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
// closes the connection and reconnects), pushes buffered until the join completes,
// replies for a stale join_ref dropped. Channel params may be a function: it is
// called for every (re)join, which is how a client asks for missed messages when it
// rejoins. Unlike phoenix.js, reconnects and rejoins wait a *jittered* exponential
// backoff (phoenix-core.js: reconnect uniform in 50 ms .. 1 s, the window doubling
// per try up to 30 s; rejoin 0.25 .. 2 s, likewise), so the clients of a node that
// dies do not all come back at the same instants; `random` in the options replaces
// Math.random (tests). A long-poll refusal's Retry-After (roost: 503 past
// --max-connections, 429 past the per-address limits) is waited out before that
// delay. A refused WebSocket upgrade's status and headers are not visible to
// JavaScript (the browser reports only "error, then close 1006"): there the jitter
// alone spreads the clients.
//
// Transports: WebSocket, or LongPoll (/socket/longpoll) given as `transport` or
// reached by `longPollFallbackMs` (phoenix.js 1.8's rule: see Socket). Frames from
// the server that do not parse — a binary frame whose lengths do not add up, say —
// are dropped and logged (socket.droppedFrames counts them), never half-read.
//
// Modules (one concept each): phoenix-core.js (constants, the backoff Timer),
// phoenix-serializer.js (V2 frames), phoenix-channel.js (Push, Channel),
// phoenix-longpoll.js (the LongPoll transport), phoenix-presence.js (Presence).
// This file holds the Socket and exports all of them.

import {
  CHANNEL_EVENTS, CHANNEL_STATES, DEFAULT_TIMEOUT, RECONNECT_BACKOFF, REJOIN_BACKOFF, Timer, VSN,
  WS_CLOSE_NORMAL, WS_CLOSED, WS_OPEN, closure, jitteredBackoff, parseRetryAfter,
} from "./phoenix-core.js"
import {FrameError, Serializer} from "./phoenix-serializer.js"
import {Channel, Push} from "./phoenix-channel.js"
import {FALLBACK_KEY, LongPoll, defaultSessionStore} from "./phoenix-longpoll.js"
import {Presence} from "./phoenix-presence.js"

export {
  CHANNEL_EVENTS, CHANNEL_STATES, Channel, DEFAULT_TIMEOUT, FrameError, LongPoll, Presence, Push,
  RECONNECT_BACKOFF, REJOIN_BACKOFF, Serializer, Timer, VSN, WS_CLOSE_NORMAL, jitteredBackoff,
  parseRetryAfter,
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
    // jittered exponential backoff (phoenix-core.js), not phoenix.js's fixed schedule
    const random = opts.random || Math.random
    this.rejoinAfterMs = opts.rejoinAfterMs || jitteredBackoff(REJOIN_BACKOFF, random)
    this.reconnectAfterMs = opts.reconnectAfterMs || jitteredBackoff(RECONNECT_BACKOFF, random)
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
    // a long-poll refusal's Retry-After (ms) comes first, then the jittered delay
    if (!this.closeWasClean) this.reconnectTimer.scheduleTimeout((event && event.retryAfterMs) || 0)
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

export default {Socket, Channel, Push, Presence, Serializer, Timer, LongPoll, FrameError, jitteredBackoff}
