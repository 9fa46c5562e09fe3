// phoenix-presence.js: Presence, phoenix.js's syncState/syncDiff (part of roost.js, the page's Phoenix Channels client).

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
