"""Bad input: every kind gets an error reply or a documented close code; nothing crashes."""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import pytest

from roost.protocol import binary

from rawws import RawSocket


@pytest.fixture
async def served(local_server: Any, caplog: pytest.LogCaptureFixture) -> Any:
    caplog.set_level(logging.INFO)
    server = await local_server()
    bystander = await RawSocket.connect(server.ws_url)
    await bystander.join("rooms:lobby", "1", {"user": "bystander"})
    yield server, bystander
    # The bystander is still served: it gets a reply and a broadcast.
    await bystander.send("1", "77", "rooms:lobby", "new:msg", {"body": "still here"})
    frame = await bystander.recv_until(lambda f: f[1] == "77")
    assert frame[4]["status"] == "ok"
    await bystander.close()
    problems = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not problems, [r.getMessage() for r in problems]
    assert "Traceback" not in caplog.text


async def _closed_with(server: Any, data: str | bytes, code: int) -> None:
    ws = await RawSocket.connect(server.ws_url)
    await ws.send_raw(data)
    assert await ws.expect_closed() == code
    await ws.close()


@pytest.mark.parametrize(
    "frame",
    ["{not json", "[]", '["1","2","t"]', '["1","2","t","e",{},"extra"]', "42", '"string"'],
)
async def test_unanswerable_frames_close_1007(served: Any, frame: str) -> None:
    server, _ = served
    await _closed_with(server, frame, 1007)


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ('["1","2","rooms:lobby",7,{}]', "event must be a non-empty string"),
        ('["1","2","rooms:lobby","",{}]', "event must be a non-empty string"),
        (
            '[[5],"2","rooms:lobby","new:msg",{}]',
            "join_ref must be a string, number, boolean or null",
        ),
    ],
)
async def test_wrong_types_get_error_reply(served: Any, frame: str, reason: str) -> None:
    server, _ = served
    ws = await RawSocket.connect(server.ws_url)
    await ws.send_raw(frame)
    reply = await ws.recv()
    assert reply[1:4] == ["2", "rooms:lobby", "phx_reply"]
    assert reply[4] == {"status": "error", "response": {"reason": reason}}
    await ws.close()


async def test_unknown_event_on_unjoined_topic(served: Any) -> None:
    server, _ = served
    ws = await RawSocket.connect(server.ws_url)
    await ws.send(None, "1", "rooms:other", "whatever", {})
    assert (await ws.recv())[4] == {"status": "error", "response": {"reason": "unmatched topic"}}
    await ws.close()


async def test_one_megabyte_frame_closes_1009(served: Any) -> None:
    server, _ = served
    big = '["1","2","rooms:lobby","new:msg",{"body":"' + "x" * (1024 * 1024) + '"}]'
    await _closed_with(server, big, 1009)


async def test_binary_lengths_past_end_close_1007(served: Any) -> None:
    server, _ = served
    await _closed_with(server, b"\x00\x09\x09\x09\x09abc", 1007)


async def test_binary_over_v1_closes_1007(served: Any) -> None:
    """V1 reads a binary frame as JSON (as Phoenix does): a V2 binary push is not JSON."""
    server, _ = served
    ws = await RawSocket.connect(server.ws_url, "vsn=1.0.0")
    await ws.send_raw(binary.encode_client_push("1", "2", "rooms:lobby", "new:msg", b"x"))
    assert await ws.expect_closed() == 1007
    await ws.close()


async def test_text_frame_not_utf8_closes_1007(served: Any) -> None:
    server, _ = served
    ws = await RawSocket.connect(server.ws_url)
    await ws.ws.send_frame(b'["1","2","t","e",{"x":"\xff\xfe"}]', aiohttp.WSMsgType.TEXT)
    assert await ws.expect_closed() == 1007
    await ws.close()


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"body": ""}, "empty body"),
        ({"body": "   "}, "empty body"),
        ({}, "empty body"),
        ({"body": "x" * 2001}, "body too long"),
        ({"body": 5}, "body must be a string"),
        ("just a string", "payload must be an object"),
    ],
)
async def test_chat_rejects_bad_messages(served: Any, payload: Any, reason: str) -> None:
    _, bystander = served
    await bystander.send("1", "9", "rooms:lobby", "new:msg", payload)
    reply = await bystander.recv_until(lambda f: f[1] == "9")
    assert reply[4] == {"status": "error", "response": {"reason": reason}}


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("rooms:bad room", {}, "invalid room"),
        ("rooms:", {}, "invalid room"),
        ("rooms:" + "x" * 65, {}, "invalid room"),
        ("rooms:ok", {"user": "u" * 33}, "user name too long"),
        ("rooms:ok", {"user": 12}, "invalid user"),
    ],
)
async def test_chat_rejects_bad_joins(served: Any, topic: str, payload: Any, reason: str) -> None:
    server, _ = served
    ws = await RawSocket.connect(server.ws_url)
    reply = await ws.join(topic, "1", payload)
    assert reply[4] == {"status": "error", "response": {"reason": reason}}
    await ws.close()
