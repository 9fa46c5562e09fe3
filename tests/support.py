"""Test helpers: free ports, real `roost serve` subprocesses, in-process servers."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 15.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer in {timeout}s")


@dataclass
class ServerProcess:
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    args: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/socket"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


UNLIMITED_CLIENTS = {"ROOST_CONN_RATE": "0", "ROOST_MAX_CONNECTIONS_PER_IP": "0"}


def start_server(
    *args: str,
    port: int | None = None,
    node: str = "test-node",
    env: dict[str, str] | None = None,
    log_dir: Path | None = None,
    wait: bool = True,
) -> ServerProcess:
    """Start ``python -m roost serve`` on 127.0.0.1 and wait until /healthz answers."""
    port = port or free_port()
    log_dir = log_dir or Path(os.environ.get("TMPDIR", "/tmp"))
    log_path = log_dir / f"roost-{node}-{port}-{time.monotonic_ns()}.log"
    # Every test client comes from 127.0.0.1: the per-client limits (issue 14) are off unless
    # a test turns them on with flags (flags win over the environment).
    full_env = {**os.environ, **UNLIMITED_CLIENTS, **(env or {})}
    full_env.pop("PORT", None)
    full_env.pop("NODE", None)
    cmd = [
        sys.executable, "-m", "roost", "serve",
        "--host", "127.0.0.1", "--port", str(port), "--node", node, *args,
    ]  # fmt: skip
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=full_env)
    server = ServerProcess(port, proc, log_path, list(args))
    if wait:
        try:
            wait_http(f"{server.url}/healthz", proc=proc)
        except Exception:
            server.stop(signal.SIGKILL)
            raise RuntimeError(f"server did not start:\n{server.log()}") from None
    return server


@dataclass
class RedisProcess:
    """A private redis-server on a free port (no persistence), stoppable and restartable."""

    port: int
    extra: list[str]
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> RedisProcess:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not found: scripts/test installs it (apt-get)")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--protected-mode", "no", *self.extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith((b"+PONG", b"-NOAUTH")):
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on {self.port}")

    def stop(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()


def start_redis(*extra: str, port: int | None = None) -> RedisProcess:
    return RedisProcess(port or free_port(), list(extra)).start()


async def until(pred: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    """Wait (polling) until ``pred()`` is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)
