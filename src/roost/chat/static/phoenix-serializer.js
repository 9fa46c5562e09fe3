// phoenix-serializer.js: the V2 serializer, JSON and binary frames; every length checked (part of roost.js, the page's Phoenix Channels client).

import {CHANNEL_EVENTS} from "./phoenix-core.js"

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
