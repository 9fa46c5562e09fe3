"""``roost cluster``: N ``roost serve`` nodes on one Redis, for a local demo.

Nodes are named n1..nN and listen on consecutive ports from ``--base-port``. Without
``--redis`` a private ``redis-server`` (no persistence) is started on a free port.
Children run in their own process group, so Ctrl-C reaches only this supervisor,
which stops them in order: nodes with SIGTERM (graceful), then Redis. On Linux the
children also get SIGTERM if the supervisor itself is killed (PR_SET_PDEATHSIG), so
nothing is left behind. A node that dies on its own is reported and the rest stopped.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType

import click

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

NO_REDIS = (
    "roost cluster: no redis-server on PATH, and no --redis given.\n"
    "  Install one:  apt-get install redis-server   (Debian/Ubuntu; brew install redis on macOS)\n"
    "  or run one:   docker run --rm -p 6379:6379 redis\n"
    "  and use it:   roost cluster --nodes {nodes} --redis redis://127.0.0.1:6379"
)


class ClusterError(Exception):
    """Something that stops the cluster, with a message for the user."""


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    port: int

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


@dataclass
class Cluster:
    nodes: int
    redis_url: str | None = None
    base_port: int = 4000
    host: str = "127.0.0.1"
    pubsub_mode: str = "topic"
    serve_args: Sequence[str] = ()
    echo: Callable[[str], None] = click.echo
    children: list[Child] = field(default_factory=list)
    redis: Child | None = None
    stopping: bool = False
    signalled: str = ""

    # -- signals ------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only flags here: printing from a signal handler can re-enter buffered I/O.
        self.signalled = self.signalled or signal.Signals(signum).name
        self.stopping = True

    def run(self) -> int:
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            return self._run()
        except ClusterError as exc:
            click.echo(f"roost cluster: {exc}", err=True)
            return 1
        finally:
            if self.signalled:
                self.echo(f"roost cluster: {self.signalled}, stopping everything")
            started = bool(self.children or self.redis)
            self.stop()
            if started:
                self.echo("roost cluster: stopped")
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _run(self) -> int:
        if self.nodes < 1:
            raise ClusterError("--nodes must be at least 1")
        ports = [self.base_port + i for i in range(self.nodes)]
        for port in ports:
            if not port_free(self.host, port):
                raise ClusterError(
                    f"port {port} on {self.host} is in use; choose another --base-port"
                )
        url = self.redis_url or self._start_redis()
        for i, port in enumerate(ports, 1):
            self.children.append(self._spawn_node(f"n{i}", port, url))
        for child in self.children:
            self._wait_healthy(child)
            if self.stopping:
                return 0
        self._announce(url)
        while not self.stopping:
            for child in [*self.children, *([self.redis] if self.redis else [])]:
                if not child.alive:
                    click.echo(
                        f"roost cluster: {child.name} (pid {child.proc.pid}) exited unexpectedly "
                        f"with {describe_exit(child.proc.returncode)}; stopping the rest",
                        err=True,
                    )
                    return 1
            time.sleep(0.2)
        return 0

    # -- redis --------------------------------------------------------------------------
    def _start_redis(self) -> str:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ClusterError(NO_REDIS.format(nodes=self.nodes).removeprefix("roost cluster: "))
        port = free_port()
        cmd = [
            binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--protected-mode", "no", "--loglevel", "warning",
        ]  # fmt: skip
        proc = _popen(cmd, stdout=subprocess.DEVNULL)
        self.redis = Child("redis-server", proc, port)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not self.stopping:
            if proc.poll() is not None:
                raise ClusterError(
                    f"redis-server exited with {describe_exit(proc.returncode)} at start"
                )
            if redis_ping("127.0.0.1", port):
                return f"redis://127.0.0.1:{port}"
            time.sleep(0.05)
        if self.stopping:
            return f"redis://127.0.0.1:{port}"
        raise ClusterError(f"redis-server did not answer on port {port} within 10s")

    # -- nodes --------------------------------------------------------------------------
    def _spawn_node(self, name: str, port: int, redis_url: str) -> Child:
        cmd = [
            sys.executable, "-m", "roost", "serve",
            "--host", self.host, "--port", str(port), "--node", name,
            "--redis", redis_url, "--pubsub-mode", self.pubsub_mode,
            *self.serve_args,
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k not in ("PORT", "NODE")}
        return Child(name, _popen(cmd, env=env), port)

    def _wait_healthy(self, child: Child) -> None:
        url = f"http://{connect_host(self.host)}:{child.port}/healthz"
        deadline = time.monotonic() + START_TIMEOUT
        while not self.stopping:
            if not child.alive:
                raise ClusterError(
                    f"node {child.name} exited with {describe_exit(child.proc.returncode)} "
                    "while starting (see its log above)"
                )
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    body = json.loads(resp.read())
                    if resp.status == 200 and body.get("node") == child.name:
                        return
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise ClusterError(f"node {child.name} did not answer {url} in {START_TIMEOUT:g}s")
            time.sleep(0.1)

    def _announce(self, url: str) -> None:
        where = "private redis-server" if self.redis else "Redis"
        host = connect_host(self.host)
        lines = [
            f"roost cluster: {len(self.children)} node(s), {self.pubsub_mode} mode, "
            f"{where} at {url}",
        ]
        for child in self.children:
            lines.append(
                f"  {child.name}  http://{host}:{child.port}/   ws://{host}:{child.port}/socket"
                f"   (pid {child.proc.pid})"
            )
        lines.append(f"watch the traffic:  roost inspect --redis {url}")
        lines.append("Ctrl-C stops everything.")
        self.echo("\n".join(lines))
        with contextlib.suppress(Exception):
            sys.stdout.flush()

    # -- stopping -----------------------------------------------------------------------
    def stop(self) -> None:
        """Nodes first (SIGTERM, then SIGKILL after a grace period), then Redis."""
        self.stopping = True
        _terminate([c for c in self.children if c.alive], STOP_TIMEOUT)
        if self.redis is not None and self.redis.alive:
            _terminate([self.redis], 5.0)
        for child in [*self.children, *([self.redis] if self.redis else [])]:
            with contextlib.suppress(Exception):
                child.proc.wait(1)


def _terminate(children: list[Child], timeout: float) -> None:
    for child in children:
        with contextlib.suppress(ProcessLookupError):
            child.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for child in children:
        try:
            child.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            click.echo(f"roost cluster: {child.name} ignored SIGTERM; killing it", err=True)
            child.proc.kill()
            child.proc.wait()


def _popen(
    cmd: list[str], env: dict[str, str] | None = None, stdout: int | None = None
) -> subprocess.Popen[bytes]:
    """A child in its own process group (the terminal's Ctrl-C reaches only us) that
    also receives SIGTERM should this supervisor die (Linux)."""
    return subprocess.Popen(
        cmd, env=env, stdout=stdout, process_group=0, preexec_fn=_die_with_parent
    )


def _die_with_parent() -> None:
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def describe_exit(code: int | None) -> str:
    if code is None:
        return "no exit code"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
        return f"signal {-code}"
    return f"code {code}"


def connect_host(host: str) -> str:
    """Where to reach a server bound to ``host`` (wildcards mean loopback)."""
    return {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(host, host)


def port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_ping(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False
