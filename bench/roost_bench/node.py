"""The node a benchmark measures: roost's chat endpoint plus the ``bench:*`` channel.

Composed from roost's public pieces, as any application would: the chat endpoint
(:func:`roost.chat.create_endpoint`), :class:`~roost_bench.channel.BenchChannel` added on
its router, and :func:`roost.server.build_app`. The defaults are ``roost serve``'s; the
options are the ones the scenarios pass.

Run: ``python -m roost_bench.node --port PORT --node NAME [--redis URL ...]``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from roost.channels import Limits
from roost.chat import create_endpoint
from roost.cli_support import use_uvloop
from roost.pubsub import Broker
from roost.server import build_app
from roost.server.logs import setup_logging

from .channel import BenchChannel

log = logging.getLogger("roost_bench.node")


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m roost_bench.node", description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--node", default="bench")
    ap.add_argument("--log-level", default="warning")
    ap.add_argument("--idle-timeout", type=float, default=3600.0)
    ap.add_argument("--msg-rate", type=float, default=50.0, help="0: unlimited")
    ap.add_argument("--join-rate", type=float, default=10.0, help="0: unlimited")
    ap.add_argument("--max-connections", type=int, default=25_000)
    ap.add_argument("--redis", dest="redis_url", default=None, help="default: memory broker")
    ap.add_argument("--pubsub-mode", choices=("topic", "global"), default="topic")
    ap.add_argument("--redis-prefix", default="roost")
    ap.add_argument("--app", dest="app_name", default="chat")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    setup_logging(args.node, "text", args.log_level)
    use_uvloop()
    broker: Broker
    if not args.redis_url:
        from roost.brokers.memory import MemoryBroker

        broker = MemoryBroker()
    else:
        from roost.brokers.redis import Keys, RedisBroker

        broker = RedisBroker(
            args.redis_url, mode=args.pubsub_mode, keys=Keys(args.redis_prefix, args.app_name)
        )
    limits = Limits(
        idle_timeout=args.idle_timeout,
        msg_rate=args.msg_rate,
        join_rate=args.join_rate,
        max_connections=args.max_connections,
        conn_rate=0,  # every benchmark client comes from loopback
        max_connections_per_ip=0,
    )
    endpoint = create_endpoint(args.node, broker, limits=limits)
    endpoint.router.channel("bench:*", BenchChannel)
    app = build_app(endpoint)

    from roost.brokers.redis import DuplicateNodeError
    from roost.server.run import run

    try:
        run(app, args.host, args.port)  # as ``roost serve``: the front listener
    except DuplicateNodeError as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
