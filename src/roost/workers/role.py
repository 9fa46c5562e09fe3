"""What a supervisor tells a worker process: one JSON value in ``ROOST_WORKER``.

The worker runs ``roost serve`` as usual; finding ``ROOST_WORKER`` it takes its whole
configuration from there (exactly the supervisor's, so a worker restarted an hour
later serves with the same options), names itself ``<node>-w<k>``, and listens as
told: its own SO_REUSEPORT socket on the port, or the inherited socket ``fd``.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..server.siblings import Siblings

ENV = "ROOST_WORKER"


@dataclass(frozen=True)
class Role:
    index: int  # 1-based
    count: int
    node: str  # the group's name; this worker is <node>-w<index>
    directory: str  # private sockets of the group (see server/siblings.py)
    instance: str  # this process's node-name claim
    takeover: str | None  # a dead predecessor's claim it may replace
    port: int
    fd: int | None = None  # the shared listening socket, if the group uses one
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.node}-w{self.index}"

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Role | None:
        raw = (os.environ if environ is None else environ).get(ENV)
        if not raw:
            return None
        return cls(**json.loads(raw))

    def listening_socket(self) -> socket.socket | None:
        """The inherited shared socket, or None (bind the port with SO_REUSEPORT)."""
        if self.fd is None:
            return None
        return socket.socket(fileno=self.fd)

    def siblings(self) -> Siblings:
        return Siblings(self.index, self.count, self.node, Path(self.directory))
