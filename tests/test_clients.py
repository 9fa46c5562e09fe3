"""Compatibility suite: real third-party Phoenix Channels clients against roost.

Each client is driven by a script (tests/js/compat-*.mjs for npm clients, tests/clients/
*_driver.py for PyPI clients) that puts alice on node 1 and bob on node 2 — or both on
node 1 for the one-node case — joins a room, checks presence where the client has it,
sends and receives. The two nodes share a real redis-server; one pair serves the module.
A driver prints one JSON line and exits 0, or exits 1 with ``FAIL: <reason>`` (plus a
frame trace for the npm clients), which becomes the assertion message here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support import RedisProcess, ServerProcess, start_redis, start_server

TESTS = Path(__file__).resolve().parent
JS = TESTS / "js"
CLIENTS_DIR = TESTS / "clients"
sys.path.insert(0, str(CLIENTS_DIR))
import envs  # noqa: E402

NPM_PACKAGES = [
    "phoenix",
    "phoenix12",
    "phoenix-channels",
    "phoenix-socket",
    "@supabase/realtime-js",
    "ws",
]
JS_TIMEOUT_MS = "10000"  # a driver's own deadline; the subprocess timeout is only a backstop
BACKSTOP_S = 40


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Two ``roost serve`` nodes (n1, n2) on one real redis-server, shared by the module."""
    redis: RedisProcess = start_redis()
    logs = tmp_path_factory.mktemp("logs")
    servers: list[ServerProcess] = []
    try:
        for name in ("n1", "n2"):
            args = ["--redis", redis.url, "--echo", "--realtime", "--msg-rate", "0"]
            servers.append(start_server(*args, node=name, log_dir=logs))
        one = (servers[0].ws_url, servers[0].ws_url)
        two = (servers[0].ws_url, servers[1].ws_url)
        yield {"one": one, "two": two}
    finally:
        for server in servers:
            server.stop()
        redis.stop()


@pytest.fixture(scope="module")
def node_bin() -> str:
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node and npm, "node and npm are required (scripts/test installs them)"
    missing = [p for p in NPM_PACKAGES if not (JS / "node_modules" / p / "package.json").is_file()]
    if missing:
        proc = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=JS, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, f"npm ci in {JS} failed:\n{proc.stdout}\n{proc.stderr}"
    return node


