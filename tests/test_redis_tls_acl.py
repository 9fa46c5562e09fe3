"""Redis with TLS (mutual, certificates made by the test) and with an ACL user + password.

Each case starts its own ``redis-server`` and two ``roost serve`` nodes that must
exchange a chat message through it; a node with the wrong credentials (no client
certificate, a wrong password) must never become healthy, and passwords never show
in a node's log.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from roost.client import Client

from support import ServerProcess, free_port, start_redis, start_server

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None or shutil.which("openssl") is None,
    reason="needs redis-server and openssl",
)

PASSWORD = "s3cret-Pw-7f2a"


# -- certificates (openssl CLI) ------------------------------------------------------------


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def make_certs(d: Path) -> None:
    """ca.pem/ca.key; server.pem/server.key for 127.0.0.1; client.pem/client.key."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=roost test CA", cwd=d,
    )  # fmt: skip
    (d / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
    )
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name, cn in (("server", "127.0.0.1"), ("client", "roost-node")):
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}",
                cwd=d)  # fmt: skip
        openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
            cwd=d,
        )  # fmt: skip


def tls_ping(port: int, d: Path) -> bool:
    ctx = ssl.create_default_context(cafile=str(d / "ca.pem"))
    ctx.load_cert_chain(str(d / "client.pem"), str(d / "client.key"))
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=1) as raw,
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s,
        ):
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except (OSError, ssl.SSLError):
        return False


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    certs = tmp_path / "certs"
    certs.mkdir()
    make_certs(certs)
    port = free_port()
    proc = subprocess.Popen(
        [
            "redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
            "--tls-cert-file", str(certs / "server.pem"),
            "--tls-key-file", str(certs / "server.key"),
            "--tls-ca-cert-file", str(certs / "ca.pem"),
            "--tls-auth-clients", "yes",
            "--save", "", "--appendonly", "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not tls_ping(port, certs):
            assert proc.poll() is None, "redis-server (TLS) exited"
            assert time.monotonic() < deadline, "redis-server (TLS) did not start"
            time.sleep(0.05)
        yield port, certs
    finally:
        proc.kill()
        proc.wait(10)


# -- helpers -------------------------------------------------------------------------------


async def exchange(a: ServerProcess, b: ServerProcess) -> None:
    """A message sent on node a reaches a member of the same room on node b."""
    async with Client(a.ws_url, {"user": "ann"}) as ca, Client(b.ws_url, {"user": "bob"}) as cb:
        got: asyncio.Queue[Any] = asyncio.Queue()
        room_b = cb.channel("rooms:secure", {"user": "bob"})
        room_b.on("new:msg", got.put_nowait)
        assert (await room_b.join())["node"] == "b"
        room_a = ca.channel("rooms:secure", {"user": "ann"})
        await room_a.join()
        reply = await room_a.push("new:msg", {"body": "over the wire"})
        assert reply.ok, reply
        async with asyncio.timeout(10):
            msg = await got.get()
        assert (msg["body"], msg["user"], msg["node"]) == ("over the wire", "ann", "a")


def never_healthy(server: ServerProcess, seconds: float = 3.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{server.url}/healthz", timeout=0.5):
                raise AssertionError(f"node served /healthz:\n{server.log()}")
        except OSError:
            time.sleep(0.1)


def until_logged(server: ServerProcess, text: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in server.log():
        assert time.monotonic() < deadline, f"{text!r} not logged:\n{server.log()}"
        time.sleep(0.05)


# -- TLS ---------------------------------------------------------------------------------


async def test_nodes_over_mutual_tls(tls_redis: tuple[int, Path], tmp_path: Path) -> None:
    port, certs = tls_redis
    url = f"rediss://127.0.0.1:{port}"
    tls = [
        "--redis-ca", str(certs / "ca.pem"),
        "--redis-cert", str(certs / "client.pem"),
        "--redis-key", str(certs / "client.key"),
    ]  # fmt: skip
    started: list[ServerProcess] = []
    try:
        for node in ("a", "b"):
            started.append(
                start_server("--redis", url, *tls, "--msg-rate", "0", node=node, log_dir=tmp_path)
            )
        await exchange(*started)
        # No client certificate: the server refuses the handshake; the node keeps retrying
        # and never opens its port.
        no_cert = start_server(
            "--redis", url, "--redis-ca", str(certs / "ca.pem"),
            node="c", log_dir=tmp_path, wait=False,
        )  # fmt: skip
        started.append(no_cert)
        await asyncio.to_thread(until_logged, no_cert, "redis unreachable")
        await asyncio.to_thread(never_healthy, no_cert)
        # A server certificate this node does not trust (system CAs only): refused too.
        untrusted = start_server("--redis", url, node="d", log_dir=tmp_path, wait=False)
        started.append(untrusted)
        await asyncio.to_thread(until_logged, untrusted, "redis unreachable")
        await asyncio.to_thread(never_healthy, untrusted, 1.0)
        for server in started[:2]:
            assert "Traceback" not in server.log()
    finally:
        for server in started:
            server.stop()


# -- ACL -----------------------------------------------------------------------------------


async def test_nodes_with_an_acl_user(tmp_path: Path) -> None:
    redis = start_redis(
        "--user", "default", "off",
        "--user", "roost", "on", f">{PASSWORD}", "~*", "&*", "+@all",
    )  # fmt: skip
    started: list[ServerProcess] = []
    try:
        url = f"redis://roost:{PASSWORD}@127.0.0.1:{redis.port}"
        for node in ("a", "b"):
            started.append(
                start_server("--redis", url, "--msg-rate", "0", node=node, log_dir=tmp_path)
            )
        await exchange(*started)
        wrong = start_server(
            "--redis", f"redis://roost:not-{PASSWORD}@127.0.0.1:{redis.port}",
            node="w", log_dir=tmp_path, wait=False,
        )  # fmt: skip
        started.append(wrong)
        no_user = start_server(
            "--redis", f"redis://127.0.0.1:{redis.port}", node="n", log_dir=tmp_path, wait=False
        )
        started.append(no_user)
        for server in (wrong, no_user):
            await asyncio.to_thread(until_logged, server, "redis unreachable")
        await asyncio.to_thread(never_healthy, wrong)
        await asyncio.to_thread(never_healthy, no_user, 0.5)
        for server in started:
            log = server.log()
            assert PASSWORD not in log, log  # URLs are logged as roost:***@host
        assert f"roost:***@127.0.0.1:{redis.port}" in started[0].log()
        assert f"roost:***@127.0.0.1:{redis.port}" in wrong.log()
    finally:
        for server in started:
            server.stop()
        redis.stop()


async def test_requirepass(tmp_path: Path) -> None:
    """The classic form: ``requirepass`` and a password-only URL (``redis://:pw@host``)."""
    redis = start_redis("--requirepass", PASSWORD)
    started: list[ServerProcess] = []
    try:
        url = f"redis://:{PASSWORD}@127.0.0.1:{redis.port}"
        for node in ("a", "b"):
            started.append(
                start_server("--redis", url, "--msg-rate", "0", node=node, log_dir=tmp_path)
            )
        await exchange(*started)
        for server in started:
            assert PASSWORD not in server.log()
    finally:
        for server in started:
            server.stop()
        redis.stop()
