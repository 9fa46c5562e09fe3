"""The external term format codec (roost/protocol/etf.py) against the real Erlang runtime,
its bounds on untrusted bytes, and Elixir-style printing (protocol/elixir_inspect.py)."""

from __future__ import annotations

import contextlib
import random
import struct
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

from roost.protocol import etf
from roost.protocol.elixir_inspect import inspect
from roost.protocol.etf import Atom, BitBinary, EtfError, ImproperList, Limits, Opaque

from erlang_peer import erl, literal, need_erlang

BROADCAST = {
    Atom("__struct__"): Atom("Elixir.Phoenix.Socket.Broadcast"),
    Atom("topic"): b"rooms:lobby",
    Atom("event"): b"new:msg",
    Atom("payload"): {Atom("body"): b"hello from u1", Atom("user"): b"u1"},
}

SERVER = Atom("Elixir.Phoenix.Channel.Server")
#: (Python term, the same term in Erlang source) — both directions are checked.
CASES: list[tuple[Any, str]] = [
    (0, "0"),
    (255, "255"),
    (256, "256"),
    (-1, "-1"),
    (2**31 - 1, "2147483647"),
    (-(2**31), "-2147483648"),
    (2**31, "2147483648"),
    (2**64 + 7, "18446744073709551623"),
    (-(2**100), "-1267650600228229401496703205376"),
    (2**2040, "1 bsl 2040"),
    (1.5, "1.5"),
    (-0.1, "-0.1"),
    (1e300, "1.0e300"),
    (5e-324, "5.0e-324"),
    (Atom("ok"), "ok"),
    (Atom("Elixir.Phoenix.Socket.Broadcast"), "'Elixir.Phoenix.Socket.Broadcast'"),
    (Atom("héllo wörld"), 'binary_to_atom(<<"héllo wörld"/utf8>>)'),
    (Atom("a" * 255), "list_to_atom(lists:duplicate(255, $a))"),
    (True, "true"),
    (False, "false"),
    (None, "nil"),
    (b"", "<<>>"),
    (b"rooms:lobby", '<<"rooms:lobby">>'),
    (bytes(range(256)) * 300, "list_to_binary(lists:duplicate(300, lists:seq(0, 255)))"),
    ("héllo ✓".encode(), '<<"héllo ✓"/utf8>>'),
    ([], "[]"),
    ([1, 2, 3], "[1, 2, 3]"),
    ([1000, [], [[b"x"]], 2.5], '[1000, [], [[<<"x">>]], 2.5]'),
    (list(range(300)), "lists:seq(0, 299)"),
    (ImproperList((1, 2), Atom("tail")), "[1, 2 | tail]"),
    ((), "{}"),
    ((1, (2, (3,))), "{1, {2, {3}}}"),
    (tuple(range(300)), "list_to_tuple(lists:seq(0, 299))"),
    ({}, "#{}"),
    ({Atom("a"): 1, b"a": 2, 3: [4]}, '#{a => 1, <<"a">> => 2, 3 => [4]}'),
    ({(1, 2): {Atom("k"): None}}, "#{{1, 2} => #{k => nil}}"),
    (BitBinary(b"\x01\xe0", 3), "<<1, 7:3>>"),
    (BROADCAST, literal(BROADCAST)),
    (
        (3, Atom("except"), b"n1", b"rooms:lobby", BROADCAST, SERVER),
        '{3, except, <<"n1">>, <<"rooms:lobby">>, '
        + literal(BROADCAST)
        + ", 'Elixir.Phoenix.Channel.Server'}",
    ),
]


def test_python_encodes_what_erlang_decodes(tmp_path: Path) -> None:
    need_erlang()
    checks = []
    for i, (term, source) in enumerate(CASES):
        for level in (0, 6):
            path = tmp_path / f"{i}-{level}.bin"
            path.write_bytes(etf.encode(term, compressed=level))
            var = f"B{i}_{level}"
            checks.append(
                f'{{ok, {var}}} = file:read_file("{path}"), '
                f'io:format("~p ~p ~p~n", [{i}, {level}, binary_to_term({var}) =:= ({source})])'
            )
    out = erl(", ".join(checks)).split("\n")
    wrong = [line for line in out if line and not line.endswith("true")]
    assert not wrong, [(CASES[int(w.split()[0])], w) for w in wrong]
    assert len([line for line in out if line]) == 2 * len(CASES)