def run_driver(cmd: list[str], cwd: Path) -> dict[str, Any]:
    env = {**os.environ, "ROOST_JS_TIMEOUT_MS": JS_TIMEOUT_MS, "ROOST_CLIENT_DEADLINE_S": "15"}
    try:
        proc = subprocess.run(
            cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=BACKSTOP_S, check=False
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(
            f"{' '.join(cmd)} hung for {BACKSTOP_S} s\nstdout:\n{e.stdout!r}\nstderr:\n{e.stderr!r}"
        )
    detail = (
        f"{' '.join(cmd)} exited {proc.returncode}\nstderr:\n{proc.stderr}\nstdout:\n{proc.stdout}"
    )
    assert proc.returncode == 0, detail
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    result: dict[str, Any] = json.loads(lines[-1])
    assert result.get("ok") is True, detail
    return result


def check_nodes(result: dict[str, Any], topology: str) -> None:
    if "nodes" in result:
        assert result["nodes"] == (["n1", "n1"] if topology == "one" else ["n1", "n2"])


TOPOLOGIES = ["one", "two"]
PHOENIX_JS = [
    ("phoenix-1.8", "websocket"),
    ("phoenix-1.8", "longpoll"),
    ("phoenix-1.2", "websocket"),
    ("phoenix-1.2", "longpoll"),
    ("phoenix-channels", "websocket"),
    ("phoenix-socket", "websocket"),
    ("phoenix-socket", "longpoll"),
]


def test_client_pins() -> None:
    """Every client is pinned to an exact version (npm: package.json; PyPI: dev extras)."""
    deps = json.loads((JS / "package.json").read_text())["dependencies"]
    for name in ("phoenix-channels", "phoenix-socket", "@supabase/realtime-js"):
        assert deps[name][:1].isdigit() and not any(c in deps[name] for c in "^~<>=* "), name
    assert deps["@supabase/realtime-js"].startswith("2.")
    dev = tomllib.loads((TESTS.parent / "pyproject.toml").read_text())["project"]
    dev_pins = dev["optional-dependencies"]["dev"]
    for pin in envs.PINS["phoenix-clients"]:
        assert pin in dev_pins, pin


@pytest.mark.parametrize("topology", TOPOLOGIES)
@pytest.mark.parametrize(("client", "transport"), PHOENIX_JS)
def test_phoenix_js_clients(
    nodes: dict[str, Any], node_bin: str, client: str, transport: str, topology: str
) -> None:
    """npm Phoenix clients: join rooms:<name>, presence, push and receive new:msg.

    phoenix 1.2.1 and phoenix-socket 1.2.3 long-poll: their LongPoll passes each element of
    ``messages`` through ``JSON.stringify`` and expects objects; roost (before issue 15) sends
    JSON strings, so every frame decodes to a string and the join never gets its reply.
    phoenix-channels 1.0.0 has no LongPoll. Node has no XMLHttpRequest: tests/js/xhr-shim.mjs
    gives the 1.2-era Ajax one over fetch.
    """
    url1, url2 = nodes[topology]
    r = run_driver([node_bin, str(JS / "compat-phoenix.mjs"), client, transport, url1, url2], JS)
    assert (r["client"], r["transport"]) == (client, transport)
    assert r["presence"] == ["alice", "bob"]
    check_nodes(r, topology)
    assert r["origins"] == (["n1", "n1"] if topology == "one" else ["n1", "n2"])


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_supabase_realtime_js(nodes: dict[str, Any], node_bin: str, topology: str) -> None:
    """@supabase/realtime-js 2.x: realtime:<name>, broadcast (self + ack), presence track."""
    url1, url2 = nodes[topology]
    r = run_driver([node_bin, str(JS / "compat-supabase.mjs"), url1, url2], JS)
    assert r["version"].startswith("2.")
    assert r["topic"].startswith("realtime:")
    assert r["presence"] == ["alice", "bob"]


@pytest.mark.parametrize("topology", TOPOLOGIES)
@pytest.mark.parametrize("client", ["phxsocket", "chunnel"])
def test_pypi_phoenix_clients(nodes: dict[str, Any], client: str, topology: str) -> None:
    """phxsocket 0.1.5 and chunnel 0.1.0 (V1 JSON, ``ref`` as a JSON number): join, presence
    (from presence_state/presence_diff frames; neither has a Presence helper), push, receive.

    Client quirks: phxsocket's ``wait_for_response`` never times out; chunnel prints its URL
    on stdout, sends no heartbeat, and turns an error reply into a reasonless Exception.
    """
    python = envs.python_for("phoenix-clients")
    url1, url2 = nodes[topology]
    r = run_driver([python, str(CLIENTS_DIR / f"{client}_driver.py"), url1, url2], CLIENTS_DIR)
    assert r["client"] == client
    check_nodes(r, topology)


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_phx_events(nodes: dict[str, Any], topology: str) -> None:
    """phx-events 0.4.1 (listen-only; V1 JSON sent in *binary* frames) receives a message and
    sees presence from a raw-frame client on the other node. Its pin ``websockets ~= 9.1``
    cannot run on Python >= 3.10 (client bug), so it runs next to websockets 10.4."""
    python = envs.python_for("phx-events")
    url1, url2 = nodes[topology]
    r = run_driver([python, str(CLIENTS_DIR / "phx_events_driver.py"), url1, url2], CLIENTS_DIR)
    check_nodes(r, topology)
    assert r["origins"] == (["n1"] if topology == "one" else ["n2"])


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_supabase_realtime_py(nodes: dict[str, Any], topology: str) -> None:
    """realtime 2.x (PyPI): realtime:<name>, broadcast (self + ack), presence track."""
    python = envs.python_for("phoenix-clients")
    url1, url2 = nodes[topology]
    r = run_driver([python, str(CLIENTS_DIR / "realtime_driver.py"), url1, url2], CLIENTS_DIR)
    assert r["topic"].startswith("realtime:")


# ------------------------------------------------------------------ raw frames for client bugs


async def test_v1_frames_have_only_the_v1_keys(nodes: dict[str, Any]) -> None:
    """phx-events builds every incoming message with ``make_message(**message)`` and phxsocket
    with ``Message(msg["event"], msg["topic"], msg["payload"], msg["ref"])``: a V1 frame
    must carry exactly topic, event, payload and ref (null included), like Phoenix's
    V1.JSONSerializer. A ``join_ref`` key would crash phx-events' receive loop with TypeError.
    Its join also has ``"ref": null`` and it matches the reply by topic."""
    from rawws import RawSocket

    url1, url2 = nodes["two"]
    topic = "rooms:v1keys"
    sender = await RawSocket.connect(url2, "vsn=1.0.0")
    listener = await RawSocket.connect(url1, "vsn=1.0.0&user=ann")
    try:
        await listener.send_raw(
            json.dumps({"topic": topic, "event": "phx_join", "payload": {}, "ref": None})
        )
        reply = await listener.recv_until(lambda m: m.get("event") == "phx_reply")
        assert reply["ref"] is None and reply["payload"]["status"] == "ok", reply
        await sender.send_raw(
            json.dumps({"topic": topic, "event": "phx_join", "payload": {"user": "bo"}, "ref": "1"})
        )
        await sender.recv_until(lambda m: m.get("event") == "phx_reply")
        await sender.send_raw(
            json.dumps({"topic": topic, "event": "new:msg", "payload": {"body": "hi"}, "ref": "2"})
        )
        frames = [reply]
        frames.append(await listener.recv_until(lambda m: m.get("event") == "new:msg"))
        for frame in frames:
            assert sorted(frame) == ["event", "payload", "ref", "topic"], frame
        assert frames[-1]["ref"] is None and frames[-1]["payload"]["node"] == "n2"
    finally:
        await sender.close()
        await listener.close()
