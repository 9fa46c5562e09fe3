// phoenix.js 1.2 (protocol V1) over its LongPoll transport, every HTTP request alternating
// between two nodes, chatting with a phoenix.js 1.8 WebSocket user and tracking presence.
//   node longpoll12.mjs ws://127.0.0.1:P1/socket ws://127.0.0.1:P2/socket
// phoenix.js 1.2 polls with XMLHttpRequest, which node lacks: a small XMLHttpRequest on
// top of fetch stands in for it (only what 1.2's Ajax.xhrRequest uses).
import { createRequire } from "node:module";
import { loadPhoenix, run, check, waitUntil, replyOf, openSocket, randomSuffix, fail } from "./lib.mjs";

const url1 = process.argv[2];
const url2 = process.argv[3];
if (!url1 || !url2) fail("usage: node longpoll12.mjs <url node 1> <url node 2>");

const hosts = [new URL(url1).host, new URL(url2).host];
const perHost = { [hosts[0]]: 0, [hosts[1]]: 0 };
const rawMessages = []; // every entry of every poll's "messages", as the server sent it
let turn = 0;

class FetchXHR {
  constructor() {
    this.readyState = 0;
    this.responseText = "";
    this.headers = {};
    this.timeout = 0;
  }
  open(method, url) {
    this.method = method;
    this.url = new URL(url);
    this.url.host = hosts[turn++ % 2]; // a round-robin balancer with no stickiness
    perHost[this.url.host]++;
    this.readyState = 1;
  }
  setRequestHeader(key, value) {
    this.headers[key] = value;
  }
  send(body) {
    const controller = new AbortController();
    let timedOut = false;
    const timer = this.timeout ? setTimeout(() => { timedOut = true; controller.abort(); }, this.timeout) : null;
    fetch(this.url, { method: this.method, headers: this.headers, body: body ?? undefined, signal: controller.signal })
      .then((resp) => resp.text())
      .then((text) => {
        clearTimeout(timer);
        if (this.method === "GET" && text) {
          const parsed = JSON.parse(text);
          if (parsed.messages) rawMessages.push(...parsed.messages);
        }
        this.responseText = text;
        this.readyState = 4;
        this.onreadystatechange && this.onreadystatechange();
      })
      .catch(() => {
        clearTimeout(timer);
        if (timedOut) this.ontimeout && this.ontimeout();
        else this.onerror && this.onerror();
      });
  }
}

run(async () => {
  const { Socket: Socket12, version } = loadPhoenix("1.2");
  globalThis.window.XMLHttpRequest = globalThis.XMLHttpRequest = FetchXHR; // 1.2 tests window.X, calls the global
  const { LongPoll, Presence } = createRequire(import.meta.url)("phoenix12");
  const { Socket: Socket18 } = loadPhoenix("1.8");
  const topic = `rooms:lp12${randomSuffix()}`;

  const lp = new Socket12(url1, { transport: LongPoll, params: { user: "olde" }, timeout: 5000 });
  let opened = 0;
  lp.onOpen(() => opened++);
  lp.connect();
  await waitUntil(() => opened > 0, "1.2 long-poll socket open");
  const lpChan = lp.channel(topic, { user: "olde" });
  const lpSeen = [];
  lpChan.on("new:msg", (p) => lpSeen.push(p));
  let presence = {};
  lpChan.on("presence_state", (state) => { presence = Presence.syncState(presence, state); });
  lpChan.on("presence_diff", (diff) => { presence = Presence.syncDiff(presence, diff); });
  const join = await replyOf(lpChan.join(), "1.2 long-poll join");
  check(join.status === "ok", `1.2 long-poll join: ${JSON.stringify(join)}`);

  const ws = await openSocket(Socket18, url2, "wendy", { user: "wendy" });
  const wsChan = ws.socket.channel(topic, { user: "wendy" });
  const wsSeen = [];
  wsChan.on("new:msg", (p) => wsSeen.push(p));
  check((await replyOf(wsChan.join(), "ws join")).status === "ok", "ws join");

  for (let i = 0; i < 3; i++) {
    const r = await replyOf(lpChan.push("new:msg", { body: `old ${i}` }), "1.2 long-poll push");
    check(r.status === "ok", `1.2 long-poll push: ${JSON.stringify(r)}`);
  }
  check((await replyOf(wsChan.push("new:msg", { body: "from ws" }), "ws push")).status === "ok", "ws push");
  await waitUntil(() => wsSeen.filter((p) => p.user === "olde").length === 3, "ws user gets 3 long-poll messages");
  await waitUntil(() => lpSeen.some((p) => p.body === "from ws"), "1.2 long-poll user gets the ws message");
  await waitUntil(() => Object.keys(presence).includes("wendy"), "1.2 presence sees the ws user");
  const online = Object.keys(presence).sort();
  ws.socket.disconnect();
  await waitUntil(() => !Object.keys(presence).includes("wendy"), "1.2 presence sees the ws user leave");
  lp.disconnect();
  const shapes = [...new Set(rawMessages.map((m) => (typeof m === "string" ? "string" : Object.keys(m).sort().join(","))))];
  const events = [...new Set(rawMessages.map((m) => (typeof m === "string" ? "?" : m.event)))].sort();
  return { version, perHost, joinNode: join.response.node, online, shapes, events };
});
