"""Shared plumbing of the ``rooms``, ``connections`` and ``peers`` scenarios.

- :func:`start_roost`: a bench node (:mod:`.node`) in a :class:`.procs.Group`, the
  processes a run starts, stopped in reverse order whatever happens;
- :func:`sigterm_as_interrupt`: SIGTERM as Ctrl-C, so ``finally`` blocks stop them;
- /proc readings: CPU seconds (utime + stime), VmRSS, a :class:`CpuMeter`;
- :func:`tcp_bytes_received`: bytes a process received on its TCP connections to a
  port, from the kernel's counters (``ss -tie``), so no server has to count them;
- :class:`TallyClient`: the counting client of :mod:`.loadclient` that also adds to a
  shared :class:`Tally` (total bytes, time of the last read), so waiting for a fan-out
  to finish polls one number instead of every client;
- :func:`machine`: what the results were measured on.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .loadclient import CountingClient
from .procs import Group, node_args, wait_http

# -- processes -----------------------------------------------------------------------------


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt, so ``finally`` blocks stop what was started."""

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def start_roost(
    group: Group, port: int, node: str, log: Path | None, *extra: str
) -> subprocess.Popen[bytes]:
    unlimited = ("--msg-rate", "0", "--join-rate", "0", "--max-connections", "100000")
    proc = group.popen(node, node_args(port, node, *unlimited, *extra), log)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", 30)
    except TimeoutError:
        raise RuntimeError(f"roost node {node} did not start (see {log})") from None
    if proc.poll() is not None:
        raise RuntimeError(f"roost node {node} exited (see {log})")
    return proc


# -- /proc ---------------------------------------------------------------------------------


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of a process (this one through os.times)."""
    if pid is None or pid == os.getpid():
        t = os.times()
        return t.user + t.system
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return math.nan


def rss_kb(pid: int) -> int:
    """VmRSS of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


class CpuMeter:
    """Share of one core each process used between creation and ``stop`` (1.0 = a core)."""

    def __init__(self, pids: dict[str, int], include_self: bool = True) -> None:
        self.pids = dict(pids)
        if include_self:
            self.pids["bench client"] = os.getpid()
        self.t0 = time.monotonic()
        self.c0 = {k: cpu_seconds(p) for k, p in self.pids.items()}

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self.t0
        out = {}
        for k, p in self.pids.items():
            share = (cpu_seconds(p) - self.c0[k]) / wall if wall > 0 else math.nan
            out[k] = round(share, 3) if not math.isnan(share) else math.nan
        return out


