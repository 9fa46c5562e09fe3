"""A private Redis Cluster for a benchmark run: N masters, no replicas, loopback, free ports.

``redis-cli --cluster create`` wants three masters at least, and the ``cluster``
scenario compares one master with three; so the cluster is made by hand, the same way
for any N: every node MEETs the first, each takes an equal range of the 16,384 slots
(``CLUSTER ADDSLOTSRANGE``, Redis 7), and the run waits until every node says
``cluster_state:ok``. No persistence; each node's ``nodes.conf`` in a temporary folder
removed at the end.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from .procs import free_port
from .redisproc import RedisServer

SLOTS = 16384


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    while True:
        port = free_port()
        if port + 10000 >= 65536:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def _cluster(client: redis.Redis, *args: str | int) -> Any:
    """One CLUSTER subcommand (redis-py's execute_command is untyped)."""
    return client.execute_command("CLUSTER", *args)  # type: ignore[no-untyped-call]


def slot_ranges(masters: int) -> list[tuple[int, int]]:
    """Equal consecutive slot ranges, one per master."""
    bounds = [SLOTS * i // masters for i in range(masters + 1)]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(masters)]


class RedisCluster:
    def __init__(self, masters: int) -> None:
        if masters < 1:
            raise ValueError("a cluster needs one master at least")
        self.workdir = Path(tempfile.mkdtemp(prefix="roost-bench-cluster-"))
        self.servers: list[RedisServer] = []
        self.ranges = slot_ranges(masters)

    @property
    def url(self) -> str:
        return self.servers[0].url

    @property
    def ports(self) -> list[int]:
        return [s.port for s in self.servers]

    def start(self, timeout: float = 30.0) -> RedisCluster:
        try:
            for _ in self.ranges:
                port = cluster_port()
                conf = self.workdir / f"nodes-{port}.conf"
                self.servers.append(
                    RedisServer(port, ("--cluster-enabled", "yes", "--cluster-config-file",
                                       str(conf), "--dir", str(self.workdir))).start()
                )  # fmt: skip
            clients = [redis.Redis(port=p) for p in self.ports]
            for c in clients[1:]:
                _cluster(c, "MEET", "127.0.0.1", self.ports[0])
            for c, (lo, hi) in zip(clients, self.ranges, strict=True):
                _cluster(c, "ADDSLOTSRANGE", lo, hi)
            self._wait_ok(clients, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    @staticmethod
    def _wait_ok(clients: list[redis.Redis], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(b"cluster_state:ok" in _cluster(c, "INFO") for c in clients):
                return
            time.sleep(0.1)
        raise RuntimeError("the bench's redis cluster did not reach cluster_state:ok")

    def master_of(self, slot: int) -> int:
        """Index of the master serving ``slot``."""
        return next(i for i, (lo, hi) in enumerate(self.ranges) if lo <= slot <= hi)

    def stop(self) -> None:
        for s in reversed(self.servers):
            s.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
