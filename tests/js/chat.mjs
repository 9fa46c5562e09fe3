// Chat flow against roost with the official phoenix client.
//   node chat.mjs ws://127.0.0.1:PORT/socket [1.8|1.2]
import {
  parseArgs, loadPhoenix, run, check, waitUntil, replyOf, openSocket, recordEvents,
  randomSuffix, inboundFrames, sleep,
} from "./lib.mjs";

const { url, client } = parseArgs();
const { Socket, version, vsn } = loadPhoenix(client);

run(async () => {
  const room = `js${client.replace(".", "")}_${randomSuffix()}`;
  const topic = `rooms:${room}`;
  const result = { client, version, vsn, topic };

  // --- alice connects and joins
  const alice = await openSocket(Socket, url, "alice", { user: "alice" });
  const aChan = alice.socket.channel(topic, { user: "alice" });
  const aSeen = recordEvents(aChan, ["user:entered", "new:msg"]);
  let aClosed = 0;
  aChan.onClose(() => aClosed++);

  const aJoin = await replyOf(aChan.join(), "alice join");
  check(aJoin.status === "ok", `alice join: expected ok, got ${JSON.stringify(aJoin)}`);
  const jr = aJoin.response;
  check(jr && typeof jr === "object", `alice join: response is not an object: ${JSON.stringify(jr)}`);
  check(typeof jr.node === "string" && jr.node.length > 0, `alice join: response.node missing: ${JSON.stringify(jr)}`);
  check(Array.isArray(jr.history), `alice join: response.history is not a list: ${JSON.stringify(jr)}`);
  check(jr.history.length === 0, `alice join: fresh room should have empty history: ${JSON.stringify(jr)}`);
  result.node = jr.node;
  result.join_response = jr;

  await waitUntil(() => aSeen["user:entered"].some((p) => p && p.user === "alice"), "alice: user:entered {user: alice}");

  // --- bob connects and joins the same room
  const bob = await openSocket(Socket, url, "bob", { user: "bob" });
  const bChan = bob.socket.channel(topic, { user: "bob" });
  const bSeen = recordEvents(bChan, ["user:entered", "new:msg"]);
  const bJoin = await replyOf(bChan.join(), "bob join");
  check(bJoin.status === "ok", `bob join: expected ok, got ${JSON.stringify(bJoin)}`);
  check(typeof bJoin.response.node === "string" && bJoin.response.node.length > 0,
    `bob join: response.node missing: ${JSON.stringify(bJoin.response)}`);
  await waitUntil(() => aSeen["user:entered"].some((p) => p && p.user === "bob"), "alice: user:entered {user: bob}");
  await waitUntil(() => bSeen["user:entered"].some((p) => p && p.user === "bob"), "bob: user:entered {user: bob}");

  // --- alice sends a message
  const sent = await replyOf(aChan.push("new:msg", { body: "hello" }), "alice push new:msg");
  check(sent.status === "ok", `new:msg: expected ok reply, got ${JSON.stringify(sent)}`);
  check(sent.response && sent.response.id !== undefined && sent.response.id !== null && sent.response.id !== "",
    `new:msg: reply has no id: ${JSON.stringify(sent.response)}`);
  const id = sent.response.id;
  result.msg_id = id;

  const isHello = (p) => p && p.body === "hello" && p.user === "alice";
  const aMsg = await waitUntil(() => aSeen["new:msg"].find(isHello), "alice: broadcast new:msg hello from alice");
  const bMsg = await waitUntil(() => bSeen["new:msg"].find(isHello), "bob: broadcast new:msg hello from alice");
  for (const [who, m] of [["alice", aMsg], ["bob", bMsg]]) {
    check(String(m.id) === String(id), `${who}: broadcast id ${JSON.stringify(m.id)} != reply id ${JSON.stringify(id)}`);
    for (const k of ["id", "user", "body", "at", "node"]) {
      check(m[k] !== undefined && m[k] !== null, `${who}: broadcast new:msg lacks ${k}: ${JSON.stringify(m)}`);
    }
  }
  result.broadcast = aMsg;
  result.bob_received = bMsg;

  // --- bob answers, alice gets it
  const bSent = await replyOf(bChan.push("new:msg", { body: "hi alice" }), "bob push new:msg");
  check(bSent.status === "ok", `bob new:msg: expected ok, got ${JSON.stringify(bSent)}`);
  await waitUntil(() => aSeen["new:msg"].find((p) => p && p.body === "hi alice" && p.user === "bob"),
    "alice: broadcast new:msg from bob");

  // --- message validation
  const empty = await replyOf(aChan.push("new:msg", { body: "" }), "empty body push");
  check(empty.status === "error" && empty.response && empty.response.reason === "empty body",
    `empty body: expected error {reason: "empty body"}, got ${JSON.stringify(empty)}`);
  const long = await replyOf(aChan.push("new:msg", { body: "x".repeat(2001) }), "long body push");
  check(long.status === "error" && long.response && long.response.reason === "body too long",
    `2001-char body: expected error {reason: "body too long"}, got ${JSON.stringify(long)}`);
  const max = await replyOf(aChan.push("new:msg", { body: "y".repeat(2000) }), "2000-char body push");
  check(max.status === "ok", `2000-char body: expected ok, got ${JSON.stringify(max)}`);
  result.validation = { empty: empty.response, too_long: long.response };

  // --- join errors
  const nope = alice.socket.channel("nope:1", {});
  const nopeJoin = await replyOf(nope.join(), "join nope:1");
  check(nopeJoin.status === "error" && nopeJoin.response && nopeJoin.response.reason === "unmatched topic",
    `join nope:1: expected error {reason: "unmatched topic"}, got ${JSON.stringify(nopeJoin)}`);
  nope.leave(); // stop phoenix.js from retrying the join
  const bad = alice.socket.channel("rooms:bad room!", { user: "alice" });
  const badJoin = await replyOf(bad.join(), "join rooms:bad room!");
  check(badJoin.status === "error" && badJoin.response && badJoin.response.reason === "invalid room",
    `join "rooms:bad room!": expected error {reason: "invalid room"}, got ${JSON.stringify(badJoin)}`);
  bad.leave();
  result.join_errors = { unmatched: nopeJoin.response, invalid_room: badJoin.response };

  // --- alice leaves
  const left = await replyOf(aChan.leave(), "alice leave");
  check(left.status === "ok", `leave: expected ok, got ${JSON.stringify(left)}`);
  await waitUntil(() => aClosed > 0, "alice: channel onClose after leave");
  // the server must also send phx_close for the left topic (after the ok reply)
  const closeFrame = await waitUntil(
    () => inboundFrames("alice").find((m) => m.topic === topic && m.event === "phx_close"),
    `alice: phx_close frame for ${topic}`, 2000);
  result.phx_close = closeFrame;
  result.channel_close_count = aClosed;

  // after leaving, alice no longer receives room traffic
  const before = inboundFrames("alice").filter((m) => m.topic === topic && m.event === "new:msg").length;
  const after1 = await replyOf(bChan.push("new:msg", { body: "after leave" }), "bob push after alice left");
  check(after1.status === "ok", `bob push after leave: expected ok, got ${JSON.stringify(after1)}`);
  await waitUntil(() => bSeen["new:msg"].find((p) => p && p.body === "after leave"), "bob: own broadcast after alice left");
  await sleep(200);
  const after = inboundFrames("alice").filter((m) => m.topic === topic && m.event === "new:msg").length;
  check(after === before, `alice still receives ${topic} broadcasts after leaving (${after - before} new:msg frames)`);

  // the sockets themselves stayed up the whole time
  for (const [who, s] of [["alice", alice], ["bob", bob]]) {
    check(s.stats.opens === 1 && s.stats.closes === 0 && s.stats.errors === 0,
      `${who}: socket dropped during the test: ${JSON.stringify(s.stats)}`);
  }
  alice.socket.disconnect();
  bob.socket.disconnect();
  return result;
});
