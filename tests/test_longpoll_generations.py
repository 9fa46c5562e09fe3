"""Long-poll message shapes for both phoenix.js generations, chosen by the protocol version.

Phoenix picks the long-poll serializer from ``vsn`` (phoenix 1.3's long_poll.ex:
``serializer("1." <> _)`` and no vsn → ``LongPollSerializer``, ``"2." <> _`` →
``V2.LongPollSerializer``): a V1 session's poll carries each message as a JSON *object*
``{"topic","event","payload","ref"}`` (phoenix.js 1.2 does ``JSON.stringify(msg)`` on each),
a V2 session's as an encoded JSON *string* (phoenix.js ≥ 1.3 hands it on as it is).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from support import ServerProcess, start_redis, start_server

JS = Path(__file__).resolve().parent / "js"


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Any:
    redis = start_redis()
    logs = tmp_path_factory.mktemp("lp-generations")
    args = ["--redis", redis.url, "--longpoll-window", "1", "--probe-interval", "0.5"]
    nodes = [start_server(*args, node=n, log_dir=logs) for n in ("g1", "g2")]
    yield nodes
    for n in nodes:
        n.stop()
    redis.stop()


def lp(url: str, method: str = "GET", body: bytes | None = None) -> dict[str, Any]:
    req = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
        return json.loads(resp.read())  # type: ignore[no-any-return]


def poll_until(url: str, done: Any, polls: int = 8) -> list[Any]:
    got: list[Any] = []
    for _ in range(polls):
        polled = lp(url)
        assert polled["status"] in (200, 204), polled
        got += polled.get("messages", [])
        if done(got):
            break
    return got


def _v1(topic: str, event: str, payload: Any, ref: str | None) -> bytes:
    return json.dumps({"topic": topic, "event": event, "payload": payload, "ref": ref}).encode()


@pytest.mark.parametrize("vsn", ["1.0.0", None])
def test_v1_session_polls_objects_through_either_node(
    two_nodes: list[ServerProcess], vsn: str | None
) -> None:
    """Replies, pushes, broadcasts and presence of a V1 session (vsn 1.x or none) are objects,
    whichever node answers the poll (the relayed answer keeps them)."""
    g1, g2 = two_nodes
    query = f"?vsn={vsn}" if vsn else "?"
    opened = lp(f"{g1.url}/socket/longpoll{query}")
    assert opened["status"] == 410
    token = opened["token"]
    topic = f"rooms:gen1{vsn or 'none'}".replace(".", "")
    join = _v1(topic, "phx_join", {"user": "olde"}, "1")
    push = _v1(topic, "new:msg", {"body": "hi"}, "2")
    beat = _v1("phoenix", "heartbeat", {}, "3")
    for base, body in ((g2, join), (g1, push), (g2, beat)):
        assert lp(f"{base.url}/socket/longpoll{query}&token={token}", "POST", body) == {
            "status": 200
        }

    def complete(got: list[Any]) -> bool:
        events = [m.get("event") for m in got if isinstance(m, dict)]
        return events.count("phx_reply") >= 3 and {"new:msg", "presence_diff"} <= set(events)

    got = poll_until(f"{g2.url}/socket/longpoll{query}&token={token}", complete)
    got += poll_until(f"{g1.url}/socket/longpoll{query}&token={token}", lambda g: True, 1)
    assert got and all(isinstance(m, dict) for m in got), got
    assert all(set(m) == {"topic", "event", "payload", "ref"} for m in got), got
    by_event: dict[str, list[dict[str, Any]]] = {}
    for m in got:
        by_event.setdefault(m["event"], []).append(m)
    replies = {m["ref"]: m["payload"] for m in by_event["phx_reply"]}
    assert replies["1"]["status"] == "ok" and replies["1"]["response"]["node"] == "g1"
    assert replies["2"]["status"] == "ok" and replies["3"] == {"status": "ok", "response": {}}
    assert by_event["new:msg"][0]["payload"]["body"] == "hi"  # a broadcast
    assert by_event["new:msg"][0]["ref"] is None
    assert isinstance(by_event["presence_state"][0]["payload"], dict)  # a push
    assert "olde" in by_event["presence_diff"][0]["payload"]["joins"]  # a broadcast


def test_v2_session_polls_strings(two_nodes: list[ServerProcess]) -> None:
    g1, g2 = two_nodes
    base = f"{g1.url}/socket/longpoll?vsn=2.0.0"
    token = lp(base)["token"]
    join = b'["1","1","rooms:gen2","phx_join",{"user":"newe"}]'
    assert lp(f"{g2.url}/socket/longpoll?vsn=2.0.0&token={token}", "POST", join)["status"] == 200
    got = poll_until(
        f"{g2.url}/socket/longpoll?vsn=2.0.0&token={token}",
        lambda g: any("presence_state" in m for m in g),
    )
    assert got and all(isinstance(m, str) for m in got), got
    frames = [json.loads(m) for m in got]
    assert frames[0][:4] == ["1", "1", "rooms:gen2", "phx_reply"]


def test_phoenix_12_longpoll_across_two_nodes(two_nodes: list[ServerProcess]) -> None:
    """The real phoenix.js 1.2.1 LongPoll, its requests alternating between the nodes."""
    node = shutil.which("node")
    assert node, "node is required (scripts/test installs nodejs)"
    g1, g2 = two_nodes
    out = subprocess.run(
        [node, str(JS / "longpoll12.mjs"), g1.ws_url, g2.ws_url],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=JS,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout)
    assert result["version"].startswith("1.2.")
    assert result["shapes"] == ["event,payload,ref,topic"], result
    assert {"phx_reply", "new:msg", "presence_state", "presence_diff"} <= set(result["events"])
    assert result["online"] == ["olde", "wendy"], result
    assert all(count >= 3 for count in result["perHost"].values()), result
    for server in two_nodes:
        assert "Traceback" not in server.log()
