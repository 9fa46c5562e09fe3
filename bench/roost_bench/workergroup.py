"""``roost serve --workers N`` as a benchmark runs it: start, find the workers, read /metrics.

The supervisor logs ``worker w<k> started (pid N)`` and ``worker w<k> ready (pid N)``
(with a UTC timestamp, ms); the bench reads the worker pids and their ready times from
that log. ``/metrics`` on the port answers for the whole group, each worker's series
labelled ``node="<node>-w<k>"``.
"""

from __future__ import annotations

import contextlib
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
        "--conn-rate", "0", "--max-connections-per-ip", "0", "--idle-timeout", "3600",
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
                        "roost_workers_answering"):  # fmt: skip
                out.setdefault(name, {})[node] = float(value)
    return out


def short(node: str) -> str:
    """``wb-w2`` → ``w2`` (a single node's name → ``w1``)."""
    return node.rsplit("-", 1)[1] if "-w" in node else "w1"


def fd_plan(clients: int, say: object) -> tuple[int, str]:
    """Raise this process's fd limit so every process can hold ``clients`` sockets.

    Every child inherits the limit: a worker can end up with every client (after a
    restart the others take the reconnects), a client process with its share. As root
    the hard limit is raised too (up to fs.nr_open); otherwise the clients are capped.
    Returns the client count to run and a sentence saying what was done.
    """
    want = clients + 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < want and os.geteuid() == 0:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return clients, (
                f"fd limit: raised the hard limit {hard} -> {want} (running as root; "
                "children inherit it)"
            )
        except (ValueError, OSError) as exc:
            note = f"could not raise the hard fd limit to {want} ({exc}); "
    else:
        note = ""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    top = hard if hard != resource.RLIM_INFINITY else max(soft, want)
    if top > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(top, max(want, soft)), hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft < want:
        capped = max(0, soft - 1024)
        return capped, (
            f"{note}fd limit {soft} (not root): a worker may have to hold every client, "
            f"so {clients} clients is too many: running {capped}"
        )
    return clients, f"{note}fd limit {soft} (enough, unchanged hard limit {hard})"
