"""The long-poll transport: phoenix.js LongPoll across two nodes with no stickiness."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from support import RedisProcess, ServerProcess, free_port, start_server

JS = Path(__file__).resolve().parent / "js"


@pytest.fixture
def two_nodes(redis_server: RedisProcess, tmp_path: Path) -> Any:
    args = ["--redis", redis_server.url, "--longpoll-window", "2", "--probe-interval", "0.5"]
    nodes = [start_server(*args, node=n, log_dir=tmp_path) for n in ("l1", "l2")]
    yield nodes
    for n in nodes:
        n.stop()


def test_phoenix_longpoll_alternating_between_nodes(two_nodes: list[ServerProcess]) -> None:
    node = shutil.which("node")
    assert node, "node is required (scripts/test installs nodejs)"
    l1, l2 = two_nodes
    dead = f"ws://127.0.0.1:{free_port()}/socket"  # nothing listens: WebSocket fails
    out = subprocess.run(
        [node, str(JS / "longpoll.mjs"), l1.ws_url, l2.ws_url, dead],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout)
    assert all(count >= 3 for count in result["perHost"].values()), result
    assert any("falling back to LongPoll" in line for line in result["fallbackLog"]), result
    for server in two_nodes:
        assert "Traceback" not in server.log()


def lp(url: str, method: str = "GET", body: bytes | None = None) -> dict[str, Any]:
    req = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        req.add_header("Content-Type", "application/x-ndjson")
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
        return json.loads(resp.read())  # type: ignore[no-any-return]


def test_longpoll_protocol_by_hand(two_nodes: list[ServerProcess]) -> None:
    l1, l2 = two_nodes
    base1 = f"{l1.url}/socket/longpoll?vsn=2.0.0"
    base2 = f"{l2.url}/socket/longpoll?vsn=2.0.0"
    opened = lp(base1)
    assert opened["status"] == 410 and opened["token"].startswith("lp.")
    token = opened["token"]
    # Through the other node: a join, a heartbeat and a bad base64 line's neighbours.
    join = '["1","1","rooms:hand","phx_join",{"user":"hand"}]'
    beat = '[null,"2","phoenix","heartbeat",{}]'
    assert lp(f"{base2}&token={token}", "POST", f"{join}\n{beat}".encode()) == {"status": 200}
    got: list[Any] = []
    for _ in range(5):
        polled = lp(f"{base2}&token={token}")
        got += [json.loads(m) for m in polled.get("messages", [])]
        if any(f[3] == "presence_state" for f in got):
            break
    events = [f[3] for f in got]
    assert events[0] == "phx_reply" and events.count("phx_reply") == 2
    assert got[0][4]["status"] == "ok" and got[0][4]["response"]["node"] == "l1"
    assert "user:entered" in events and "presence_state" in events
    # An unknown session is gone (410) on either node.
    assert lp(f"{base2}&token=lp.nope")["status"] == 410
    assert lp(f"{base1}&token=lp.nope", "POST", beat.encode())["status"] == 410
    # Garbage closes the session: the next request says 410.
    assert lp(f"{base1}&token={token}", "POST", b"not base64 !!")["status"] == 410
    assert lp(f"{base1}&token={token}")["status"] == 410
