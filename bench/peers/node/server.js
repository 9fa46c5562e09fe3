// Peer: Node socket.io + @socket.io/redis-adapter (node-redis client).
//
// The fanout workload of `roost bench peers`: clients connect over Engine.IO 4
// (WebSocket transport), emit "join" with the room name (acknowledged), and
// GET /fire?count=N emits N "new:msg" chat messages to the room, yielding to the
// event loop between emits (as roost's bench channel does); GET /fire?rate=R&duration=D
// emits stamped ones at a fixed rate (as bench/peers/paced.py does). The Redis adapter
// publishes every emit for the other nodes and delivers locally at once. Ping
// interval raised so that no ping crosses a measurement (not a speed setting).
//
// Run: node server.js PORT REDIS_URL   (after `npm ci` in this folder)
"use strict";

const http = require("http");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { createClient } = require("redis");

// Wall clock in µs for the stamps. performance.timeOrigin can be milliseconds off the
// system clock, so the base is taken where Date.now() ticks over to its next
// millisecond, and the monotonic clock counts from there.
function wallClockUs() {
  const start = Date.now();
  let edge = start;
  while (edge === start) edge = Date.now(); // at most 1 ms, once
  const base = BigInt(edge) * 1000n - process.hrtime.bigint() / 1000n;
  return () => Number(base + process.hrtime.bigint() / 1000n);
}
const nowUs = wallClockUs();

const ROOM = "bench";
const PAYLOAD = { user: "al", body: "hello world, from roost", id: "018c2a" };

async function main() {
  const port = Number(process.argv[2]);
  const url = process.argv[3];
  const pub = createClient({ url });
  const sub = pub.duplicate();
  await Promise.all([pub.connect(), sub.connect()]);

  const server = http.createServer();
  const io = new Server(server, {
    adapter: createAdapter(pub, sub),
    serveClient: false,
    pingInterval: 600000,
    pingTimeout: 600000,
    perMessageDeflate: false,
  });
  io.on("connection", (socket) => {
    socket.on("join", (room, ack) => {
      socket.join(room);
      if (typeof ack === "function") ack("ok");
    });
  });

  const tick = () => new Promise((resolve) => setImmediate(resolve));
  server.on("request", async (req, res) => {
    const u = new URL(req.url, "http://127.0.0.1");
    if (u.pathname.startsWith("/socket.io/")) return; // socket.io answers these
    if (u.pathname === "/healthz") {
      res.end("ok");
    } else if (u.pathname === "/fire" && u.searchParams.has("rate")) {
      // Paced and stamped, as paced.py does for the Python peers.
      const rate = Number(u.searchParams.get("rate"));
      const total = Math.round(rate * Number(u.searchParams.get("duration") || "1"));
      const t0 = performance.now();
      let sent = 0;
      while (sent < total) {
        const due = Math.min(total, Math.floor(((performance.now() - t0) / 1000) * rate) + 1) - sent;
        for (let i = 0; i < due; i++) {
          const ts = nowUs();
          io.to(ROOM).emit("new:msg", { ts, user: "bench", body: "hello world, from roost" });
        }
        sent += Math.max(due, 0);
        await new Promise((resolve) => setTimeout(resolve, 1));
      }
      res.end(String((performance.now() - t0) / 1000));
    } else if (u.pathname === "/fire") {
      const count = Number(u.searchParams.get("count") || "1");
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < count; i++) {
        io.to(ROOM).emit("new:msg", PAYLOAD);
        await tick();
      }
      res.end(String(Number(process.hrtime.bigint() - t0) / 1e9));
    } else {
      res.statusCode = 404;
      res.end("not found");
    }
  });
  server.listen(port, "127.0.0.1", 4096);
  const stop = () => {
    io.close();
    Promise.allSettled([pub.quit(), sub.quit()]).then(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
