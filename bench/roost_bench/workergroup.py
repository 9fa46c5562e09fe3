"""``roost serve --workers N`` as a benchmark runs it: start, find the workers, read /metrics.

The supervisor logs ``worker w<k> started (pid N)`` and ``worker w<k> ready (pid N)``
(with a UTC timestamp, ms); the bench reads the worker pids and their ready times from
that log. ``/metrics`` on the port answers for the whole group, each worker's series
labelled ``node="<node>-w<k>"``.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import resource
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from .procs import Group

NODE = "wb"
LINE = re.compile(r"^(\S+Z)\s.*worker w(\d+) (started|ready) \(pid (\d+)\)", re.M)
SAMPLE = re.compile(r'^(roost_\w+)\{node="([^"]+)"\} ([0-9.e+-]+)$', re.M)


def serve_args(port: int, workers: int, redis_url: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "roost", "serve", "--host", "127.0.0.1", "--port", str(port),
        "--node", NODE, "--workers", str(workers), "--redis", redis_url,
        "--max-connections", "200000", "--join-rate", "0", "--msg-rate", "0",
        "--conn-rate", "0", "--max-connections-per-ip", "0", "--join-rate-per-ip", "0",
        "--idle-timeout", "3600",
        "--drain-window", "1", "--log-level", "info", *extra,
    ]  # fmt: skip


def start(group: Group, port: int, workers: int, redis_url: str, log: Path, *extra: str) -> int:
    """Start the group and wait until /readyz says every worker is ready; its pid."""
    proc = group.popen("server", serve_args(port, workers, redis_url, *extra), log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"roost serve exited with {proc.returncode} (see {log})")
        if ready(port):
            return proc.pid
        time.sleep(0.1)
    raise RuntimeError(f"roost serve --workers {workers} did not get ready (see {log})")


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.HTTPError):
        return False


def events(log: Path) -> list[tuple[float, int, str, int]]:
    """(wall time, worker index, "started"|"ready", pid) for every such supervisor line."""
    text = log.read_text(errors="replace") if log.exists() else ""
    out = []
    for stamp, index, what, pid in LINE.findall(text):
        t = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
        out.append((t, int(index), what, int(pid)))
    return out


def worker_pids(log: Path, workers: int, server_pid: int) -> dict[str, int]:
    """``w<k>`` → the pid of its current process (one worker: the server process itself)."""
    if workers == 1:
        return {"w1": server_pid}
    pids: dict[str, int] = {}
    for _, index, what, pid in events(log):
        if what == "started":
            pids[f"w{index}"] = pid
    return pids


def metrics(port: int) -> dict[str, dict[str, float]]:
    """roost_connections / roost_channels_joined / roost_workers… by node, from /metrics."""
    out: dict[str, dict[str, float]] = {}
    with contextlib.suppress(OSError, ValueError):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        for name, node, value in SAMPLE.findall(text):
            if name in ("roost_connections", "roost_channels_joined", "roost_workers",
                        "roost_workers_answering",
                        "roost_connections_rebalanced_total"):  # fmt: skip
                out.setdefault(name, {})[node] = float(value)
    return out


def short(node: str) -> str:
    """``wb-w2`` → ``w2`` (a single node's name → ``w1``)."""
    return node.rsplit("-", 1)[1] if "-w" in node else "w1"


IMBALANCE = 1.15  # SO_REUSEPORT's split: up to 13 % over the mean was seen at 10,000 clients
MARGIN = 300  # fds a process needs besides client sockets (roost reserves 200)


def per_process(clients: int, workers: int, procs: int, storm: bool) -> tuple[int, int]:
    """Sockets the busiest worker and the busiest client process may hold.

    After the storm the victim's clients are on the other workers (with 2: all on one).
    """
    if workers == 1 or (storm and workers == 2):
        worker = clients
    else:
        worker = min(clients, math.ceil(clients / (workers - 1 if storm else workers) * IMBALANCE))
    return worker, math.ceil(clients / procs)


def fd_plan(clients: int, workers: int, procs: int, storm: bool) -> tuple[int, str]:
    """Raise this process's fd limit so that every process can hold its sockets.

    Children inherit the limit (each roost process raises its soft limit to the hard one).
    The hard limit is raised too where that is allowed (root with CAP_SYS_RESOURCE, up to
    fs.nr_open); otherwise the clients are capped. Returns the client count to run and a
    sentence saying what was done and why.
    """
    want = max(per_process(clients, workers, procs, storm)) + MARGIN
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    note = ""
    if hard != resource.RLIM_INFINITY and hard < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return clients, (
                f"fd limit: raised the hard limit {hard} -> {want} (running as root; "
                "children inherit it)"
            )
        except (ValueError, OSError) as exc:
            who = "root without CAP_SYS_RESOURCE" if os.geteuid() == 0 else "not root"
            note = f"the hard fd limit {hard} cannot be raised to {want} here ({who}: {exc}); "
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft >= want:
        return clients, (
            f"fd limit {soft}: enough (the busiest process may hold {want - MARGIN:,} sockets)"
        )
    fit = clients
    while fit > 0 and max(per_process(fit, workers, procs, storm)) + MARGIN > soft:
        fit -= max(1, fit // 200)
    worker, client = per_process(clients, workers, procs, storm)
    return fit, (
        f"{note}a worker may have to hold {worker:,} clients"
        + (" after the storm" if storm and workers > 1 else "")
        + f" and a client process {client:,}: running {fit:,} clients instead of {clients:,} "
        "(more --workers / --client-procs, or a higher hard limit: ulimit -Hn, LimitNOFILE=)"
    )
