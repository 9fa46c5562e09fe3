// Shared helpers for the roost <-> official phoenix.js compatibility scripts.
//
// Every script:
//   node <script>.mjs <socket-url> [client]
//     socket-url  e.g. ws://127.0.0.1:4000/socket   (or env ROOST_URL)
//     client      "1.8" (phoenix 1.8.x, V2 serializer) or "1.2" (phoenix 1.2.x, V1)
//                 (or env ROOST_JS_CLIENT; default "1.8")
// prints exactly one JSON line on stdout and exits 0 on success; on failure it
// prints the reason plus a trace of every WebSocket frame to stderr and exits 1.

import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";

const require = createRequire(import.meta.url);
const HERE = dirname(fileURLToPath(import.meta.url));

export const OVERALL_TIMEOUT_MS = Number(process.env.ROOST_JS_TIMEOUT_MS || 15000);
export const STEP_TIMEOUT_MS = 5000;

// Node 20 has no global WebSocket; phoenix 1.8 falls back to globalThis.WebSocket
// and phoenix 1.2 to window.WebSocket when no transport is given. We always pass
// a transport explicitly, but set the globals too so nothing falls back to LongPoll.
if (typeof globalThis.WebSocket === "undefined") globalThis.WebSocket = WebSocket;

export function parseArgs() {
  const url = process.argv[2] || process.env.ROOST_URL;
  const client = process.argv[3] || process.env.ROOST_JS_CLIENT || "1.8";
  if (!url) fail("usage: node script.mjs <ws://host:port/socket> [1.8|1.2]  (or env ROOST_URL)");
  if (!["1.8", "1.2"].includes(client)) fail(`unknown client ${JSON.stringify(client)}; expected 1.8 or 1.2`);
  return { url, client };
}

// Load the official client. Returns {Socket, version, vsn}.
export function loadPhoenix(client) {
  if (client === "1.8") {
    const mod = require("phoenix"); // the CJS build: priv/static/phoenix.cjs.js
    const version = JSON.parse(readFileSync(join(HERE, "node_modules/phoenix/package.json"), "utf8")).version;
    return { Socket: mod.Socket, version, vsn: "2.0.0" };
  }
  // phoenix 1.2.x is a plain script wrapped as (function(exports){...})(exports);
  // it only touches `window` when no transport is passed, but give it one anyway.
  if (typeof globalThis.window === "undefined") {
    globalThis.window = { WebSocket };
  }
  const mod = require("phoenix12");
  const version = JSON.parse(readFileSync(join(HERE, "node_modules/phoenix12/package.json"), "utf8")).version;
  return { Socket: mod.Socket, version, vsn: "1.0.0" };
}

// ---------------------------------------------------------------- frame trace

export const trace = [];
const t0 = Date.now();

function fmtData(data) {
  if (typeof data === "string") return data;
  let bytes;
  if (data instanceof ArrayBuffer) bytes = new Uint8Array(data);
  else if (ArrayBuffer.isView(data)) bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  else if (Array.isArray(data)) bytes = Buffer.concat(data);
  else return String(data);
  const hex = Buffer.from(bytes).toString("hex");
  return `<binary ${bytes.length} bytes: ${hex.length > 400 ? hex.slice(0, 400) + "..." : hex}>`;
}

function note(label, dir, data) {
  trace.push({ t: Date.now() - t0, socket: label, dir, data });
}

// A ws WebSocket subclass that records every frame sent and received.
export function tracingTransport(label) {
  return class TracingWebSocket extends WebSocket {
    constructor(url, protocols) {
      super(url, protocols);
      note(label, "connect", url);
      this.addEventListener("open", () => note(label, "open", this.protocol || ""));
      this.addEventListener("message", (e) => note(label, "in", fmtData(e.data)));
      this.addEventListener("close", (e) => note(label, "close", { code: e.code, reason: e.reason, wasClean: e.wasClean }));
      this.addEventListener("error", (e) => note(label, "error", String(e.message || e.error || e)));
    }
    send(data) {
      note(label, "out", fmtData(data));
      return super.send(data);
    }
  };
}

