// phoenix-channel.js: Push and Channel (part of roost.js, the page's Phoenix Channels client).

import {CHANNEL_EVENTS, CHANNEL_STATES, Timer, closure} from "./phoenix-core.js"

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
