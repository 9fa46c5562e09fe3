// phoenix-core.js: protocol constants, the jittered backoff and its Timer (part of roost.js, the page's Phoenix Channels client).

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

// -- backoff -------------------------------------------------------------------------------
//
// phoenix.js retries on a fixed schedule (reconnect after 10, 50, 100 ... ms, rejoin after
// 1, 2, 5 s): every client of a node that dies comes back at the same instants, a storm on
// whichever node takes them. Here try n (from 1) waits a delay drawn uniformly from
// [floor, max(floor, min(cap, base * 2 ** (n - 1)))] ms: "full jitter" (AWS Architecture
// Blog, "Exponential Backoff And Jitter"), a small floor so no try comes back at once.
// roost.client (Python) uses the same schedules (roost/client/backoff.py).

/** Socket reconnect: the first try within 50 ms .. 1 s, then windows of 2, 4, 8, 16, 30 s. */
export const RECONNECT_BACKOFF = Object.freeze({base: 1000, cap: 30000, floor: 50})
/** Channel rejoin while connected (refused, timed out, phx_error): 0.25 .. 2 s, then 4 .. 30 s. */
export const REJOIN_BACKOFF = Object.freeze({base: 2000, cap: 30000, floor: 250})
/** The longest Retry-After honoured, ms. */
export const RETRY_AFTER_MAX_MS = 300000

/** `tries => ms`, full jitter over `{base, cap, floor}`; `random` is injectable (tests). */
export const jitteredBackoff = ({base, cap = 30000, floor = 0}, random = Math.random) => tries => {
  const exponent = Math.min(Math.max(tries, 1) - 1, 64)
  const ceiling = Math.max(floor, Math.min(cap, base * 2 ** exponent))
  return floor + random() * (ceiling - floor)
}

/** A Retry-After header (delta-seconds or an HTTP-date) as ms from `now`, or null. */
export const parseRetryAfter = (value, now = Date.now()) => {
  if (value === null || value === undefined) return null
  const text = String(value).trim()
  let ms
  if (/^\d+$/.test(text)) {
    ms = Number(text) * 1000
  } else {
    const when = Date.parse(text)
    if (Number.isNaN(when) || !/GMT|UTC|[+-]\d{4}$/.test(text)) return null
    ms = when - now
  }
  return Math.min(Math.max(ms, 0), RETRY_AFTER_MAX_MS)
}

/**
 * Calls `callback` after a delay that grows with every try: `timerCalc(tries)` ms, after
 * `atLeastMs` first when given (a refusal's Retry-After). `delay` is the last one scheduled.
 */
export class Timer {
  constructor(callback, timerCalc) {
    this.callback = callback
    this.timerCalc = timerCalc
    this.timer = null
    this.tries = 0
    this.delay = null
  }

  reset() {
    this.tries = 0
    clearTimeout(this.timer)
    this.timer = null
  }

  scheduleTimeout(atLeastMs = 0) {
    clearTimeout(this.timer)
    this.delay = (atLeastMs || 0) + this.timerCalc(this.tries + 1)
    this.timer = setTimeout(() => {
      this.timer = null
      this.tries += 1
      this.callback()
    }, this.delay)
  }
}
