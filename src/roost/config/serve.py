"""Where and as what a node runs: the application, address, name, workers, logs."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from ..server.balance import BalancePolicy
from .option import default_of, opt, usable_cores

#: SO_REUSEPORT spreads connections over the sockets only on Linux (elsewhere the last
#: socket bound takes them all, or the option is missing): one shared socket there.
DEFAULT_WORKER_SOCKET = "reuseport" if sys.platform.startswith("linux") else "shared"


@dataclass(frozen=True)
class ServeOptions:
    app: str = opt(
        "",
        "--application",
        "ROOST_APPLICATION",
        "The application to serve, MODULE:NAME (a roost.Application, or a function returning "
        "one), also given as serve's argument [default: the chat].",
        show_default=False,
    )
    host: str = opt("127.0.0.1", "--host", "HOST", "Bind address.")
    port: int = opt(4000, "--port", "PORT", "TCP port.")
    node: str | None = opt(
        None, "--node", "NODE", "Unique node name [default: host-pid].", show_default=False
    )
    workers: str = opt(
        "1",
        "--workers",
        "ROOST_WORKERS",
        "Processes serving one port: N, or auto (one per core); each is a node named "
        "<node>-w<k>, so more than 1 needs --redis.",
    )
    worker_socket: str = opt(
        DEFAULT_WORKER_SOCKET,
        "--worker-socket",
        "ROOST_WORKER_SOCKET",
        "How workers share the port: reuseport (each binds it with SO_REUSEPORT, the kernel "
        "spreads connections; Linux) or shared (they accept on one inherited socket).",
        choices=("reuseport", "shared"),
    )
    worker_balance: str = opt(
        "on",
        "--worker-balance",
        "ROOST_WORKER_BALANCE",
        "With --workers above 1: a worker far above the group's mean of open sockets (after "
        "a restart) closes some with 1012 so their clients reconnect to the others.",
        choices=("on", "off"),
    )
    worker_balance_tolerance: float = opt(
        default_of(BalancePolicy, "tolerance"),
        "--worker-balance-tolerance",
        "ROOST_WORKER_BALANCE_TOLERANCE",
        "How far above the group's mean (a share of it) a worker may be before it hands "
        "sockets back; it stops at half of that.",
        minimum=0.0,
    )
    worker_balance_rate: float = opt(
        default_of(BalancePolicy, "max_rate"),
        "--worker-balance-rate",
        "ROOST_WORKER_BALANCE_RATE",
        "Sockets a worker closes per second at most to rebalance (and at most 1 % of its "
        "own per second, at least 20).",
        minimum=1.0,
    )
    log_format: str = opt("text", "--log-format", "ROOST_LOG_FORMAT", choices=("text", "json"))
    log_level: str = opt("info", "--log-level", "ROOST_LOG_LEVEL")

    def balance(self) -> BalancePolicy | None:
        """The rebalancing rules of a worker (None: off)."""
        if self.worker_balance != "on":
            return None
        return BalancePolicy(
            tolerance=self.worker_balance_tolerance, max_rate=self.worker_balance_rate
        )

    def worker_count(self) -> int:
        """``--workers`` as a number: ``auto`` is the cores this process may use."""
        if self.workers == "auto":
            return usable_cores()
        try:
            count = int(self.workers)
        except ValueError:
            count = 0
        if count < 1:
            raise ValueError(f"--workers must be a number >= 1 or auto, not {self.workers!r}")
        return count
