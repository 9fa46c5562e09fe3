"""``roost inspect --wire phoenix``: the article's ``redis_print``.

Subscribes to a Phoenix application's channel (``phx:Elixir.<PubSub>.Adapter``, or the
one given) and prints every phoenix_pubsub_redis message's message term as Elixir's
``IO.inspect`` prints it, then an empty line — for a channel broadcast, the
``%Phoenix.Socket.Broadcast{}`` exactly as the article shows it. ``--json``: one object
per line (``brokers.redis.phoenix_codec.describe``). ``--topic``/``--event`` filter.
Bytes that are not a message become an error line, never a crash.
"""

from __future__ import annotations

import fnmatch
from typing import Any

from .brokers.redis import phoenix_codec
from .inspector import Inspector, Options, Output, now_ms
from .protocol.elixir_inspect import inspect
from .protocol.etf import EtfError


class PhoenixInspector(Inspector):
    def __init__(self, opts: Options, output: Output | None = None) -> None:
        super().__init__(opts, output)
        self.global_channel, self.pattern = opts.phoenix_channel, ""  # one channel

    def handle(self, channel: str, data: Any) -> None:
        if not isinstance(data, bytes):
            data = str(data).encode()
        try:
            msg = phoenix_codec.parse(data)
            found = phoenix_codec.broadcast_of(msg.message)
        except EtfError as exc:
            self.out.error(channel, data, str(exc), "a Phoenix message")
            return
        topic, event = (found[0], found[1]) if found is not None else (msg.topic, "")
        if self.opts.topic is not None and not self._match_topic(topic):
            return
        if self.opts.event is not None and not fnmatch.fnmatchcase(event, self.opts.event):
            return
        self.shown += 1
        out = self.out
        if self.opts.json:
            out._write_json(
                {"ts": now_ms(), "channel": channel, **phoenix_codec.describe(msg, found)}
            )
        else:  # as redis_print: the term, then an empty line
            out.file.write(inspect(msg.message) + "\n\n")
            out.file.flush()
