"""``roost inspect``: print every broadcast that crosses Redis, decoded, one per line.

The article's ``redis_print``, done well. It opens its own subscriber connection
(RESP2), SUBSCRIBEs to the ``global`` channel (``<prefix>:<app>``) and PSUBSCRIBEs
to the per-topic channels (``<prefix>:<app>:t:*``) at once, so it shows the traffic
of nodes in either ``--pubsub-mode``. Every envelope is decoded with the broker's
own codec; bytes that are not an envelope become an error line, never a crash.

Human lines (colours only on a terminal; ``NO_COLOR``/``FORCE_COLOR`` honoured)::

    12:03:04.567  n1  #12  rooms:lobby  new:msg  {"user":"al","body":"hi",...}  +1ms

``--json`` prints one object per line instead: ``ts`` (origin wall clock, epoch ms),
``node``, ``seq``, ``topic``, ``event``, ``payload`` (the JSON value; base64 text when
``binary`` is true), ``binary``, ``exclude``, ``offset`` and ``epoch`` (set when the
broadcast was stored in the topic's history), ``channel``, ``lag_ms`` (now - ts) and
``gap`` (sequence numbers skipped since the previous envelope of that node on that
channel, as seen by this inspector), ``signed`` (carries an HMAC) and ``verified``
(with ``--redis-signing-key``: whether the HMAC holds; else null). Error lines are
``{"ts", "error", "channel", "size", "raw"}``. Status messages (listening,
reconnecting) go to stderr.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fnmatch
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO

import orjson
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import AuthenticationError, RedisError, ResponseError

from .brokers.redis import codec
from .brokers.redis.keys import Keys
from .brokers.redis.sentinel import plain_pool

BACKOFF = (0.5, 1.0, 2.0, 5.0)
PING_EVERY = 5.0  # seconds of silence before the inspector pings Redis
DEAD_AFTER = 15.0  # seconds without any reply before it reconnects
RAW_PREVIEW = 64


@dataclass(frozen=True)
class Options:
    url: str
    keys: Keys = field(default_factory=Keys)
    topic: str | None = None
    event: str | None = None
    json: bool = False
    count: int | None = None
    max_payload: int = 400
    signing_key: bytes | None = None  # verify envelope HMACs (serve --redis-signing-key)
    connection: dict[str, Any] = field(default_factory=dict)  # e.g. ssl_ca_certs
    #: The Phoenix channel ``inspect_phoenix.PhoenixInspector`` reads.
    phoenix_channel: str = "phx:Elixir.Chat.PubSub.Adapter"


class Fatal(Exception):
    """An error retrying cannot fix (bad password, ACL refusal, bad URL)."""


def glob_escape(text: str) -> str:
    """Escape Redis glob specials so a prefix/app name matches only itself."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def clean(text: str) -> str:
    """One line, whatever the string holds (control characters escaped)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def local_time(ms: int) -> str:
    try:
        stamp = datetime.fromtimestamp(ms / 1000)
    except (OverflowError, OSError, ValueError):
        return f"@{ms}"
    return stamp.strftime("%H:%M:%S.") + f"{ms % 1000:03d}"


def now_ms() -> int:
    return int(time.time() * 1000)


class Output:
    """Formats broadcasts and errors, as rich text lines or JSON lines."""

    def __init__(self, opts: Options, file: TextIO | None = None) -> None:
        self.opts = opts
        self.file = file or sys.stdout
        self.console: Any = None
        if not opts.json:
            from rich.console import Console

            self.console = Console(
                file=self.file, highlight=False, markup=False, emoji=False, soft_wrap=True
            )
        self._node_width = 4
        self._topic_width = 12
        self._event_width = 8

    def _write_json(self, obj: dict[str, Any]) -> None:
        self.file.write(orjson.dumps(obj).decode() + "\n")
        self.file.flush()

    def _write_text(self, text: Any) -> None:
        self.console.print(text)
        self.file.flush()

    def broadcast(self, channel: str, wire: codec.Decoded, gap: int, verified: bool | None) -> None:
        env = wire.envelope
        lag = now_ms() - wire.ts_ms
        data, binary = env.payload.data, env.payload.binary
        if self.opts.json:
            obj: dict[str, Any] = {
                "ts": wire.ts_ms,
                "node": env.node,
                "seq": env.seq,
                "topic": env.topic,
                "event": env.event,
                "payload": None,
                "binary": binary,
                "exclude": env.exclude,
                "offset": env.offset,
                "epoch": env.epoch,
                "channel": channel,
                "lag_ms": lag,
                "gap": gap,
                "signed": wire.mac is not None,
                "verified": verified,
            }
            if binary:
                obj["payload"] = base64.b64encode(data).decode()
            else:
                try:
                    obj["payload"] = orjson.loads(data)
                except orjson.JSONDecodeError as exc:
                    obj["payload_error"] = f"payload is not JSON: {exc}"
                    obj["raw"] = _preview(data)
            self._write_json(obj)
            return
        from rich.text import Text

        self._node_width = max(self._node_width, len(env.node))
        self._topic_width = max(self._topic_width, min(len(env.topic), 32))
        self._event_width = max(self._event_width, min(len(env.event), 24))
        line = Text()
        line.append(local_time(wire.ts_ms), "dim")
        line.append("  ")
        line.append(clean(env.node).ljust(self._node_width), "cyan")
        line.append(f"  #{env.seq:<5}", "dim")
        line.append(" ")
        line.append(clean(env.topic).ljust(self._topic_width), "bold")
        line.append("  ")
        line.append(clean(env.event).ljust(self._event_width), "magenta")
        line.append("  ")
        if binary:
            line.append(f"<binary {len(data)} bytes>", "yellow")
        else:
            try:
                text = orjson.dumps(orjson.loads(data)).decode()
            except orjson.JSONDecodeError:
                line.append(f"<invalid JSON {len(data)} bytes: {_preview(data)}>", "yellow")
            else:
                limit = self.opts.max_payload
                if limit and len(text) > limit:
                    text = f"{text[:limit]}…(+{len(text) - limit} chars)"
                line.append(text)
        if env.offset is not None:
            line.append(f"  @{env.offset}", "dim")
        if env.exclude is not None:
            line.append(f"  except={clean(env.exclude)}", "dim")
        line.append(f"  +{lag}ms", "dim")
        if verified is False:
            failure = "UNSIGNED" if wire.mac is None else "BAD SIGNATURE"
            line.append(f"  {failure} (nodes drop it)", "bold red")
        if gap:
            line.append(f"  gap: {gap} missed", "bold yellow")
        self._write_text(line)

    def error(
        self, channel: str, data: bytes, reason: str, wanted: str = "a roost envelope"
    ) -> None:
        if self.opts.json:
            self._write_json(
                {
                    "ts": now_ms(),
                    "error": f"not {wanted}: {reason}",
                    "channel": channel,
                    "size": len(data),
                    "raw": _preview(data),
                }
            )
            return
        from rich.text import Text

        line = Text()
        line.append(local_time(now_ms()), "dim")
        line.append("  ")
        line.append("ERROR", "bold red")
        line.append(f"  {clean(channel)}: not {wanted} ({reason}); ", "red")
        line.append(f"{len(data)} bytes: {_preview(data)}", "red")
        self._write_text(line)


def _preview(data: bytes) -> str:
    text = repr(data[:RAW_PREVIEW])[2:-1]
    return text + ("…" if len(data) > RAW_PREVIEW else "")


def status(message: str) -> None:
    """A status line on stderr (never mixed into the data on stdout)."""
    print(f"roost inspect: {message}", file=sys.stderr, flush=True)


class Inspector:
    def __init__(self, opts: Options, output: Output | None = None) -> None:
        self.opts = opts
        self.out = output or Output(opts)
        self.global_channel = opts.keys.global_channel
        self.pattern = glob_escape(opts.keys.base) + ":t:*"
        self.shown = 0
        self._ever_subscribed = False
        self._last_seq: dict[tuple[str, str], int] = {}
        self._last_reply = time.monotonic()
        try:
            self._pool = plain_pool(  # any Redis URL, redis+sentinel:// included
                opts.url,
                protocol=2,
                socket_timeout=None,
                socket_connect_timeout=3.0,
                health_check_interval=0,
                max_connections=1,
                **opts.connection,
            )
        except ValueError as exc:
            raise Fatal(f"bad Redis URL {opts.url!r}: {exc}") from None

    @property
    def done(self) -> bool:
        return self.opts.count is not None and self.shown >= self.opts.count

    async def run(self) -> None:
        """Subscribe and print until ``--count`` is reached; reconnect with backoff."""
        attempt = 0
        while not self.done:
            conn: AbstractConnection = self._pool.make_connection()  # type: ignore[no-untyped-call]
            pinger: asyncio.Task[None] | None = None
            subscribed = False
            try:
                await conn.connect()  # type: ignore[no-untyped-call]
                await conn.send_command("SUBSCRIBE", self.global_channel)
                pending = {"subscribe"}
                if self.pattern:
                    await conn.send_command("PSUBSCRIBE", self.pattern)
                    pending.add("psubscribe")
                self._last_reply = time.monotonic()
                pinger = asyncio.get_running_loop().create_task(self._pinger(conn))
                while not self.done:
                    reply = await conn.read_response(disconnect_on_error=True)
                    self._last_reply = time.monotonic()
                    if isinstance(reply, ResponseError):
                        raise reply
                    if not isinstance(reply, list) or not reply:
                        continue
                    kind = _text(reply[0])
                    if kind in pending:
                        pending.discard(kind)
                        if not pending:
                            subscribed = True
                            was = "re" if self._ever_subscribed else ""
                            self._ever_subscribed = True
                            status(
                                f"{was}subscribed to {self.global_channel}"
                                f"{' and ' + self.pattern if self.pattern else ''} "
                                f"at {safe_url(self.opts.url)} (Ctrl-C to stop)"
                            )
                            attempt = 0
                    elif kind == "message" and len(reply) >= 3:
                        self.handle(_text(reply[1]), reply[2])
                    elif kind == "pmessage" and len(reply) >= 4:
                        self.handle(_text(reply[2]), reply[3])
            except AuthenticationError as exc:
                raise Fatal(
                    f"Redis at {safe_url(self.opts.url)} refused the login: {exc}"
                ) from None
            except ResponseError as exc:
                raise Fatal(f"Redis at {safe_url(self.opts.url)} refused: {exc}") from None
            except (RedisError, OSError) as exc:
                delay = BACKOFF[min(attempt, len(BACKOFF) - 1)]
                attempt += 1
                if subscribed:
                    status(
                        f"lost the connection to Redis ({exc}); reconnecting in {delay:g}s "
                        "(broadcasts meanwhile are not seen)"
                    )
                else:
                    status(
                        f"cannot reach Redis at {safe_url(self.opts.url)} ({exc}); "
                        f"retrying in {delay:g}s"
                    )
                await asyncio.sleep(delay)
            finally:
                if pinger is not None:
                    pinger.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await pinger
                with contextlib.suppress(Exception):
                    await conn.disconnect()
        with contextlib.suppress(Exception):
            await self._pool.disconnect()

    async def _pinger(self, conn: AbstractConnection) -> None:
        """Detect a connection that went silent (e.g. a network partition)."""
        while True:
            await asyncio.sleep(PING_EVERY / 2)
            quiet = time.monotonic() - self._last_reply
            if quiet > DEAD_AFTER:
                status(f"no reply from Redis for {quiet:.0f}s")
                with contextlib.suppress(Exception):
                    await conn.disconnect()
                return
            if quiet > PING_EVERY:
                with contextlib.suppress(RedisError, OSError):
                    await conn.send_command("PING")

    def handle(self, channel: str, data: Any) -> None:
        if not isinstance(data, bytes):
            data = str(data).encode()
        topic_hint = self.opts.keys.topic_of(channel)
        try:
            wire = codec.decode(data)
        except codec.EnvelopeError as exc:
            if self.opts.topic is None or topic_hint is None or self._match_topic(topic_hint):
                self.out.error(channel, data, str(exc))
            return
        env = wire.envelope
        key = (env.node, channel)
        last = self._last_seq.get(key)
        gap = env.seq - last - 1 if last is not None and env.seq > last + 1 else 0
        self._last_seq[key] = env.seq
        if self.opts.topic is not None and not self._match_topic(env.topic):
            return
        if self.opts.event is not None and not fnmatch.fnmatchcase(env.event, self.opts.event):
            return
        verified = None
        if self.opts.signing_key is not None:
            verified = codec.verify(self.opts.signing_key, wire)
        self.shown += 1
        self.out.broadcast(channel, wire, gap, verified)

    def _match_topic(self, topic: str) -> bool:
        return self.opts.topic is not None and fnmatch.fnmatchcase(topic, self.opts.topic)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


def safe_url(url: str) -> str:
    """The URL without its password."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user + ':***@' if user else '***@'}{host}"


async def _main(opts: Options, kind: type[Inspector]) -> None:
    inspector = kind(opts)
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if task is not None:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):  # SIGTERM: stop like Ctrl-C
        await inspector.run()


def run(opts: Options, kind: type[Inspector] = Inspector) -> int:
    """Run the inspector; returns the process exit code."""
    try:
        asyncio.run(_main(opts, kind))
    except KeyboardInterrupt:
        return 0
    except Fatal as exc:
        status(str(exc))
        return 1
    except BrokenPipeError:
        # stdout closed (e.g. `roost inspect | head`): stop quietly.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 0
    return 0
