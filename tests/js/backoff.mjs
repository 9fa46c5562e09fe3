// roost.js's reconnect and rejoin schedules (issue 27), against phoenix.js's.
//
//   node backoff.mjs schedules          the schedules on 1,000 simulated clients, and a
//                                       long-poll refusal's Retry-After (a stubbed fetch)
//   node backoff.mjs restart <ws-url>   20 roost.js Sockets on a real node: prints
//                                       {"ready": true} once all joined, then, after the
//                                       test restarts the node, each one's retry times
//
// Prints one JSON line per step on stdout; exits 1 with the reason on stderr on failure.

import { createRequire } from "node:module";
import WebSocket from "ws";
import {
  LongPoll, RECONNECT_BACKOFF, REJOIN_BACKOFF, Socket, jitteredBackoff, parseRetryAfter,
} from "../../src/roost/chat/static/roost.js";

const require = createRequire(import.meta.url);
const CLIENTS = 1000;

function fail(reason) {
  process.stderr.write(`FAIL: ${reason}\n`);
  process.exit(1);
}

function quantile(sorted, q) {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

function stats(delays) {
  const s = [...delays].sort((a, b) => a - b);
  const buckets = new Map();
  for (const d of delays) buckets.set(Math.floor(d / 10), (buckets.get(Math.floor(d / 10)) || 0) + 1);
  return {
    min: s[0], p10: quantile(s, 0.1), p50: quantile(s, 0.5), p90: quantile(s, 0.9), max: s[s.length - 1],
    spread: quantile(s, 0.9) - quantile(s, 0.1), peak10ms: Math.max(...buckets.values()),
  };
}

// a deterministic source for the simulated crowd (mulberry32)
function seeded(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

async function schedules() {
  const Phoenix = require("phoenix").Socket;
  const out = {};
  const random = seeded(27);
  for (const [kind, fn] of [["reconnect", "reconnectAfterMs"], ["rejoin", "rejoinAfterMs"]]) {
    // each client a Socket of its own, with the default schedule; one shared seeded source
    const ours = [], theirs = [];
    for (let i = 0; i < CLIENTS; i++) {
      ours.push(new Socket("ws://127.0.0.1:9/socket", { random })[fn](1));
      theirs.push(new Phoenix("ws://127.0.0.1:9/socket", { transport: WebSocket })[fn](1));
    }
    out[kind] = { roost: stats(ours), phoenix: stats(theirs) };
  }
  // the default draws from Math.random: still spread
  const live = [];
  for (let i = 0; i < CLIENTS; i++) live.push(new Socket("ws://127.0.0.1:9/socket").reconnectAfterMs(1));
  out.reconnectMathRandom = stats(live);
  // the windows double up to the cap (random fixed at the top)
  const top = jitteredBackoff(RECONNECT_BACKOFF, () => 1);
  out.reconnectCeilings = [1, 2, 3, 4, 5, 6, 7].map(top);
  out.rejoinCeilings = [1, 2, 3, 4, 5].map(jitteredBackoff(REJOIN_BACKOFF, () => 1));
  out.parsed = [parseRetryAfter("5"), parseRetryAfter("soon"), parseRetryAfter(null)];

  // a long-poll open refused as roost refuses it: HTTP 200, body status 500, Retry-After: 5
  const realFetch = globalThis.fetch;
  let fetches = 0;
  globalThis.fetch = async () => {
    fetches += 1;
    return {
      headers: new Headers({ "Retry-After": "5" }),
      json: async () => ({ status: 500, messages: [] }),
    };
  };
  try {
    const socket = new Socket("ws://127.0.0.1:9/socket", { transport: LongPoll, random: () => 0 });
    const closed = new Promise(resolve => socket.onClose(resolve));
    socket.connect();
    const event = await closed;
    out.longpollRefusal = {
      fetches, retryAfterMs: event.retryAfterMs, nextDelay: socket.reconnectTimer.delay,
    };
    socket.disconnect();
  } finally {
    globalThis.fetch = realFetch;
  }
  console.log(JSON.stringify(out));
}

async function restart(url) {
  const N = 20;
  const clients = [];
  for (let i = 0; i < N; i++) {
    const record = { attempts: [], closes: [], opens: 0, rejoined: false };
    class Recording extends WebSocket {
      constructor(u, protocols) {
        super(u, protocols);
        record.attempts.push(Date.now());
      }
    }
    const socket = new Socket(url, { transport: Recording, params: { user: `js${i}` } });
    socket.onClose(() => record.closes.push(Date.now()));
    socket.onOpen(() => { record.opens += 1; });
    socket.connect();
    const channel = socket.channel("rooms:spread", { user: `js${i}` });
    let joins = 0;
    const joined = new Promise((resolve, reject) => {
      channel.join()
        .receive("ok", reply => { joins += 1; record.node = reply.node; if (joins > 1) record.rejoined = true; resolve(); })
        .receive("error", reject);
    });
    clients.push({ socket, channel, record, joined });
  }
  await Promise.all(clients.map(c => c.joined));
  console.log(JSON.stringify({ ready: true }));
  // the test kills the node now and starts another on the same port
  const deadline = Date.now() + 40000;
  while (!clients.every(c => c.record.rejoined)) {
    if (Date.now() > deadline) {
      fail(`not all rejoined: ${JSON.stringify(clients.map(c => c.record))}`);
    }
    await new Promise(r => setTimeout(r, 50));
  }
  const result = clients.map(({ record }) => {
    const closed = record.closes[0];
    const after = record.attempts.filter(t => t >= closed).map(t => t - closed);
    return { retries: after, node: record.node, opens: record.opens };
  });
  console.log(JSON.stringify({ clients: result }));
  for (const c of clients) c.socket.disconnect();
}

const mode = process.argv[2];
const overall = setTimeout(() => fail("overall timeout"), 60000);
overall.unref();
try {
  if (mode === "schedules") await schedules();
  else if (mode === "restart") await restart(process.argv[3]);
  else fail(`usage: node backoff.mjs schedules | restart <ws-url>`);
} catch (error) {
  fail(error && error.stack || error);
}
process.exit(0);
