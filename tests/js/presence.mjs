// phoenix.js Presence on two roost nodes shows the same users.
//   node presence.mjs ws://127.0.0.1:P1/socket ws://127.0.0.1:P2/socket
import { loadPhoenix, run, check, waitUntil, replyOf, openSocket, randomSuffix, fail } from "./lib.mjs";
import { createRequire } from "node:module";

const url1 = process.argv[2];
const url2 = process.argv[3];
if (!url1 || !url2) fail("usage: node presence.mjs <url node 1> <url node 2>");
const { Socket } = loadPhoenix("1.8");
const { Presence } = createRequire(import.meta.url)("phoenix");

async function member(url, label, topic, user) {
  const { socket } = await openSocket(Socket, url, label, { user });
  const channel = socket.channel(topic, { user });
  const presence = new Presence(channel);
  const joined = await replyOf(channel.join(), `${label} join`);
  check(joined.status === "ok", `${label} join: ${JSON.stringify(joined)}`);
  const list = () =>
    presence.list((key, { metas }) => ({ key, metas: metas.length, nodes: metas.map((m) => m.node).sort() }))
      .sort((a, b) => a.key.localeCompare(b.key));
  return { socket, channel, presence, list };
}

const keys = (list) => list.map((e) => e.key).join(",");

run(async () => {
  const topic = `rooms:p${randomSuffix()}`;
  const alice = await member(url1, "alice", topic, "alice");
  const bob = await member(url2, "bob", topic, "bob");
  await waitUntil(() => keys(alice.list()) === "alice,bob", "alice sees alice,bob");
  await waitUntil(() => keys(bob.list()) === "alice,bob", "bob sees alice,bob");

  // carol in two tabs, one on each node: one key, two metas.
  const carol1 = await member(url1, "carol1", topic, "carol");
  const carol2 = await member(url2, "carol2", topic, "carol");
  const carolOk = (l) => keys(l) === "alice,bob,carol" && l.find((e) => e.key === "carol").metas === 2;
  await waitUntil(() => carolOk(alice.list()), "alice sees carol with 2 metas");
  await waitUntil(() => carolOk(bob.list()), "bob sees carol with 2 metas");
  const both = { alice: alice.list(), bob: bob.list() };
  check(JSON.stringify(both.alice) === JSON.stringify(both.bob), `lists differ: ${JSON.stringify(both)}`);

  // bob leaves: gone on both nodes; one carol tab closes: carol stays with one meta.
  await replyOf(bob.channel.leave(), "bob leave");
  carol2.socket.disconnect();
  const after = (l) => keys(l) === "alice,carol" && l.find((e) => e.key === "carol").metas === 1;
  await waitUntil(() => after(alice.list()), "alice: bob gone, carol with 1 meta");
  await waitUntil(() => after(carol1.list()), "carol1: bob gone, carol with 1 meta");
  const final = { alice: alice.list(), carol1: carol1.list() };
  check(JSON.stringify(final.alice) === JSON.stringify(final.carol1), `lists differ: ${JSON.stringify(final)}`);
  for (const m of [alice, bob, carol1]) m.socket.disconnect();
  return { topic, both, final };
});
