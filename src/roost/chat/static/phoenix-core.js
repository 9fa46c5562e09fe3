// phoenix-core.js: protocol constants, the backoff Timer (part of roost.js, the page's Phoenix Channels client).

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
export const WS_OPEN = 1
export const WS_CLOSED = 3

export const closure = value => (typeof value === "function" ? value : () => value)

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
