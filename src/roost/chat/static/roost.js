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
    const [join_ref, ref, topic, event, payload] = JSON.parse(raw)
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

  binaryDecode(buffer) {
    const view = new DataView(buffer)
    const utf8 = new TextDecoder()
    const kind = view.getUint8(0)
    const sizes = {[KIND_PUSH]: 3, [KIND_REPLY]: 4, [KIND_BROADCAST]: 2}[kind]
    if (sizes === undefined) throw new Error(`unknown binary frame kind ${kind}`)
    const lengths = []
    for (let i = 0; i < sizes; i++) lengths.push(view.getUint8(1 + i))
    let at = 1 + sizes
    const strings = lengths.map(n => {
      const s = utf8.decode(buffer.slice(at, at + n))
      at += n
      return s
    })
    const data = buffer.slice(at)
    if (kind === KIND_PUSH) {
      const [join_ref, topic, event] = strings
      return {join_ref, ref: null, topic, event, payload: data}
    }
    if (kind === KIND_REPLY) {
      const [join_ref, ref, topic, status] = strings
      return {join_ref, ref, topic, event: CHANNEL_EVENTS.reply, payload: {status, response: data}}
    }
    const [topic, event] = strings
    return {join_ref: null, ref: null, topic, event, payload: data}
  },
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

// -- Socket --------------------------------------------------------------------------------

/** One WebSocket connection to `endPoint` (e.g. "/socket") carrying many channels. */
export class Socket {
  constructor(endPoint, opts = {}) {
    this.stateChangeCallbacks = {open: [], close: [], error: [], message: []}
    this.channels = []
    this.sendBuffer = []
    this.ref = 0
    this.timeout = opts.timeout || DEFAULT_TIMEOUT
    this.transport = opts.transport || globalThis.WebSocket
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
    this.closeWasClean = false
    let protocols
    if (this.authToken) {
      const token = btoa(this.authToken()).replace(/=/g, "").replace(/\+/g, "-").replace(/\//g, "_")
      protocols = ["phoenix", `base64url.bearer.phx.${token}`]
    }
    const conn = new this.transport(this.endPointURL(), protocols)
    conn.binaryType = this.binaryType
    conn.onopen = () => this.onConnOpen()
    conn.onerror = error => this.onConnError(error)
    conn.onmessage = event => this.onConnMessage(event)
    conn.onclose = event => this.onConnClose(event)
    this.conn = conn
  }

  /** Closes the connection for good (no reconnect) and calls `callback` when done. */
  disconnect(callback, code, reason) {
    this.closeWasClean = true
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
    this.decode(raw.data, msg => {
      const {topic, event, payload, ref, join_ref} = msg
      if (ref && ref === this.pendingHeartbeatRef) this.resetHeartbeat()
      this.log("receive", `${(payload && payload.status) || ""} ${topic} ${event} ${ref ? `(${ref})` : ""}`, payload)
      for (const channel of this.channels.slice()) {
        if (channel.isMember(topic, event, payload, join_ref)) channel.trigger(event, payload, ref, join_ref)
      }
      this.stateChangeCallbacks.message.forEach(([, cb]) => cb(msg))
    })
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

export default {Socket, Channel, Push, Presence, Serializer, Timer}
