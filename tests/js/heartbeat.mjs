// Heartbeat survival: heartbeatIntervalMs 500 for ~3 s; the socket must stay up
// (phoenix 1.8 closes with "heartbeat timeout" if a reply is late) and keep working.
//   node heartbeat.mjs ws://127.0.0.1:PORT/socket [1.8|1.2]
import {
  parseArgs, loadPhoenix, run, check, replyOf, openSocket, recordEvents, randomSuffix, sleep, waitUntil,
} from "./lib.mjs";

const { url, client } = parseArgs();
const { Socket, version, vsn } = loadPhoenix(client);
const INTERVAL_MS = 500;
const DURATION_MS = Number(process.env.ROOST_HB_DURATION_MS || 3000);

run(async () => {
  const topic = `rooms:hb${client.replace(".", "")}_${randomSuffix()}`;
  const { socket, stats } = await openSocket(Socket, url, "hb", { user: "carol" }, { heartbeatIntervalMs: INTERVAL_MS });

  let heartbeatReplies = 0;
  let heartbeatErrors = 0;
  socket.onMessage((msg) => {
    if (msg.topic === "phoenix" && msg.event === "phx_reply") {
      if (msg.payload && msg.payload.status === "ok") heartbeatReplies++;
      else heartbeatErrors++;
    }
  });

  const chan = socket.channel(topic, { user: "carol" });
  const seen = recordEvents(chan, ["new:msg"]);
  let chanErrors = 0;
  let chanCloses = 0;
  chan.onError(() => chanErrors++);
  chan.onClose(() => chanCloses++);
  const join = await replyOf(chan.join(), "join");
  check(join.status === "ok", `join ${topic}: expected ok, got ${JSON.stringify(join)}`);

  const started = Date.now();
  await sleep(DURATION_MS);
  const elapsed = Date.now() - started;

  check(stats.closes === 0 && stats.errors === 0 && stats.opens === 1,
    `socket did not survive ${DURATION_MS} ms with ${INTERVAL_MS} ms heartbeats: ${JSON.stringify(stats)}`);
  check(socket.isConnected(), "socket not connected at the end");
  check(chanErrors === 0 && chanCloses === 0, `channel errored/closed meanwhile (errors=${chanErrors} closes=${chanCloses})`);
  check(heartbeatErrors === 0, `${heartbeatErrors} heartbeat replies were not ok`);
  // 1.8 sends the next heartbeat INTERVAL after each reply; 1.2 uses setInterval.
  const minReplies = Math.floor(DURATION_MS / INTERVAL_MS / 2);
  check(heartbeatReplies >= minReplies,
    `only ${heartbeatReplies} heartbeat replies in ${elapsed} ms (expected >= ${minReplies})`);

  // the channel still works after the heartbeats
  const sent = await replyOf(chan.push("new:msg", { body: "still here" }), "push after heartbeats");
  check(sent.status === "ok", `push after heartbeats: expected ok, got ${JSON.stringify(sent)}`);
  await waitUntil(() => seen["new:msg"].find((p) => p && p.body === "still here"), "broadcast after heartbeats");

  socket.disconnect();
  return { client, version, vsn, heartbeat_interval_ms: INTERVAL_MS, elapsed_ms: elapsed, heartbeat_replies: heartbeatReplies, ...stats };
});
