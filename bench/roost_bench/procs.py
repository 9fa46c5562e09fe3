"""Processes and ports: the one set of helpers every benchmark module uses.

Free ports, waiting for a port or an HTTP endpoint, starting a bench node
(:mod:`roost_bench.node`) or another Python module, and stopping a process.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"port {port} did not open")


def wait_http(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer")


def spawn(args: Sequence[str]) -> subprocess.Popen[bytes]:
    """``python ARGS`` (this interpreter), its output discarded."""
    return subprocess.Popen(
        [sys.executable, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def node_args(port: int, node: str, *extra: str) -> list[str]:
    """The command line of a bench node on loopback (``extra``: more node options)."""
    return [
        sys.executable, "-m", "roost_bench.node", "--host", "127.0.0.1",
        "--port", str(port), "--node", node, "--log-level", "warning",
        "--idle-timeout", "3600", *extra,
    ]  # fmt: skip


def roost_node(port: int, node: str, *extra: str) -> subprocess.Popen[bytes]:
    """Start a bench node and wait until it answers /healthz."""
    proc = spawn(node_args(port, node, *extra)[1:])
    wait_http(f"http://127.0.0.1:{port}/healthz")
    return proc


def terminate(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; reaps the process."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Group:
    """Processes started by a run; ``stop_all`` ends them in reverse order."""

    def __init__(self) -> None:
        self.stoppers: list[tuple[str, Callable[[], None]]] = []
        self.pids: dict[str, int] = {}

    def add(self, name: str, pid: int, stopper: Callable[[], None]) -> None:
        self.pids[name] = pid
        self.stoppers.append((name, stopper))

    def popen(
        self,
        name: str,
        args: Sequence[str],
        log: Path | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        out: IO[bytes] | int = subprocess.DEVNULL
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            out = open(log, "wb")  # noqa: SIM115 (closed by the stopper)
        proc = subprocess.Popen(
            list(args),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,  # Ctrl-C in the terminal reaches the bench only
            preexec_fn=_die_with_parent,
        )

        def stopper() -> None:
            terminate(proc)
            if not isinstance(out, int):
                out.close()

        self.add(name, proc.pid, stopper)
        return proc

    def stop(self, name: str) -> None:
        """Stop one process (and forget it) before the run ends."""
        self.pids.pop(name, None)
        for i, (n, fn) in enumerate(self.stoppers):
            if n == name:
                del self.stoppers[i]
                with contextlib.suppress(Exception):
                    fn()
                return

    def forget(self, name: str) -> None:
        """Drop a process that was stopped another way (its pid may be reused)."""
        self.pids.pop(name, None)
        self.stoppers = [(n, fn) for n, fn in self.stoppers if n != name]

    def stop_all(self) -> None:
        while self.stoppers:
            with contextlib.suppress(Exception):
                self.stoppers.pop()[1]()
        self.pids.clear()


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the bench dies, even by SIGKILL (Linux)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
