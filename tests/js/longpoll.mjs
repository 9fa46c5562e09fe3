// phoenix.js with transport LongPoll, every HTTP request alternating between two nodes
// (a round-robin balancer with no stickiness), chatting with a WebSocket user.
//   node longpoll.mjs ws://127.0.0.1:P1/socket ws://127.0.0.1:P2/socket
import { createRequire } from "node:module";
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
  ws.socket.disconnect();
  return { perHost, lpJoinNode: lpJoin.response.node, received: lpSeen.length };
});