def raise_nofile(wanted: int | None = None) -> tuple[int, int]:
    """Raise this process's soft fd limit toward the hard one; children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if wanted is None else min(hard, max(soft, wanted))
    if hard == resource.RLIM_INFINITY and wanted is None:
        target = max(soft, 1 << 20)
    if target > soft:
        with contextlib.suppress(ValueError, OSError):  # above fs.nr_open: keep what we have
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


# -- kernel TCP counters -------------------------------------------------------------------

_SS_ADDR = re.compile(r"(\S+):(\d+)\s+(\S+):(\d+)")
_SS_INO = re.compile(r"\bino:(\d+)")
_SS_RECV = re.compile(r"\bbytes_received:(\d+)")


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    with contextlib.suppress(OSError):
        for fd in fd_dir.iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return inodes


def tcp_bytes_received(pid: int, remote_port: int) -> dict[int, int] | None:
    """Bytes received so far on each of ``pid``'s TCP connections to ``remote_port``.

    Keyed by the connection's local port. From the kernel (``ss -tie``: tcp_info's
    bytes_received, socket inode matched with /proc/PID/fd), so it works whatever the
    server's version; None when ``ss`` is missing.
    """
    ss = shutil.which("ss")
    if ss is None:
        return None
    out = subprocess.run(
        [ss, "-tieHn", "state", "established", f"( dport = :{remote_port} )"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    ).stdout
    mine = _socket_inodes(pid)
    result: dict[int, int] = {}
    # One socket per entry: an address line, then an indented tcp_info line.
    for entry in re.split(r"\n(?=\S)", out):
        addr, ino, recv = _SS_ADDR.search(entry), _SS_INO.search(entry), _SS_RECV.search(entry)
        if addr is None or ino is None:
            continue
        if int(ino.group(1)) in mine:
            result[int(addr.group(2))] = int(recv.group(1)) if recv else 0
    return result


# -- counting clients with a shared tally --------------------------------------------------


class Tally:
    """Bytes received by a set of clients, and when the last read happened."""

    __slots__ = ("last", "total")

    def __init__(self) -> None:
        self.total = 0
        self.last = time.perf_counter()

    def reset(self) -> None:
        self.total = 0
        self.last = time.perf_counter()


class TallyClient(CountingClient):
    def __init__(self, host: str, path: str, tally: Tally) -> None:
        super().__init__(host, path, None)
        self.tally = tally

    def data_received(self, data: bytes) -> None:
        if self.upgraded:
            n = len(data)
            self.received += n
            tally = self.tally
            tally.total += n
            tally.last = time.perf_counter()
            return
        super().data_received(data)


async def open_tally_clients(
    port: int,
    path: str,
    count: int,
    tally: Tally,
    *,
    concurrency: int = 200,
    source_ips: int = 1,
    factory: Callable[[str, str, Tally], CountingClient] = TallyClient,
) -> list[CountingClient]:
    """Open ``count`` upgraded connections to 127.0.0.1:``port``.

    With ``source_ips`` > 1 client i binds 127.0.0.(1 + i % source_ips), so more
    connections than one address's ephemeral ports can be opened.
    """
    loop = asyncio.get_running_loop()
    clients: list[CountingClient] = []
    sem = asyncio.Semaphore(concurrency)
    host = f"127.0.0.1:{port}"

    async def one(i: int) -> None:
        local = (f"127.0.0.{1 + i % source_ips}", 0) if source_ips > 1 else None
        async with sem:
            _, proto = await loop.create_connection(
                lambda: factory(host, path, tally), "127.0.0.1", port, local_addr=local
            )
            try:
                await asyncio.wait_for(proto.upgraded_fut, 30)
            except BaseException:
                if proto.transport is not None:
                    proto.transport.close()
                raise
            clients.append(proto)

    results = await asyncio.gather(*(one(i) for i in range(count)), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        close_clients(clients)
        raise RuntimeError(f"{len(errors)} of {count} connections failed: {errors[0]!r}")
    return clients


def close_clients(clients: Sequence[CountingClient]) -> None:
    for c in clients:
        if c.transport is not None:
            c.transport.close()


async def wait_delivered(
    clients: Sequence[CountingClient], tally: Tally, target: int, *, idle: float, cap: float
) -> bool:
    """Until every client received ``target`` bytes; False if nothing moved for ``idle``
    seconds (or ``cap`` passed) first. ``tally.last`` then holds the last read's time."""
    want = target * len(clients)
    deadline = time.perf_counter() + cap
    while True:
        now = time.perf_counter()
        if tally.total >= want and all(c.received >= target for c in clients):
            return True
        if now - tally.last > idle or now > deadline:
            return False
        await asyncio.sleep(0.002)


# -- reporting -----------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kb = int(Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1])
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "fd_limit": list(resource.getrlimit(resource.RLIMIT_NOFILE)),
    }


def pyplot() -> Any | None:
    """matplotlib.pyplot on the Agg backend, or None when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _clean(value: Any) -> Any:
    """NaN (a process that vanished before its CPU was read) as null: strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_results(
    out: Path, name: str, result: Any, plot: Callable[[Any, Path], bool], as_json: Any = None
) -> str:
    """``NAME.json`` (``as_json``, else ``result``) and ``NAME.png`` under ``out``."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    data = out / f"{name}.json"
    data.write_text(json.dumps(_clean(result if as_json is None else as_json), indent=2) + "\n")
    png = out / f"{name}.png"
    if plot(result, png):
        return f"wrote {data} and {png}"
    return f"wrote {data}; no plot: matplotlib is missing (pip install 'roost[bench]')"
