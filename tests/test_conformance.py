"""Conformance with Phoenix for third-party clients, with raw frames on a real node.

- Refs and join_refs may be any JSON scalar (phxsocket and chunnel send numbers): Phoenix
  echoes the value it was given, unchanged, in replies, ``phx_close`` and ``phx_error``,
  and compares a join_ref exactly (``===``: ``1`` is neither ``"1"`` nor ``1.0``).
- With the V1 serializer a binary WebSocket frame holding JSON is decoded as JSON
  (Phoenix's V1 ``decode!`` ignores the opcode; phx-events sends its frames so); replies
  are text. With V2 a binary frame stays Phoenix's binary push format.

Every reply is compared as the exact text the server wrote: ``1 == 1.0 == True`` in
Python, so decoded values could not tell the types apart.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from roost.protocol import V2, Encoded, binary, same_ref
from roost.protocol.message import ref_text

from rawws import RawSocket
from support import ServerProcess

OK = '{"status":"ok","response":{}}'


class Raw:
    """A raw WebSocket that reads the exact text of each server frame."""

    def __init__(self, ws: RawSocket) -> None:
        self.ws = ws

    @classmethod
    async def connect(cls, server: ServerProcess, query: str = "vsn=2.0.0") -> Raw:
        return cls(await RawSocket.connect(server.ws_url, query))

    async def send(self, frame: str, *, as_binary: bool = False) -> None:
        await self.ws.send_raw(frame.encode() if as_binary else frame)

    async def text(self, timeout: float = 5.0) -> str:
        msg = await self.ws.ws.receive(timeout=timeout)
        assert msg.type is aiohttp.WSMsgType.TEXT, f"expected a text frame, got {msg}"
        return str(msg.data)

    async def binary(self, timeout: float = 5.0) -> bytes:
        msg = await self.ws.ws.receive(timeout=timeout)
        assert msg.type is aiohttp.WSMsgType.BINARY, f"expected a binary frame, got {msg}"
        return bytes(msg.data)

    async def closed(self) -> tuple[int | None, str]:
        """The close code and reason the server sent."""
        while True:
            msg = await self.ws.ws.receive(timeout=5.0)
            if msg.type is aiohttp.WSMsgType.CLOSE:
                return msg.data, str(msg.extra or "")
            if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                return self.ws.ws.close_code, ""
            assert msg.type not in (aiohttp.WSMsgType.ERROR,), msg

    async def close(self) -> None:
        await self.ws.close()


@pytest.fixture
async def raw(roost_server: ServerProcess) -> AsyncIterator[Any]:
    opened: list[Raw] = []

    async def connect(query: str = "vsn=2.0.0") -> Raw:
        sock = await Raw.connect(roost_server, query)
        opened.append(sock)
        return sock

    yield connect
    for sock in opened:
        await sock.close()


def v1(topic: str, event: str, payload: str, ref: str, join_ref: str | None = None) -> str:
    head = f'{{"topic":"{topic}","event":"{event}","payload":{payload},"ref":{ref}'
    return head + ("}" if join_ref is None else f',"join_ref":{join_ref}}}')


def v1_reply(topic: str, ref: str, response: str = "{}", status: str = "ok") -> str:
    body = f'{{"status":"{status}","response":{response}}}'
    return f'{{"topic":"{topic}","event":"phx_reply","payload":{body},"ref":{ref}}}'


# -- V2: refs of every scalar type ---------------------------------------------------------

# (join_ref, ref of the push, ref of the leave) as JSON text
SCALARS = [
    pytest.param("1", "2", "3", id="integers"),
    pytest.param("1.5", "2.25", "-3.0", id="floats"),
    pytest.param("null", "2", "3", id="null-join_ref"),
    pytest.param("true", "false", "0", id="booleans"),
    pytest.param('"1"', "2", '"x"', id="mixed"),
    pytest.param("12345678901234", "-7", "1e+20", id="big"),
]


@pytest.mark.parametrize(("jref", "ref", "leave"), SCALARS)
async def test_v2_refs_echoed_unchanged(raw: Any, jref: str, ref: str, leave: str) -> None:
    ws = await raw()
    await ws.send(f'[{jref},{jref},"echo:v2","phx_join",{{}}]')
    joined = await ws.text()
    assert joined.startswith(f'[{jref},{jref},"echo:v2","phx_reply",{{"status":"ok"')
    await ws.send(f'[{jref},{ref},"echo:v2","echo",{{"n":1}}]')
    assert (
        await ws.text()
        == f'[{jref},{ref},"echo:v2","phx_reply",{{"status":"ok","response":{{"n":1}}}}]'
    )
    await ws.send(f'[null,{ref},"echo:v2","echo",{{"n":2}}]')  # a null join_ref is always current
    assert (
        await ws.text()
        == f'[{jref},{ref},"echo:v2","phx_reply",{{"status":"ok","response":{{"n":2}}}}]'
    )
    await ws.send(f'[{jref},{leave},"echo:v2","phx_leave",{{}}]')
    assert await ws.text() == f'[{jref},{leave},"echo:v2","phx_reply",{OK}]'
    assert await ws.text() == f'[{jref},{jref},"echo:v2","phx_close",{{}}]'


async def test_v2_numeric_heartbeat_and_unmatched(raw: Any) -> None:
    ws = await raw()
    await ws.send('[null,7,"phoenix","heartbeat",{}]')
    assert await ws.text() == f'[null,7,"phoenix","phx_reply",{OK}]'
    await ws.send('[3,4,"nowhere:x","phx_join",{}]')
    assert await ws.text() == (
        '[3,4,"nowhere:x","phx_reply",{"status":"error","response":{"reason":"unmatched topic"}}]'
    )
    await ws.send('[3,5,"echo:notjoined","phx_leave",{}]')
    assert await ws.text() == f'[3,5,"echo:notjoined","phx_reply",{OK}]'


async def test_v2_numeric_refs_on_duplicate_join_and_crash(raw: Any) -> None:
    ws = await raw()
    await ws.send('[1,1,"echo:dup","phx_join",{}]')
    assert (await ws.text()).startswith('[1,1,"echo:dup","phx_reply"')
    await ws.send('[2,2,"echo:dup","phx_join",{}]')
    assert await ws.text() == '[1,1,"echo:dup","phx_close",{}]'
    assert (await ws.text()).startswith('[2,2,"echo:dup","phx_reply"')
    await ws.send('[2,3,"echo:dup","crash",{}]')
    assert await ws.text() == '[2,2,"echo:dup","phx_error",{}]'


async def test_stale_numeric_join_ref_dropped_exactly_as_phoenix(raw: Any) -> None:
    """Phoenix compares join_refs with ``===``: after a join with ``1``, the refs ``"1"``,
    ``1.0`` and ``true`` are stale (dropped without an answer), and so is ``1`` after a
    rejoin with ``2``."""
    ws = await raw()
    await ws.send('[1,1,"echo:stale","phx_join",{}]')
    assert (await ws.text()).startswith('[1,1,"echo:stale","phx_reply"')
    for stale in ('"1"', "1.0", "true"):
        await ws.send(f'[{stale},10,"echo:stale","echo",{{}}]')
    await ws.send('[1,11,"echo:stale","echo",{}]')
    assert await ws.text() == f'[1,11,"echo:stale","phx_reply",{OK}]'  # 10s never answered
    await ws.send('[2,2,"echo:stale","phx_join",{}]')
    assert await ws.text() == '[1,1,"echo:stale","phx_close",{}]'
    assert (await ws.text()).startswith('[2,2,"echo:stale","phx_reply"')
    await ws.send('[1,12,"echo:stale","echo",{}]')  # the old join's ref: stale
    await ws.send('[1,13,"echo:stale","phx_leave",{}]')  # a stale leave: dropped too
    await ws.send('[2,14,"echo:stale","echo",{}]')
    assert await ws.text() == f'[2,14,"echo:stale","phx_reply",{OK}]'


async def test_v2_binary_push_on_a_numeric_join(raw: Any) -> None:
    """A binary frame carries refs as text: the binary reply gets Phoenix's
    ``to_string`` of the numeric join_ref, and a binary push whose join_ref is the text
    ``"1"`` is stale for a join made with the number ``1`` (as in Phoenix)."""
    ws = await raw()
    await ws.send('[1,1,"echo:bin","phx_join",{}]')
    assert (await ws.text()).startswith('[1,1,"echo:bin","phx_reply"')
    await ws.ws.send_raw(binary.encode_client_push("1", "8", "echo:bin", "bin", b"stale"))
    await ws.ws.send_raw(binary.encode_client_push(None, "9", "echo:bin", "bin", b"abc"))
    reply = binary.decode_server(await ws.binary())
    assert (reply.join_ref, reply.ref, reply.topic) == ("1", "9", "echo:bin")
    assert reply.payload == {"status": "ok", "response": b"cba"}


# -- V1 --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("jref", "ref", "leave"), SCALARS)
async def test_v1_refs_echoed_unchanged(raw: Any, jref: str, ref: str, leave: str) -> None:
    ws = await raw("vsn=1.0.0")
    await ws.send(v1("echo:v1", "phx_join", "{}", jref, jref))
    joined = orjson.loads(await ws.text())
    assert joined["payload"]["status"] == "ok"
    await ws.send(v1("echo:v1", "echo", '{"n":1}', ref, jref))
    assert await ws.text() == v1_reply("echo:v1", ref, '{"n":1}')
    await ws.send(v1("echo:v1", "phx_leave", "{}", leave, jref))
    assert await ws.text() == v1_reply("echo:v1", leave)
    assert await ws.text() == v1("echo:v1", "phx_close", "{}", jref)


async def test_v1_join_reply_ref_exact(raw: Any) -> None:
    ws = await raw("")  # no vsn at all: V1
    await ws.send(v1("echo:v1x", "phx_join", "{}", "1", "1"))
    text = await ws.text()
    assert text.startswith('{"topic":"echo:v1x","event":"phx_reply","payload":{"status":"ok"')
    assert text.endswith(',"ref":1}')


# -- V1 JSON in binary frames (phx-events) --------------------------------------------------


@pytest.mark.parametrize("query", ["vsn=1.0.0", ""])
async def test_v1_json_in_binary_frames(raw: Any, query: str) -> None:
    ws = await raw(query)
    await ws.send(v1("echo:b1", "phx_join", "{}", '"1"', '"1"'), as_binary=True)
    joined = orjson.loads(await ws.text())  # answered, and as text
    assert (joined["ref"], joined["payload"]["status"]) == ("1", "ok")
    await ws.send(v1("echo:b1", "echo", '{"hi":1}', "2", '"1"'), as_binary=True)
    assert await ws.text() == v1_reply("echo:b1", "2", '{"hi":1}')
    await ws.send(v1("phoenix", "heartbeat", "{}", '"3"'), as_binary=True)
    assert await ws.text() == v1_reply("phoenix", '"3"')
    await ws.send(v1("echo:b1", "echo", '{"t":1}', "4", '"1"'))  # text still works alongside
    assert await ws.text() == v1_reply("echo:b1", "4", '{"t":1}')


async def test_v2_binary_frames_stay_binary_pushes(raw: Any) -> None:
    ws = await raw()
    await ws.send('["1","1","echo:b2","phx_join",{}]')
    assert (await ws.text()).startswith('["1","1","echo:b2","phx_reply"')
    await ws.ws.send_raw(binary.encode_client_push("1", "2", "echo:b2", "bin", b"xyz"))
    reply = binary.decode_server(await ws.binary())
    assert (reply.join_ref, reply.ref, reply.payload) == (
        "1",
        "2",
        {"status": "ok", "response": b"zyx"},
    )
    # V2 JSON sent as a binary frame is not a binary push: Phoenix fails it too.
    await ws.send('["1","3","echo:b2","echo",{}]', as_binary=True)
    assert (await ws.closed())[0] == 1007


# -- what still closes 1007, and what still gets an error reply -----------------------------


@pytest.mark.parametrize(
    ("query", "frame", "as_binary", "reason"),
    [
        ("vsn=2.0.0", '["1",[2],"echo:a","echo",{}]', False, "ref must be"),
        ("vsn=2.0.0", '["1",{"r":2},"echo:a","echo",{}]', False, "ref must be"),
        ("vsn=2.0.0", "{not json", False, "not valid JSON"),
        ("vsn=2.0.0", '["1","2","t"]', False, "5 elements"),
        ("vsn=2.0.0", "\x00\x09\x09\x09\x09abc", True, "past its end"),
        ("vsn=1.0.0", "{not json", True, "not valid JSON"),
        ("vsn=1.0.0", '["1","2","echo:a","echo",{}]', True, "JSON object"),
        ("vsn=1.0.0", '{"topic":"echo:a","event":"e","payload":{},"ref":[1]}', True, "ref must"),
    ],
)
async def test_invalid_frames_still_close_1007(
    raw: Any, query: str, frame: str, as_binary: bool, reason: str
) -> None:
    ws = await raw(query)
    await ws.send(frame, as_binary=as_binary)
    code, text = await ws.closed()
    assert code == 1007
    assert reason in text


async def test_v1_binary_frame_not_utf8_closes_1007(raw: Any) -> None:
    ws = await raw("vsn=1.0.0")
    await ws.ws.send_raw(b'{"topic":"echo:a","event":"e","payload":"\xff","ref":"1"}')
    assert (await ws.closed())[0] == 1007


@pytest.mark.parametrize(
    ("frame", "answer"),
    [
        ('[[1],5,"echo:a","echo",{}]', '[null,5,"echo:a","phx_reply"'),
        ('[{"j":1},"5","echo:a","echo",{}]', '[null,"5","echo:a","phx_reply"'),
    ],
)
async def test_structured_join_ref_gets_an_error_reply(raw: Any, frame: str, answer: str) -> None:
    """Only scalars are refs: an array or object join_ref is answered (the ref is known)."""
    ws = await raw()
    await ws.send(frame)
    text = await ws.text()
    assert text.startswith(answer)
    reply = orjson.loads(text)[4]
    assert reply["status"] == "error"
    assert reply["response"]["reason"].startswith("join_ref must be")


# -- the pure functions ------------------------------------------------------------------------


def test_same_ref_is_phoenix_strict_equality() -> None:
    assert same_ref(1, 1) and same_ref("1", "1") and same_ref(None, None)
    assert not same_ref(1, "1") and not same_ref(1, 1.0) and not same_ref(1, True)
    assert not same_ref(0, False) and not same_ref(None, "")


def test_binary_frames_carry_refs_as_text() -> None:
    assert [ref_text(r) for r in (None, "a", 7, 1.5, True, False)] == [
        None,
        "a",
        "7",
        "1.5",
        "true",
        "false",
    ]
    frame = V2.reply(3, 4.5, "t", "ok", Encoded(b"xy", binary=True))
    msg = binary.decode_server(frame.data)
    assert (msg.join_ref, msg.ref, msg.payload) == ("3", "4.5", {"status": "ok", "response": b"xy"})
