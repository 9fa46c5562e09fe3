// Two official phoenix clients on two roost nodes sharing one Redis exchange messages.
//   node crossnode.mjs ws://127.0.0.1:P1/socket ws://127.0.0.1:P2/socket [1.8|1.2]
import { loadPhoenix, run, check, waitUntil, replyOf, openSocket, recordEvents, randomSuffix, fail } from "./lib.mjs";

const url1 = process.argv[2];
const url2 = process.argv[3];
const client = process.argv[4] || "1.8";
if (!url1 || !url2) fail("usage: node crossnode.mjs <url node 1> <url node 2> [1.8|1.2]");
const { Socket, version } = loadPhoenix(client);

run(async () => {
  const topic = `rooms:x${randomSuffix()}`;
  const alice = await openSocket(Socket, url1, "alice", { user: "alice" });
  const bob = await openSocket(Socket, url2, "bob", { user: "bob" });
  const aChan = alice.socket.channel(topic, { user: "alice" });
  const bChan = bob.socket.channel(topic, { user: "bob" });
  const aSeen = recordEvents(aChan, ["new:msg", "user:entered"]);
  const bSeen = recordEvents(bChan, ["new:msg", "user:entered"]);
  const aJoin = await replyOf(aChan.join(), "alice join");
  const bJoin = await replyOf(bChan.join(), "bob join");
  check(aJoin.status === "ok" && bJoin.status === "ok", `joins: ${JSON.stringify([aJoin, bJoin])}`);
  check(aJoin.response.node !== bJoin.response.node,
    `alice and bob should be served by different nodes: ${aJoin.response.node} ${bJoin.response.node}`);
  await waitUntil(() => aSeen["user:entered"].some((p) => p.user === "bob"), "alice sees bob enter (node 2 → node 1)");

  const a = await replyOf(aChan.push("new:msg", { body: "from alice on node 1" }), "alice push");
  const b = await replyOf(bChan.push("new:msg", { body: "from bob on node 2" }), "bob push");
  check(a.status === "ok" && b.status === "ok", `pushes: ${JSON.stringify([a, b])}`);
  for (const [who, seen] of [["alice", aSeen], ["bob", bSeen]]) {
    await waitUntil(() => seen["new:msg"].some((p) => p.body === "from alice on node 1"), `${who} gets alice's message`);
    await waitUntil(() => seen["new:msg"].some((p) => p.body === "from bob on node 2"), `${who} gets bob's message`);
  }
  const nodes = bSeen["new:msg"].map((p) => p.node);
  check(nodes.length === 2, `bob should get exactly 2 messages, got ${JSON.stringify(bSeen["new:msg"])}`);
  check(aSeen["new:msg"].length === 2, `alice should get exactly 2 messages, got ${JSON.stringify(aSeen["new:msg"])}`);
  alice.socket.disconnect();
  bob.socket.disconnect();
  return { client, version, nodes: [aJoin.response.node, bJoin.response.node], origins: nodes };
});
