// One Phoenix Channels client from npm, two users in the chat's rooms:<name> channel:
// alice on node 1, bob on node 2 (the same URL twice tests one node). Each joins, sees the
// other in presence (presence_state/presence_diff through the client's own Presence), pushes
// new:msg and receives both messages.
//   node compat-phoenix.mjs <client> <transport> <url node 1> <url node 2>
//     client     phoenix-1.8 | phoenix-1.2 | phoenix-channels | phoenix-socket
//     transport  websocket | longpoll
// Prints one JSON line and exits 0; on failure exits 1 with the reason and a frame trace.
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";
import { run, check, waitUntil, replyOf, randomSuffix, fail, tracingTransport, STEP_TIMEOUT_MS, OVERALL_TIMEOUT_MS } from "./lib.mjs";
import { installXMLHttpRequest, xhrLog } from "./xhr-shim.mjs";

const require = createRequire(import.meta.url);
const HERE = dirname(fileURLToPath(import.meta.url));
const [client, transport, url1, url2] = process.argv.slice(2);
const CLIENTS = ["phoenix-1.8", "phoenix-1.2", "phoenix-channels", "phoenix-socket"];
if (!CLIENTS.includes(client) || !["websocket", "longpoll"].includes(transport) || !url1 || !url2) {
  fail(`usage: node compat-phoenix.mjs <${CLIENTS.join("|")}> <websocket|longpoll> <url1> <url2>`);
}

const PACKAGE = { "phoenix-1.8": "phoenix", "phoenix-1.2": "phoenix12", "phoenix-channels": "phoenix-channels", "phoenix-socket": "phoenix-socket" };
const version = JSON.parse(readFileSync(join(HERE, "node_modules", PACKAGE[client], "package.json"), "utf8")).version;

// The 1.2-era builds read window.WebSocket / window.XMLHttpRequest.
if (typeof globalThis.window === "undefined") globalThis.window = { WebSocket };
if (transport === "longpoll") installXMLHttpRequest(globalThis.window);

function load() {
  const mod = require(PACKAGE[client]);
  if (transport === "longpoll" && !mod.LongPoll) fail(`${client} ${version} has no LongPoll transport`);
  return mod;
}
const mod = load();

// A presence view over the client's own Presence helper: list() → sorted keys.
function presenceView(channel) {
  if (typeof mod.Presence === "function") {
    const p = new mod.Presence(channel); // phoenix >= 1.3
    return () => p.list((key) => key).sort();
  }
  let state = {}; // 1.2 era: static syncState/syncDiff
  channel.on("presence_state", (s) => { state = mod.Presence.syncState(state, s); });
  channel.on("presence_diff", (d) => { state = mod.Presence.syncDiff(state, d); });
  return () => mod.Presence.list(state, (key) => key).sort();
}

// Where the script is, and the client's own log: a hang names its step and what the client saw.
let stage = "start";
const clientLog = [];
const logger = (kind, msg, data) => clientLog.push(`${kind}: ${msg} ${data === undefined ? "" : JSON.stringify(data)}`.slice(0, 300));
const tail = (lines, n) => lines.slice(-n).join("\n  ");
setTimeout(() => fail(`stuck at: ${stage}\nclient log (last 10):\n  ${tail(clientLog, 10)}` +
  (xhrLog.length ? `\nlong-poll HTTP (last 4):\n  ${tail(xhrLog, 4)}` : "")),
  OVERALL_TIMEOUT_MS - 500).unref();

async function member(url, user, topic) {
  const opts = { params: { user }, timeout: STEP_TIMEOUT_MS, reconnectAfterMs: () => 1000, logger };
  if (transport === "longpoll") opts.transport = mod.LongPoll;
  else if (client !== "phoenix-channels") opts.transport = tracingTransport(user); // it brings its own
  const socket = new mod.Socket(url, opts);
  const stats = { opens: 0, errors: 0, closes: 0 };
  socket.onOpen(() => stats.opens++);
  socket.onError(() => stats.errors++);
  socket.onClose(() => stats.closes++);
  stage = `${user}: socket open`;
  socket.connect();
  await waitUntil(() => stats.opens > 0 || stats.errors > 0 || stats.closes > 0, `${user}: socket open`);
  check(stats.opens === 1, `${user}: socket did not open (${JSON.stringify(stats)})`);
  const channel = socket.channel(topic, { user });
  const msgs = [];
  channel.on("new:msg", (p) => msgs.push(p));
  const presence = presenceView(channel);
  stage = `${user}: join ${topic}`;
  const joined = await replyOf(channel.join(), `${user} join`);
  check(joined.status === "ok", `${user} join: ${JSON.stringify(joined)}`);
  return { socket, channel, msgs, presence, stats, node: joined.response.node };
}

run(async () => {
  const topic = `rooms:c${randomSuffix()}`;
  const alice = await member(url1, "alice", topic);
  const bob = await member(url2, "bob", topic);
  stage = "presence";
  for (const [who, m] of [["alice", alice], ["bob", bob]]) {
    await waitUntil(() => m.presence().join(",") === "alice,bob", `${who} sees alice,bob in presence (has ${m.presence()})`);
  }
  stage = "push and receive new:msg";
  const a = await replyOf(alice.channel.push("new:msg", { body: "from alice" }), "alice push");
  const b = await replyOf(bob.channel.push("new:msg", { body: "from bob" }), "bob push");
  check(a.status === "ok" && b.status === "ok", `pushes: ${JSON.stringify([a, b])}`);
  for (const [who, m] of [["alice", alice], ["bob", bob]]) {
    for (const body of ["from alice", "from bob"]) {
      await waitUntil(() => m.msgs.some((p) => p.body === body), `${who} gets ${JSON.stringify(body)}`);
    }
  }
  check(alice.msgs.length === 2 && bob.msgs.length === 2,
    `exactly 2 messages each: ${JSON.stringify({ alice: alice.msgs, bob: bob.msgs })}`);
  check(alice.stats.opens === 1 && bob.stats.opens === 1, "no reconnect happened");
  const origins = bob.msgs.map((p) => p.node).sort();
  alice.socket.disconnect();
  bob.socket.disconnect();
  return { client, transport, version, nodes: [alice.node, bob.node], origins, presence: alice.presence() };
});