@pytest.mark.parametrize(
    "options", ["[]", "[compressed]", "[{minor_version, 1}]", "[deterministic]"]
)
def test_python_decodes_what_erlang_encodes(tmp_path: Path, options: str) -> None:
    need_erlang()
    writes = [
        f'ok = file:write_file("{tmp_path}/{i}.bin", term_to_binary({source}, {options}))'
        for i, (_, source) in enumerate(CASES)
    ]
    # Also a pid, a reference and a port: kept opaque, re-encoded byte for byte.
    writes.append(
        f'ok = file:write_file("{tmp_path}/opaque.bin", '
        "term_to_binary({self(), make_ref(), hd(erlang:ports()), fun(X) -> {X, self()} end, "
        "fun lists:seq/2}, " + options + ")), "
        f'ok = file:write_file("{tmp_path}/charlist.bin", term_to_binary("abc", {options}))'
    )
    erl(", ".join(writes))
    for i, (term, _) in enumerate(CASES):
        data = (tmp_path / f"{i}.bin").read_bytes()
        assert etf.decode(data) == term, (i, term)
    opaque = etf.decode((tmp_path / "opaque.bin").read_bytes())
    assert [o.kind for o in opaque] == ["PID", "Reference", "Port", "Function", "Function"]
    raw = (tmp_path / "opaque.bin").read_bytes()
    if options != "[compressed]":
        assert etf.encode(opaque) == raw
    assert etf.decode((tmp_path / "charlist.bin").read_bytes()) == [97, 98, 99]


def test_encoder_refuses_values_without_an_erlang_form() -> None:
    for bad in (float("nan"), float("inf"), {1, 2}, object()):
        with pytest.raises(EtfError):
            etf.encode(bad)
    deep: list[Any] = []
    for _ in range(100):
        deep = [deep]
    with pytest.raises(EtfError, match="nested deeper"):
        etf.encode(deep)
    with pytest.raises(EtfError):
        etf.encode(Atom("x" * 256))


# -- bounds: untrusted input is an EtfError, never a crash, hang or blow-up ------------------
def _nested(depth: int) -> bytes:
    return b"\x83" + b"l\x00\x00\x00\x01" * depth + b"j" + b"j" * depth


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "version"),
        (b"\x84a\x01", "version"),
        (b"\x83", "version"),
        (b"\x83\xff", "unsupported term tag 255"),
        (b"\x83R\x00", "unsupported term tag 82"),  # ATOM_CACHE_REF: distribution only
        (b"\x83p\x00\x00\x00\x02", "bad fun size"),
        (b"\x83qa\x01a\x02a\x03", "bad external fun"),
        (b"\x83a", "truncated"),
        (b"\x83a\x01\x02", "trailing"),
        (b"\x83m\xff\xff\xff\xff" + b"x" * 10, "truncated"),
        (b"\x83l\xff\xff\xff\xff" + b"a\x01" * 4, "longer than the bytes left"),
        (b"\x83t\xff\xff\xff\xff" + b"a\x01" * 4, "longer than the bytes left"),
        (b"\x83i\xff\xff\xff\xff" + b"a\x01" * 4, "longer than the bytes left"),
        (b"\x83k\xff\xff" + b"a", "longer than the bytes left"),
        (b"\x83o\xff\xff\xff\xff\x00" + b"\x01" * 8, "bytes is over"),
        (_nested(65), "nested deeper than 64"),
        (_nested(100_000), "nested deeper than 64"),
        (b"\x83F" + struct.pack(">d", float("nan")), "not finite"),
        (b"\x83t\x00\x00\x00\x02a\x01a\x02a\x01a\x03", "duplicate key"),
        (b"\x83t\x00\x00\x00\x01jj", "cannot hash"),
        (b"\x83w\x02\xff\xfe", "not UTF-8"),
        (b"\x83P\x00\x00\x00\x05" + zlib.compress(b"a\x01"), "declared size"),
        (b"\x83P\x00\x00\x00\x02" + b"garbage", "bad compressed"),
        (b"\x83M\x00\x00\x00\x01\x09\xff", "bad bitstring"),
    ],
)
def test_garbage_is_a_clear_error(data: bytes, reason: str) -> None:
    with pytest.raises(EtfError, match=reason):
        etf.decode(data)


