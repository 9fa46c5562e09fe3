"""The sans-I/O client-frame reader (protocol/wsread.py), rule by rule, on hand-built frames."""

from __future__ import annotations

import pytest

from roost.protocol.wsread import (
    CLOSE,
    ERROR,
    MESSAGE,
    PING,
    WsReader,
    pong,
    unmask,
    valid_close_code,
)
from wsframes import KEY, close_payload, frame


def test_unmask_is_its_own_inverse() -> None:
    data = bytes(range(256)) * 3 + b"xyz"
    assert unmask(KEY, unmask(KEY, data)) == data
    assert unmask(KEY, b"") == b""
    assert unmask(b"\0\0\0\0", b"abc") == b"abc"


def test_text_and_binary_messages() -> None:
    r = WsReader(1000)
    assert r.feed(frame(1, "héllo".encode())) == [(MESSAGE, 1, "héllo")]
    assert r.feed(frame(2, b"\x00\xff")) == [(MESSAGE, 2, b"\x00\xff")]
    assert r.feed(frame(1, b"")) == [(MESSAGE, 1, "")]


def test_frames_split_at_every_byte_and_joined_in_one_read() -> None:
    data = frame(1, b"a" * 300) + frame(9, b"p") + frame(2, b"b" * 70000)
    r = WsReader(100_000)
    events = []
    for i in range(len(data)):
        events += r.feed(data[i : i + 1])
    expected = [(MESSAGE, 1, "a" * 300), (PING, 0, b"p"), (MESSAGE, 2, b"b" * 70000)]
    assert events == expected
    assert r.buf is None
    assert WsReader(100_000).feed(data) == expected


def test_unmasked_frame_is_1002() -> None:
    assert WsReader(100).feed(frame(1, b"hi", masked=False)) == [
        (ERROR, 1002, "unmasked client frame")
    ]


@pytest.mark.parametrize("rsv", [1, 2, 4])
def test_reserved_bits_are_1002(rsv: int) -> None:
    assert WsReader(100).feed(frame(1, b"hi", rsv=rsv))[0][:2] == (ERROR, 1002)


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xF])
def test_unknown_opcodes_are_1002(opcode: int) -> None:
    assert WsReader(100).feed(frame(opcode, b"x")) == [(ERROR, 1002, "unknown opcode")]


def test_control_frames_at_most_125_bytes_and_unfragmented() -> None:
    assert WsReader(1000).feed(frame(9, b"x" * 125)) == [(PING, 0, b"x" * 125)]
    assert WsReader(1000).feed(frame(9, b"x" * 126))[0][:2] == (ERROR, 1002)
    assert WsReader(1000).feed(frame(9, b"x", fin=False))[0][:2] == (ERROR, 1002)
    assert WsReader(1000).feed(frame(8, b"", fin=False))[0][:2] == (ERROR, 1002)


def test_ping_pong() -> None:
    r = WsReader(100)
    assert r.feed(frame(9, b"are you there")) == [(PING, 0, b"are you there")]
    assert pong(b"are you there") == b"\x8a\x0dare you there"
    assert r.feed(frame(0xA, b"unsolicited")) == []  # pongs are ignored


def test_fragmented_message_with_control_frames_between() -> None:
    r = WsReader(100)
    data = (
        frame(1, b"he", fin=False)
        + frame(9, b"!")
        + frame(0, "llö".encode()[:3], fin=False)
        + frame(0, "llö".encode()[3:])
    )
    assert r.feed(data) == [(PING, 0, b"!"), (MESSAGE, 1, "hellö")]
    assert r.frags is None
    # UTF-8 split across fragments is fine; binary too
    assert r.feed(frame(2, b"a", fin=False) + frame(0, b"b")) == [(MESSAGE, 2, b"ab")]


def test_continuation_without_start_is_1002() -> None:
    assert WsReader(100).feed(frame(0, b"x")) == [(ERROR, 1002, "continuation without start")]


def test_new_data_frame_inside_a_message_is_1002() -> None:
    data = frame(1, b"a", fin=False) + frame(1, b"b")
    assert WsReader(100).feed(data) == [(ERROR, 1002, "data frame inside a message")]


def test_max_size_counts_the_whole_message_and_is_1009() -> None:
    assert WsReader(10).feed(frame(1, b"x" * 10)) == [(MESSAGE, 1, "x" * 10)]
    assert WsReader(10).feed(frame(1, b"x" * 11)) == [(ERROR, 1009, "message too big")]
    r = WsReader(10)
    assert r.feed(frame(1, b"x" * 6, fin=False)) == []
    assert r.feed(frame(0, b"x" * 5)) == [(ERROR, 1009, "message too big")]


def test_too_big_is_refused_from_the_header_alone() -> None:
    """A 64-bit length is refused before any of the payload arrives (nothing buffered)."""
    r = WsReader(65536)
    head = frame(2, b"", length=2**40)[:14]
    assert r.feed(head) == [(ERROR, 1009, "message too big")]
    assert r.feed(b"more") == []  # done: nothing more read


def test_invalid_utf8_text_is_1007() -> None:
    assert WsReader(100).feed(frame(1, b"\xff\xfe")) == [(ERROR, 1007, "invalid UTF-8 text")]
    data = frame(1, b"\xe2\x82", fin=False) + frame(0, b"x")
    assert WsReader(100).feed(data)[0][:2] == (ERROR, 1007)


def test_close_frames() -> None:
    assert WsReader(100).feed(frame(8, close_payload(1000, b"bye"))) == [(CLOSE, 1000, "bye")]
    assert WsReader(100).feed(frame(8, close_payload(4321))) == [(CLOSE, 4321, "")]
    assert WsReader(100).feed(frame(8)) == [(CLOSE, 1005, "")]


def test_close_after_messages_in_one_read_and_nothing_after() -> None:
    r = WsReader(100)
    data = frame(1, b"a") + frame(8, close_payload(1001)) + frame(1, b"b")
    assert r.feed(data) == [(MESSAGE, 1, "a"), (CLOSE, 1001, "")]
    assert r.done
    assert r.feed(frame(1, b"c")) == []


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1100, 2999, 5000, 65535])
def test_invalid_close_codes_are_1002(code: int) -> None:
    assert not valid_close_code(code)
    assert WsReader(100).feed(frame(8, close_payload(code)))[0][:2] == (ERROR, 1002)


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1011, 1014, 3000, 4999])
def test_valid_close_codes(code: int) -> None:
    assert valid_close_code(code)


def test_close_payload_of_one_byte_is_1002() -> None:
    assert WsReader(100).feed(frame(8, b"\x03"))[0][:2] == (ERROR, 1002)


def test_close_reason_must_be_utf8() -> None:
    bad = frame(8, close_payload(1000, b"\xc3"))
    assert WsReader(100).feed(bad) == [(ERROR, 1007, "invalid UTF-8 close reason")]


def test_idle_reader_keeps_no_buffer() -> None:
    r = WsReader(100)
    r.feed(frame(1, b"abc")[:3])
    assert r.buf is not None
    r.feed(frame(1, b"abc")[3:])
    assert r.buf is None and r.frags is None


def test_max_size_zero_is_no_limit() -> None:
    """As aiohttp's ``max_msg_size=0`` (``--max-frame 0``)."""
    assert WsReader(0).feed(frame(2, b"x" * 70_000)) == [(MESSAGE, 2, b"x" * 70_000)]