// Inbound text frames of one socket, decoded (V2 arrays become objects).
export function inboundFrames(label) {
  const out = [];
  for (const f of trace) {
    if (f.socket !== label || f.dir !== "in" || typeof f.data !== "string" || f.data.startsWith("<binary")) continue;
    try {
      const m = JSON.parse(f.data);
      if (Array.isArray(m)) {
        const [join_ref, ref, topic, event, payload] = m;
        out.push({ join_ref, ref, topic, event, payload });
      } else {
        out.push(m);
      }
    } catch {
      // not JSON: ignore here, it stays visible in the trace
    }
  }
  return out;
}

// ---------------------------------------------------------------- outcome

let finished = false;

export function fail(message) {
  if (finished) return;
  finished = true;
  process.stderr.write(`FAIL: ${message}\n`);
  if (trace.length) {
    process.stderr.write("frame trace (t ms, socket, direction, data):\n");
    for (const f of trace) {
      const d = typeof f.data === "string" ? f.data : JSON.stringify(f.data);
      process.stderr.write(`  ${String(f.t).padStart(6)} ${f.socket} ${f.dir.padEnd(7)} ${d}\n`);
    }
  }
  process.exit(1);
}

export function succeed(result) {
  if (finished) return;
  finished = true;
  if (process.env.ROOST_JS_TRACE) {
    for (const f of trace) process.stderr.write(JSON.stringify(f) + "\n");
  }
  process.stdout.write(JSON.stringify({ ok: true, ...result }) + "\n");
  process.exit(0);
}

export function check(cond, message) {
  if (!cond) throw new Error(message);
}

// Run `main` with an overall deadline; any throw/rejection fails the script.
export function run(main) {
  const timer = setTimeout(() => fail(`overall timeout after ${OVERALL_TIMEOUT_MS} ms`), OVERALL_TIMEOUT_MS);
  process.on("unhandledRejection", (e) => fail(`unhandled rejection: ${e && e.stack ? e.stack : e}`));
  process.on("uncaughtException", (e) => fail(`uncaught exception: ${e && e.stack ? e.stack : e}`));
  Promise.resolve()
    .then(main)
    .then((result) => {
      clearTimeout(timer);
      succeed(result || {});
    })
    .catch((e) => fail(e && e.message ? e.message : String(e)));
}

// ---------------------------------------------------------------- waiting helpers

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Poll `pred` every 10 ms until it returns a truthy value, which is returned.
export async function waitUntil(pred, what, ms = STEP_TIMEOUT_MS) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = pred();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(10);
  }
}

// Turn a phoenix Push into a promise of {status, response}; "timeout" rejects.
export function replyOf(push, what) {
  return new Promise((resolve, reject) => {
    push
      .receive("ok", (response) => resolve({ status: "ok", response }))
      .receive("error", (response) => resolve({ status: "error", response }))
      .receive("timeout", () => reject(new Error(`${what}: no reply (push timeout)`)));
  });
}

// Create a connected socket with counters for open/close/error.
export async function openSocket(Socket, url, label, params, extraOpts = {}) {
  const socket = new Socket(url, {
    transport: tracingTransport(label),
    params,
    timeout: STEP_TIMEOUT_MS,
    // never reconnect quickly in a way that could mask failures; a reconnect
    // still shows up as an extra "open"
    reconnectAfterMs: () => 1000,
    ...extraOpts,
  });
  const stats = { opens: 0, closes: 0, errors: 0, closeEvents: [] };
  socket.onOpen(() => stats.opens++);
  socket.onClose((e) => {
    stats.closes++;
    stats.closeEvents.push(e ? { code: e.code, reason: e.reason } : null);
  });
  socket.onError(() => stats.errors++);
  socket.connect();
  await waitUntil(() => stats.opens > 0 || stats.closes > 0 || stats.errors > 0, `${label}: socket open`);
  check(stats.opens === 1 && stats.closes === 0 && stats.errors === 0,
    `${label}: socket failed to open (opens=${stats.opens} closes=${stats.closes} errors=${stats.errors} ` +
    `closeEvents=${JSON.stringify(stats.closeEvents)})`);
  return { socket, stats };
}

// Record every occurrence of `events` on a channel.
export function recordEvents(channel, events) {
  const seen = {};
  for (const ev of events) {
    seen[ev] = [];
    channel.on(ev, (payload) => seen[ev].push(payload));
  }
  return seen;
}

export function randomSuffix() {
  return Math.random().toString(36).slice(2, 10);
}