def test_atom_flood_is_refused() -> None:
    atoms = b"".join(b"w" + bytes([len(n)]) + n for n in (f"a{i}".encode() for i in range(300)))
    data = b"\x83l" + struct.pack(">I", 300) + atoms + b"j"
    with pytest.raises(EtfError, match="distinct atoms"):
        etf.decode(data)
    same = b"\x83l" + struct.pack(">I", 300) + b"w\x01a" * 300 + b"j"  # one atom, many times
    assert etf.decode(same) == [Atom("a")] * 300
    assert etf.decode(data, Limits(atoms=1000))[299] == Atom("a299")


def test_size_and_term_bounds() -> None:
    big = etf.encode(b"x" * 100)
    with pytest.raises(EtfError, match="over the 50 bytes"):
        etf.decode(big, Limits(size=50))
    many = etf.encode([1] * 1000)
    with pytest.raises(EtfError, match="more than 500 terms"):
        etf.decode(many, Limits(terms=500))


def test_a_compression_bomb_is_never_inflated_past_its_bound() -> None:
    # 64 MiB of zeros in a few KiB, declared honestly: refused before inflating.
    payload = b"m" + struct.pack(">I", 64 << 20) + bytes(64 << 20)
    bomb = b"\x83P" + struct.pack(">I", len(payload)) + zlib.compress(payload, 9)
    assert len(bomb) < 100_000
    with pytest.raises(EtfError, match="declares"):
        etf.decode(bomb)
    # Declared small but inflating to 64 MiB: inflation stops at the declared size + 1.
    liar = b"\x83P" + struct.pack(">I", 1000) + zlib.compress(payload, 9)
    started = time.process_time()
    with pytest.raises(EtfError, match="declared size"):
        etf.decode(liar)
    assert time.process_time() - started < 1.0  # bounded work, not 64 MiB of inflating


def test_fuzzed_bytes_raise_only_etf_errors() -> None:
    rng = random.Random(19)
    seeds = [etf.encode(term) for term, _ in CASES[:30]] + [etf.encode(BROADCAST, compressed=6)]
    for _ in range(4000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            if not data:
                break
            op = rng.randint(0, 2)
            pos = rng.randrange(len(data))
            if op == 0:
                data[pos] = rng.randrange(256)
            elif op == 1:
                del data[pos:]
            else:
                data[pos:pos] = rng.randbytes(rng.randint(1, 8))
        with contextlib.suppress(EtfError):
            etf.decode(bytes(data))
    for cut in range(1, len(seeds[-2])):  # every truncation of a real message
        with pytest.raises(EtfError):
            etf.decode(seeds[-2][:cut])


# -- Elixir's IO.inspect, as the article's redis_print prints ---------------------------------
ARTICLE = """%{
  __struct__: Phoenix.Socket.Broadcast,
  event: "new:msg",
  payload: %{body: "hello from u1", user: "u1"},
  topic: "rooms:lobby"
}"""


def test_inspect_prints_a_broadcast_as_the_article_shows_it() -> None:
    assert inspect(BROADCAST) == ARTICLE


def test_inspect_small_terms() -> None:
    assert inspect([1, 2.5, 1e20, None, True, Atom("ok"), Atom("a b")]) == (
        '[1, 2.5, 1.0e20, nil, true, :ok, :"a b"]'
    )
    assert inspect({b"b": 1, Atom("a"): 2, 3: b"\x00"}) == '%{3 => <<0>>, :a => 2, "b" => 1}'
    assert inspect((b'say "#{x}"\n',)) == '{"say \\"\\#{x}\\"\\n"}'
    assert inspect(ImproperList((1,), 2)) == "[1 | 2]"
    assert inspect(Opaque(etf.NEW_PID, b"")).startswith("#PID<")
