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
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/socket"

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


def worker_pids(server: ServerProcess) -> dict[int, int]:
    """index → pid of the live workers of a ``--workers`` server (from its log and /proc)."""
    pid = server.proc.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    found: dict[int, int] = {}
    for line in server.log().splitlines():
        if "roost.workers: worker w" in line and " started (pid " in line:
            index = int(line.split("worker w")[1].split()[0])
            child = line.split("(pid ")[1].split(")")[0]
            if child in children:
                found[index] = int(child)
    return found


UNLIMITED_CLIENTS = {
    "ROOST_CONN_RATE": "0",
    "ROOST_MAX_CONNECTIONS_PER_IP": "0",
    "ROOST_JOIN_RATE_PER_IP": "0",
}


def start_server(
    *args: str,
    port: int | None = None,
    node: str = "test-node",
    env: dict[str, str] | None = None,
    log_dir: Path | None = None,
    wait: bool = True,
    host: str = "127.0.0.1",
    wrap: list[str] | None = None,
) -> ServerProcess:
    """Start ``python -m roost serve`` on 127.0.0.1 and wait until /healthz answers.

    ``host`` and ``wrap`` (a command prefix, e.g. ``ip netns exec NS``, that execs the rest)
    run it in a network namespace of the fault suite's (tests/faults/netlab.py)."""
    port = port or free_port()
    log_dir = log_dir or Path(os.environ.get("TMPDIR", "/tmp"))
    log_path = log_dir / f"roost-{node}-{port}-{time.monotonic_ns()}.log"
    # Every test client comes from 127.0.0.1: the per-client limits (issue 14) are off unless
    # a test turns them on with flags (flags win over the environment).
    full_env = {**os.environ, **UNLIMITED_CLIENTS, **(env or {})}
    full_env.pop("PORT", None)
    full_env.pop("NODE", None)
    cmd = [
        *(wrap or []), sys.executable, "-m", "roost", "serve",
        "--host", host, "--port", str(port), "--node", node, *args,
    ]  # fmt: skip
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=full_env)
    server = ServerProcess(port, proc, log_path, list(args), host)
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


@dataclass
class SentinelTopology:
    """A master, its replicas and sentinels watching them, all on free loopback ports."""

    master: RedisProcess
    replicas: list[RedisProcess]
    sentinel_ports: list[int]
    sentinels: list[subprocess.Popen[bytes]]
    name: str = "mymaster"
    sentinel_tls_ports: list[int] = field(default_factory=list)

    def url(self, scheme: str = "redis+sentinel", auth: str = "") -> str:
        ports = self.sentinel_tls_ports if scheme.startswith("rediss") else self.sentinel_ports
        hosts = ",".join(f"127.0.0.1:{p}" for p in ports)
        return f"{scheme}://{auth}{hosts}/{self.name}"

    def master_port(self) -> int:
        """The master's port as the first answering sentinel sees it."""
        import redis

        for port in self.sentinel_ports:
            try:
                with redis.Redis(port=port, socket_timeout=0.5) as r:
                    found = r.sentinel_get_master_addr_by_name(self.name)
            except (redis.RedisError, OSError):
                continue
            if found:
                return int(found[1])
        raise RuntimeError("no sentinel answered")

    def stop(self) -> None:
        for proc in self.sentinels:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        for redis in [self.master, *self.replicas]:
            redis.stop()


