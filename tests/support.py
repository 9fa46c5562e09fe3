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


def _cluster_port() -> int:
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


@dataclass
class RedisCluster:
    """A Redis Cluster of private redis-servers: masters first, then their replicas."""

    nodes: list[RedisProcess]
    workdir: Path

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def cli(self, port: int, *args: str, timeout: float = 10.0) -> str:
        out = subprocess.run(
            ["redis-cli", "-p", str(port), *args],
            capture_output=True, timeout=timeout, check=True,
        )  # fmt: skip
        return out.stdout.decode()

    def alive(self) -> list[RedisProcess]:
        return [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]

    def masters(self) -> dict[int, tuple[int, int]]:
        """port → (first slot, last slot) of every live master owning slots (ranges merged
        per master as CLUSTER SLOTS lists them; a master with several ranges keeps its first)."""
        out: dict[int, tuple[int, int]] = {}
        for line in self.cli(self.alive()[0].port, "CLUSTER", "NODES").splitlines():
            parts = line.split()
            if "master" in parts[2] and "fail" not in parts[2] and len(parts) > 8:
                port = int(parts[1].split(":")[1].split("@")[0])
                lo, _, hi = parts[8].partition("-")
                out[port] = (int(lo), int(hi or lo))
        return out

    def wait_ok(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if all(
                    "cluster_state:ok" in self.cli(n.port, "CLUSTER", "INFO") for n in self.alive()
                ):
                    return
            except (subprocess.SubprocessError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError("redis cluster did not reach cluster_state:ok")

    def wait_promoted(self, dead: int, timeout: float = 30.0) -> None:
        """Until the slots of the dead master ``dead`` are served by its replica."""
        deadline = time.monotonic() + timeout
        count = len(self.masters())
        while time.monotonic() < deadline:
            masters = self.masters()
            if dead not in masters and len(masters) == count:
                return self.wait_ok(timeout)
            time.sleep(0.1)
        raise RuntimeError(f"no replica took over from {dead}")

    def node_id(self, port: int) -> str:
        return self.cli(port, "CLUSTER", "MYID").strip()

    def migrate_slot(self, slot: int, source: int, target: int) -> int:
        """Move one slot and its keys between masters (the steps of ``redis-cli --cluster
        reshard``: IMPORTING, MIGRATING, MIGRATE the keys, SETSLOT NODE everywhere);
        returns how many keys moved."""
        src, dst = self.node_id(source), self.node_id(target)
        self.cli(target, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", src)
        self.cli(source, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", dst)
        moved = 0
        while keys := self.cli(source, "CLUSTER", "GETKEYSINSLOT", str(slot), "100").split():
            self.cli(source, "MIGRATE", "127.0.0.1", str(target), "", "0", "5000", "KEYS", *keys)
            moved += len(keys)
        for port in (target, source, *(n.port for n in self.alive())):
            self.cli(port, "CLUSTER", "SETSLOT", str(slot), "NODE", dst)
        return moved

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_redis_cluster(masters: int = 3, replicas: int = 1) -> RedisCluster:
    """A Redis Cluster on free loopback ports (``--cluster-node-timeout 1000``, so a dead
    master's replica takes over within a few seconds; ``--cluster-require-full-coverage
    no``, so the other masters keep serving meanwhile), waited on until cluster_state:ok."""
    import tempfile

    workdir = Path(tempfile.mkdtemp(prefix="roost-cluster-"))
    nodes = []
    for _ in range(masters * (1 + replicas)):
        port = _cluster_port()
        node_dir = workdir / str(port)
        node_dir.mkdir()
        nodes.append(
            RedisProcess(
                port,
                ["--cluster-enabled", "yes", "--cluster-config-file", f"{node_dir}/nodes.conf",
                 "--cluster-node-timeout", "1000", "--dir", str(node_dir),
                 "--logfile", f"{node_dir}/redis.log", "--repl-diskless-sync-delay", "0",
                 "--cluster-require-full-coverage", "no"],
            ).start()
        )  # fmt: skip
    cluster = RedisCluster(nodes, workdir)
    try:
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in nodes),
             "--cluster-replicas", str(replicas), "--cluster-yes"],
            capture_output=True, timeout=60, check=True,
        )  # fmt: skip
        cluster.wait_ok()
    except Exception:
        cluster.stop()
        raise
    return cluster
