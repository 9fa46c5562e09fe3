"""Every option of ``roost serve``, once: name, default, environment variable, help,
validation. The CLI builds its options from these fields (``cli.config_options``),
``roost inspect`` takes its Redis TLS options from the same fields, and a test checks
that the README documents each one. Defaults come from where they are used
(``Limits``, ``HistoryPolicy``, ``build_app``, ``Presence``, ``HookPolicy``), never
restated. The options come in groups, one module each; ``ServeConfig`` is all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from ..brokers.redis.keys import check_node
from .access import AccessOptions
from .app import AppOptions
from .limits import LimitOptions
from .option import Option, expand, opt, usable_cores
from .redis import RedisOptions
from .serve import ServeOptions


# Fields come in the order of the bases from the last to the first: serve, redis,
# limits, access, app (the order ``roost serve --help`` lists them).
@dataclass(frozen=True)
class ServeConfig(AppOptions, AccessOptions, LimitOptions, RedisOptions, ServeOptions):
    def __post_init__(self) -> None:
        self.check_access()
        self.check_redis()
        if self.redis_url and self.node:
            check_node(self.node)  # in Redis names: no brace
        count = self.worker_count()  # "two" or 0 is a usage error
        if count > 1 and not self.redis_url:
            raise ValueError(
                f"--workers {self.workers} needs --redis URL: each worker is a node of its "
                "own, and nodes of the memory broker cannot reach each other's sockets "
                "(a room would be split between workers)"
            )
        self.proxies()  # a bad CIDR is a usage error, not a crash at the first request


def options() -> list[tuple[str, Any, Option]]:
    """(field name, default, Option) for every option, in declaration order."""
    return [(f.name, f.default, f.metadata["option"]) for f in fields(ServeConfig)]


__all__ = ["Option", "ServeConfig", "expand", "opt", "options", "usable_cores"]
