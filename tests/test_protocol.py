"""The sans-I/O protocol layer: serializers, binary formats, WebSocket headers."""

from __future__ import annotations

import contextlib

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from roost.protocol import (
    BINARY,
    TEXT,
    V1,
    V2,
    Encoded,
    Message,
    ProtocolError,
    for_vsn,
    ws_bytes,
)
from roost.protocol import binary as binfmt
from roost.protocol.wsframe import header

# -- V2 --------------------------------------------------------------------------------


def test_v2_decodes_an_array_frame() -> None:
    msg = V2.decode(TEXT, '["3","4","rooms:lobby","new:msg",{"body":"hi"}]')
    assert msg == Message("3", "4", "rooms:lobby", "new:msg", {"body": "hi"})


def test_v2_null_refs() -> None:
    assert V2.decode(TEXT, b'[null,"5","phoenix","heartbeat",{}]').join_ref is None


def test_v2_encodes_reply_push_broadcast() -> None:
    ok = Encoded.of({})
    reply = V2.reply("3", "3", "rooms:lobby", "ok", ok)
    assert orjson.loads(reply.data) == [
        "3",
        "3",
        "rooms:lobby",
        "phx_reply",
        {"status": "ok", "response": {}},
    ]
    push = V2.push("3", "rooms:lobby", "presence_state", Encoded.of({"a": 1}))
    assert orjson.loads(push.data) == ["3", None, "rooms:lobby", "presence_state", {"a": 1}]
    close = V2.push("3", "rooms:lobby", "phx_close", ok, "3")
    assert orjson.loads(close.data) == ["3", "3", "rooms:lobby", "phx_close", {}]
    b = V2.broadcast("rooms:lobby", "new:msg", Encoded.of({"body": "hi"}))
    assert orjson.loads(b.data) == [None, None, "rooms:lobby", "new:msg", {"body": "hi"}]
    assert b.opcode == TEXT


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("not json", "not valid JSON"),
        ("{}", "must be a JSON array"),
        ('["1","2","t","e"]', "5 elements"),
        ('["1","2","t","e",{},6]', "5 elements"),
        ('[[1],"2","t","e",{}]', "join_ref must be a string, number, boolean or null"),
        ('["1",{},"t","e",{}]', "ref must be a string, number, boolean or null"),
        ('["1","2",3,"e",{}]', "topic must be"),
        ('["1","2","t",null,{}]', "event must be"),
        ('["1","2","","e",{}]', "topic must be"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_v2_rejects_malformed_frames(frame: str | bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        V2.decode(TEXT, frame)


def test_error_is_answerable_when_topic_and_ref_are_known() -> None:
    with pytest.raises(ProtocolError) as info:
        V2.decode(TEXT, '["1","2","rooms:a",5,{}]')
    assert info.value.answerable
    assert (info.value.ref, info.value.topic) == ("2", "rooms:a")
    with pytest.raises(ProtocolError) as info:
        V2.decode(TEXT, "[1,2]")
    assert not info.value.answerable


# -- V1 --------------------------------------------------------------------------------


def test_v1_round_trip() -> None:
    msg = V1.decode(TEXT, '{"topic":"rooms:lobby","event":"phx_join","payload":{},"ref":"1"}')
    assert msg == Message(None, "1", "rooms:lobby", "phx_join", {})
    reply = V1.reply(None, "1", "rooms:lobby", "ok", Encoded.of({"x": 1}))
    assert reply is not None
    assert orjson.loads(reply.data) == {
        "topic": "rooms:lobby",
        "event": "phx_reply",
        "payload": {"status": "ok", "response": {"x": 1}},
        "ref": "1",
    }


@pytest.mark.parametrize(
    "frame",
    ["[]", '{"event":"e","payload":{},"ref":"1"}', '{"topic":"t","event":"e","ref":"1"}', "x"],
)
def test_v1_rejects_malformed_frames(frame: str) -> None:
    with pytest.raises(ProtocolError):
        V1.decode(TEXT, frame)


def test_v1_has_no_binary_payloads() -> None:
    # A binary frame is read as JSON text (as Phoenix's V1 serializer does): a V2 binary
    # push is not JSON.
    with pytest.raises(ProtocolError, match="not valid JSON"):
        V1.decode(BINARY, b"\x00\x00\x00\x01\x01te")
    msg = V1.decode(BINARY, b'{"topic":"t","event":"e","payload":{},"ref":1,"join_ref":1}')
    assert msg == Message(1, 1, "t", "e", {})
    assert V1.broadcast("t", "e", Encoded(b"raw", binary=True)) is None


def test_vsn_selects_serializer() -> None:
    assert for_vsn(None) is V1
    assert for_vsn("1.0.0") is V1
    assert for_vsn("2.0.0") is V2
    with pytest.raises(ProtocolError, match="unsupported"):
        for_vsn("3.0.0")


# -- binary ----------------------------------------------------------------------------


def test_binary_push_decodes() -> None:
    data = binfmt.encode_client_push("1", "2", "echo:x", "bin", b"\x00\x01payload")
    assert V2.decode(BINARY, data) == Message("1", "2", "echo:x", "bin", b"\x00\x01payload")


def test_binary_reply_layout() -> None:
    frame = V2.reply("1", "2", "t", "ok", Encoded(b"xyz", binary=True))
    assert frame.opcode == BINARY
    assert frame.data == bytes([1, 1, 1, 1, 2]) + b"12tok" + b"xyz"


def test_binary_broadcast_layout() -> None:
    frame = V2.broadcast("t", "ev", Encoded(b"\xff", binary=True))
    assert frame.data == bytes([2, 1, 2]) + b"tev\xff"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x05",
        b"\x00\x01",
        b"\x00\x05\x05\x05\x05abc",  # lengths run past the end
        b"\x00\x00\x00\x01\x01\xff\xfe",  # not UTF-8
        b"\x00\x00\x00\x00\x00",  # no topic / event
    ],
)
def test_binary_rejects_malformed(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        V2.decode(BINARY, data)


def test_binary_field_too_long() -> None:
    with pytest.raises(ProtocolError, match="255"):
        V2.broadcast("t" * 256, "e", Encoded(b"", binary=True))


# -- WebSocket headers -----------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
def test_ws_header_lengths(size: int) -> None:
    h = header(1, size)
    assert h[0] == 0x81
    if size < 126:
        assert h[1] == size and len(h) == 2
    elif size < 65536:
        assert h[1] == 126 and int.from_bytes(h[2:4], "big") == size
    else:
        assert h[1] == 127 and int.from_bytes(h[2:10], "big") == size


def test_ws_bytes_wraps_frame() -> None:
    frame = V2.broadcast("t", "e", Encoded.of({}))
    assert ws_bytes(frame) == bytes([0x81, len(frame.data)]) + frame.data


# -- properties ------------------------------------------------------------------------

refs = st.none() | st.text(max_size=20)
names = st.text(min_size=1, max_size=40)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=20,
)