def start_sentinel_topology(
    workdir: Path,
    *,
    replicas: int = 1,
    sentinels: int = 3,
    down_after_ms: int = 1000,
    failover_timeout_ms: int = 3000,
    name: str = "mymaster",
    redis_args: tuple[str, ...] = (),
    sentinel_conf: str = "",
    sentinel_password: str | None = None,
    tls_dir: Path | None = None,
) -> SentinelTopology:
    """A master with ``replicas`` replicas and ``sentinels`` sentinels (quorum: a
    majority) on loopback, once every sentinel knows every replica and sentinel.
    ``redis_args`` go to every redis-server, ``sentinel_conf`` lines to every sentinel
    (``sentinel_password``: the sentinels' own, for the readiness check). With
    ``tls_dir`` (server.pem/key, client.pem/key, ca.pem as tests/test_redis_tls_acl.py
    makes them) every process also listens on a TLS port, replication and the
    sentinels' links use TLS, and the sentinels report the master's TLS port."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not found: scripts/test installs it (apt-get)")
    tls: dict[str, str] = {}
    if tls_dir is not None:
        tls = {
            "tls-cert-file": "server.pem", "tls-key-file": "server.key",
            "tls-ca-cert-file": "ca.pem", "tls-client-cert-file": "client.pem",
            "tls-client-key-file": "client.key",
        }  # fmt: skip
        tls = {key: str(tls_dir / value) for key, value in tls.items()}
        tls |= {"tls-replication": "yes", "tls-auth-clients": "optional"}

    def tls_port() -> list[str]:
        args = [arg for k, v in tls.items() for arg in (f"--{k}", v)]
        return ["--tls-port", str(free_port()), *args] if tls else []

    # A replica's sync writes dump.rdb (in workdir); no 5 s wait for more replicas.
    redis_args = ("--dir", str(workdir), "--repl-diskless-sync-delay", "0", *redis_args)
    master_args = [*redis_args, *tls_port()]
    master = start_redis(*master_args)
    watched = int(master_args[master_args.index("--tls-port") + 1]) if tls else master.port
    copies = [
        start_redis(*redis_args, *tls_port(), "--replicaof", "127.0.0.1", str(watched))
        for _ in range(replicas)
    ]
    ports = [free_port() for _ in range(sentinels)]
    tls_ports = [free_port() for _ in ports] if tls else []
    procs = []
    for i, port in enumerate(ports):
        conf = workdir / f"sentinel-{port}.conf"
        lines = "".join(f"{k} {v}\n" for k, v in tls.items())
        if tls:
            lines += f"tls-port {tls_ports[i]}\n"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {workdir}\n{lines}"
            f"sentinel monitor {name} 127.0.0.1 {watched} {sentinels // 2 + 1}\n"
            f"sentinel down-after-milliseconds {name} {down_after_ms}\n"
            f"sentinel failover-timeout {name} {failover_timeout_ms}\n"
            f"sentinel parallel-syncs {name} 1\n{sentinel_conf}"
        )
        procs.append(
            subprocess.Popen(
                [binary, str(conf), "--sentinel"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    topology = SentinelTopology(master, copies, ports, procs, name, tls_ports)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if replicas_online(master.port, replicas, redis_args) and all(
            _sentinel_sees(port, name, replicas, sentinels - 1, sentinel_password) for port in ports
        ):
            return topology
        time.sleep(0.1)
    topology.stop()
    raise RuntimeError("the sentinels did not discover the topology")


def replicas_online(port: int, count: int, redis_args: tuple[str, ...] = ()) -> bool:
    """The master on ``port`` counts ``count`` replicas online (a replica's link is up
    before the master counts it: WAIT answers fewer until its first acknowledgement)."""
    import redis

    password = (
        redis_args[redis_args.index("--requirepass") + 1] if "--requirepass" in redis_args else None
    )
    try:
        with redis.Redis(port=port, socket_timeout=0.5, password=password) as r:
            r.set("test:replicas-online", 1, px=1000)  # WAIT counts acks of a write
            return int(r.wait(count, 100)) >= count
    except (redis.RedisError, OSError):
        return False


def _sentinel_sees(
    port: int, name: str, replicas: int, others: int, password: str | None = None
) -> bool:
    """The sentinel on ``port`` knows ``replicas`` replicas and ``others`` sentinels."""
    import redis

    try:
        with redis.Redis(port=port, socket_timeout=0.5, password=password) as r:
            info = r.sentinel_master(name)
    except (redis.RedisError, OSError):
        return False
    return bool(info["num-slaves"] >= replicas and info["num-other-sentinels"] >= others)


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

    from roost_bench.rediscluster import cluster_port

    workdir = Path(tempfile.mkdtemp(prefix="roost-cluster-"))
    nodes = []
    for _ in range(masters * (1 + replicas)):
        port = cluster_port()  # the bench's: a free port whose bus port (+10000) is free
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
