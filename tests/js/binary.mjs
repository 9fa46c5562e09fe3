// Binary push/reply with phoenix 1.8 (V2 binary frames) on an echo:* topic.
//   node binary.mjs ws://127.0.0.1:PORT/socket [1.8]
import {
  parseArgs, loadPhoenix, run, check, replyOf, openSocket, randomSuffix, trace, waitUntil,
} from "./lib.mjs";

const { url, client } = parseArgs();
if (client !== "1.8") {
  process.stderr.write("binary.mjs: only phoenix 1.8 supports binary payloads\n");
  process.exit(2);
}
const { Socket, version, vsn } = loadPhoenix(client);

function bytesOf(len, seed) {
  const a = new Uint8Array(len);
  for (let i = 0; i < len; i++) a[i] = (i * 31 + seed) & 0xff;
  return a;
}

function sameBytes(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function hex(u8, max = 32) {
  const h = Buffer.from(u8.subarray(0, max)).toString("hex");
  return u8.length > max ? `${h}... (${u8.length} bytes)` : h;
}

run(async () => {
  const topic = `echo:js_${randomSuffix()}`;
  const { socket, stats } = await openSocket(Socket, url, "bin", { user: "dave" });
  const chan = socket.channel(topic, {});
  const join = await replyOf(chan.join(), `join ${topic}`);
  check(join.status === "ok", `join ${topic}: expected ok, got ${JSON.stringify(join)}`);

  const result = { client, version, vsn, topic, binary: [] };

  // bytes that are not valid UTF-8 (0xff, 0xc0, lone continuation bytes), a NUL, and
  // sizes across the WebSocket 7-bit / 16-bit length boundaries, staying under
  // roost's default 64 KiB inbound frame limit.
  const cases = [
    ["non-utf8", Uint8Array.from([0x00, 0xff, 0xfe, 0xc0, 0x80, 0x41, 0x42, 0x00, 0x7f])],
    ["one byte", Uint8Array.from([0x2a])],
    ["1000 bytes", bytesOf(1000, 7)],
    ["60000 bytes", bytesOf(60000, 3)],
  ];
  for (const [name, data] of cases) {
    const outBefore = trace.filter((f) => f.dir === "out").length;
    const reply = await replyOf(chan.push("bin", data.slice().buffer), `bin push (${name})`);
    const sentFrame = trace.filter((f) => f.dir === "out")[outBefore];
    check(sentFrame && sentFrame.data.startsWith("<binary"),
      `bin push (${name}): phoenix.js did not send a binary frame: ${sentFrame && sentFrame.data.slice(0, 200)}`);
    check(reply.status === "ok", `bin push (${name}): expected ok, got status ${reply.status} ${JSON.stringify(reply.response)}`);
    check(reply.response instanceof ArrayBuffer,
      `bin push (${name}): reply response is not an ArrayBuffer (server replied with a text frame?): ` +
      `${JSON.stringify(reply.response)}`);
    const got = new Uint8Array(reply.response);
    const want = data.slice().reverse();
    check(sameBytes(got, want), `bin push (${name}): reply bytes ${hex(got)} != reversed input ${hex(want)}`);
    result.binary.push({ name, bytes: data.length });
  }

  // JSON echo on the same channel
  const payload = { a: 1, s: "h\u00e9llo \u2603 \ud83d\udc26", n: [1, 2.5, null, true], o: { k: "v" } };
  const echo = await replyOf(chan.push("echo", payload), "echo push");
  check(echo.status === "ok", `echo: expected ok, got ${JSON.stringify(echo)}`);
  check(JSON.stringify(echo.response) === JSON.stringify(payload),
    `echo: response ${JSON.stringify(echo.response)} != payload ${JSON.stringify(payload)}`);
  result.echo = echo.response;

  check(stats.opens === 1 && stats.closes === 0 && stats.errors === 0, `socket dropped: ${JSON.stringify(stats)}`);

  // A frame over the server's inbound limit (ROOST_MAX_FRAME, default 64 KiB) closes the
  // socket with 1009; phoenix.js then reconnects and rejoins the channel by itself.
  const limit = Number(process.env.ROOST_MAX_FRAME || 64 * 1024);
  const oversize = limit + 4096;
  const joinRefBefore = chan.joinRef();
  chan.push("bin", bytesOf(oversize, 5).buffer); // no reply expected: the socket is closed
  await waitUntil(() => stats.closes > 0, `close after a ${oversize}-byte frame`);
  check(stats.closeEvents[0] && stats.closeEvents[0].code === 1009,
    `oversized frame: expected close code 1009, got ${JSON.stringify(stats.closeEvents)}`);
  await waitUntil(() => stats.opens >= 2, "phoenix.js reconnect after the 1009 close");
  await waitUntil(() => chan.isJoined() && chan.joinRef() !== joinRefBefore,
    `phoenix.js rejoin of ${topic} after reconnect`);
  const after = await replyOf(chan.push("bin", Uint8Array.from([1, 2, 3]).buffer), "bin push after reconnect");
  check(after.status === "ok" && after.response instanceof ArrayBuffer &&
    sameBytes(new Uint8Array(after.response), Uint8Array.from([3, 2, 1])),
    `bin push after reconnect: expected ok [3,2,1], got ${after.status} ${JSON.stringify(after.response)}`);
  result.oversize = { bytes: oversize, close_code: stats.closeEvents[0].code, reconnected: true };

  socket.disconnect();
  return result;
});