@given(refs, refs, names, names, json_values)
def test_v2_client_frames_round_trip(
    join_ref: str | None, ref: str | None, topic: str, event: str, payload: object
) -> None:
    frame = V2.encode_client(join_ref, ref, topic, event, Encoded.of(payload))
    assert V2.decode(frame.opcode, frame.data) == Message(join_ref, ref, topic, event, payload)


@given(refs, refs, names, names, json_values)
def test_v1_client_frames_round_trip(
    join_ref: str | None, ref: str | None, topic: str, event: str, payload: object
) -> None:
    frame = V1.encode_client(join_ref, ref, topic, event, Encoded.of(payload))
    assert V1.decode(frame.opcode, frame.data) == Message(join_ref, ref, topic, event, payload)


short = st.text(max_size=30).filter(lambda s: len(s.encode()) <= 255)
short_names = short.filter(bool)


@given(short, short, short_names, short_names, st.binary(max_size=300))
def test_binary_push_round_trip(
    join_ref: str, ref: str, topic: str, event: str, payload: bytes
) -> None:
    data = binfmt.encode_client_push(join_ref, ref, topic, event, payload)
    assert V2.decode(BINARY, data) == Message(join_ref or None, ref or None, topic, event, payload)


@given(short, short, short_names, st.sampled_from(["ok", "error"]), st.binary(max_size=100))
def test_server_binary_reply_round_trip(
    join_ref: str, ref: str, topic: str, status: str, payload: bytes
) -> None:
    frame = V2.reply(join_ref, ref, topic, status, Encoded(payload, binary=True))
    msg = V2.decode_server(frame.opcode, frame.data)
    assert msg.payload == {"status": status, "response": payload}
    assert (msg.join_ref, msg.ref, msg.topic) == (join_ref or None, ref or None, topic)


@given(short_names, short_names, json_values)
def test_server_broadcast_round_trip(topic: str, event: str, payload: object) -> None:
    for ser in (V1, V2):
        frame = ser.broadcast(topic, event, Encoded.of(payload))
        assert frame is not None
        msg = ser.decode_server(frame.opcode, frame.data)
        assert (msg.topic, msg.event, msg.payload) == (topic, event, payload)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_only_raise_protocol_error(data: bytes) -> None:
    for ser in (V1, V2):
        for opcode in (TEXT, BINARY):
            with contextlib.suppress(ProtocolError):
                ser.decode(opcode, data)
            with contextlib.suppress(ProtocolError):
                ser.decode_server(opcode, data)


@given(st.text(max_size=200))
def test_arbitrary_text_only_raises_protocol_error(data: str) -> None:
    for ser in (V1, V2):
        with contextlib.suppress(ProtocolError):
            ser.decode(TEXT, data)


@given(json_values)
def test_arbitrary_json_only_raises_protocol_error(value: object) -> None:
    data = orjson.dumps(value)
    for ser in (V1, V2):
        with contextlib.suppress(ProtocolError):
            ser.decode(TEXT, data)
