// @supabase/realtime-js: alice on node 1, bob on node 2 (the same URL twice tests one node)
// subscribe to the channel "c<random>" (topic realtime:c<random>) with Supabase's join config
// (broadcast {self, ack}, presence {key}), track presence and see each other, send a
// broadcast each (acknowledged), and both receive both.
//   node compat-supabase.mjs <url node 1> <url node 2>
// Prints one JSON line and exits 0; on failure exits 1 with the reason and a frame trace.
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { run, check, waitUntil, randomSuffix, fail, tracingTransport, OVERALL_TIMEOUT_MS, STEP_TIMEOUT_MS } from "./lib.mjs";

const require = createRequire(import.meta.url);
const HERE = dirname(fileURLToPath(import.meta.url));
const [url1, url2] = process.argv.slice(2);
if (!url1 || !url2) fail("usage: node compat-supabase.mjs <url node 1> <url node 2>");
const { RealtimeClient } = require("@supabase/realtime-js");
const version = JSON.parse(readFileSync(join(HERE, "node_modules/@supabase/realtime-js/package.json"), "utf8")).version;

let stage = "start";
const clientLog = [];
const logger = (kind, msg, data) => clientLog.push(`${kind}: ${msg} ${data === undefined ? "" : JSON.stringify(data)}`.slice(0, 300));
setTimeout(() => fail(`stuck at: ${stage}\nclient log (last 15):\n  ${clientLog.slice(-15).join("\n  ")}`),
  OVERALL_TIMEOUT_MS - 500).unref();

async function member(url, user, name) {
  const client = new RealtimeClient(url, {
    params: { apikey: "roost-compat", user },
    transport: tracingTransport(user),
    timeout: STEP_TIMEOUT_MS,
    reconnectAfterMs: () => 1000,
    logger,
  });
  const channel = client.channel(name, {
    config: { broadcast: { self: true, ack: true }, presence: { key: user } },
  });
  const msgs = [];
  channel.on("broadcast", { event: "msg" }, (m) => msgs.push(m.payload));
  channel.on("presence", { event: "sync" }, () => {});
  stage = `${user}: subscribe ${channel.topic}`;
  const statuses = [];
  channel.subscribe((status, err) => statuses.push(err ? `${status}: ${err.message || err}` : status));
  await waitUntil(() => statuses.length > 0, `${user}: subscribe status`);
  check(statuses[0] === "SUBSCRIBED", `${user}: subscribe: ${statuses.join(", ")}`);
  stage = `${user}: track`;
  const tracked = await channel.track({ user, online_at: Date.now() });
  check(tracked === "ok", `${user}: track answered ${JSON.stringify(tracked)}`);
  const presence = () => Object.keys(channel.presenceState()).sort();
  return { client, channel, msgs, presence, statuses };
}

run(async () => {
  const name = `c${randomSuffix()}`;
  const alice = await member(url1, "alice", name);
  const bob = await member(url2, "bob", name);
  check(alice.channel.topic === `realtime:${name}`, `topic ${alice.channel.topic}`);
  stage = "presence";
  for (const [who, m] of [["alice", alice], ["bob", bob]]) {
    await waitUntil(() => m.presence().join(",") === "alice,bob", `${who} sees alice,bob in presence (has ${m.presence()})`);
  }
  stage = "broadcast";
  const a = await alice.channel.send({ type: "broadcast", event: "msg", payload: { body: "from alice" } });
  const b = await bob.channel.send({ type: "broadcast", event: "msg", payload: { body: "from bob" } });
  check(a === "ok" && b === "ok", `broadcast acks: ${JSON.stringify([a, b])}`);
  for (const [who, m] of [["alice", alice], ["bob", bob]]) {
    for (const body of ["from alice", "from bob"]) {
      await waitUntil(() => m.msgs.some((p) => p.body === body), `${who} gets ${JSON.stringify(body)} (self: true)`);
    }
  }
  check(alice.msgs.length === 2 && bob.msgs.length === 2, `exactly 2 each: ${JSON.stringify([alice.msgs, bob.msgs])}`);
  const presence = alice.presence();
  await alice.client.removeAllChannels();
  await bob.client.removeAllChannels();
  alice.client.disconnect();
  bob.client.disconnect();
  return { client: "@supabase/realtime-js", version, topic: alice.channel.topic, presence };
});
