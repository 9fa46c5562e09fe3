// phoenix.js with transport LongPoll, every HTTP request alternating between two nodes
// (a round-robin balancer with no stickiness), chatting with a WebSocket user.
//   node longpoll.mjs ws://127.0.0.1:P1/socket ws://127.0.0.1:P2/socket [ws://127.0.0.1:DEAD/socket]
// With the third URL (a port nothing listens on) it also checks longPollFallbackMs.
import { createRequire } from "node:module";
import WebSocket from "ws";
import { loadPhoenix, run, check, waitUntil, replyOf, openSocket, randomSuffix, fail } from "./lib.mjs";

const url1 = process.argv[2];
const url2 = process.argv[3];
if (!url1 || !url2) fail("usage: node longpoll.mjs <url node 1> <url node 2>");
const { Socket } = loadPhoenix("1.8");
const { LongPoll } = createRequire(import.meta.url)("phoenix");

const hosts = [new URL(url1).host, new URL(url2).host];
const perHost = { [hosts[0]]: 0, [hosts[1]]: 0 };
let turn = 0;
const realFetch = globalThis.fetch;
globalThis.fetch = (input, options) => {
  const url = new URL(String(input));
  url.host = hosts[turn++ % 2];
  perHost[url.host]++;
  return realFetch(url.toString(), options);
};

run(async () => {
  const topic = `rooms:lp${randomSuffix()}`;
  const lp = new Socket(url1, { transport: LongPoll, params: { user: "polly" }, timeout: 5000 });
  let opened = 0;
  lp.onOpen(() => opened++);
  lp.connect();
  await waitUntil(() => opened > 0, "long-poll socket open");
  const lpChan = lp.channel(topic, { user: "polly" });
  const lpSeen = [];
  lpChan.on("new:msg", (p) => lpSeen.push(p));
  const lpJoin = await replyOf(lpChan.join(), "long-poll join");
  check(lpJoin.status === "ok", `long-poll join: ${JSON.stringify(lpJoin)}`);

  const ws = await openSocket(Socket, url2, "wendy", { user: "wendy" });
  const wsChan = ws.socket.channel(topic, { user: "wendy" });
  const wsSeen = [];
  wsChan.on("new:msg", (p) => wsSeen.push(p));
  check((await replyOf(wsChan.join(), "ws join")).status === "ok", "ws join");

  for (let i = 0; i < 5; i++) {
    const r = await replyOf(lpChan.push("new:msg", { body: `lp ${i}` }), "long-poll push");
    check(r.status === "ok", `long-poll push: ${JSON.stringify(r)}`);
  }
  const w = await replyOf(wsChan.push("new:msg", { body: "from ws" }), "ws push");
  check(w.status === "ok", "ws push");
  await waitUntil(() => wsSeen.filter((p) => p.user === "polly").length === 5, "ws user gets 5 long-poll messages");
  await waitUntil(() => lpSeen.some((p) => p.body === "from ws"), "long-poll user gets the ws message");
  await waitUntil(() => lpSeen.filter((p) => p.user === "polly").length === 5, "long-poll user gets its own 5");
  const order = wsSeen.filter((p) => p.user === "polly").map((p) => p.body);
  check(JSON.stringify(order) === JSON.stringify([0, 1, 2, 3, 4].map((i) => `lp ${i}`)), `order: ${order}`);
  lp.disconnect();

  // longPollFallbackMs: WebSocket cannot connect (nothing listens on that port), so the client
  // falls back to LongPoll by itself — its requests land on the two nodes like above.
  const deadUrl = process.argv[4];
  let fallbackLog = [];
  if (deadUrl) {
    const store = new Map();
    const sessionStorage = {
      getItem: (k) => (store.has(k) ? store.get(k) : null),
      setItem: (k, v) => store.set(k, String(v)),
      removeItem: (k) => store.delete(k),
    };
    const fb = new Socket(deadUrl, {
      transport: WebSocket, longPollFallbackMs: 300, sessionStorage, params: { user: "fallback" },
      timeout: 5000, logger: (kind, msg) => fallbackLog.push(`${kind}: ${msg}`),
      reconnectAfterMs: () => 100,
    });
    fb.connect();
    const fbChan = fb.channel(topic, { user: "fallback" });
    const fbJoin = await replyOf(fbChan.join(), "fallback join");
    check(fbJoin.status === "ok", `fallback join: ${JSON.stringify(fbJoin)}`);
    check(fb.transport === LongPoll, "the fallback socket should be on LongPoll");
    const r = await replyOf(fbChan.push("new:msg", { body: "via fallback" }), "fallback push");
    check(r.status === "ok", `fallback push: ${JSON.stringify(r)}`);
    await waitUntil(() => wsSeen.some((p) => p.body === "via fallback"), "ws user gets the fallback message");
    fb.disconnect();
    fallbackLog = fallbackLog.filter((l) => l.startsWith("transport")).slice(0, 5);
  }
  ws.socket.disconnect();
  return { perHost, lpJoinNode: lpJoin.response.node, received: lpSeen.length, fallbackLog };
});
