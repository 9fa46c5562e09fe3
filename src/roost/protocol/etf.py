"""Erlang's external term format (``term_to_binary`` / ``binary_to_term``), bounded.

Written for bytes read from a shared Redis, which nobody signs: every length is
checked against the bytes left *before* anything is allocated, nesting is capped
(``Limits.depth``), so is the number of terms (``Limits.terms``), of distinct atoms
in one term (``Limits.atoms``) and of bytes, compressed or not (``Limits.size``).
Breaking any bound, an unknown tag, a truncated or trailing byte: ``EtfError``,
never an exception of another type, never a hang. (The PyPI package erlang-py
decodes recursively without a depth bound and inflates a compressed term whole
before it checks the declared size.)

Python mapping, both ways::

    Erlang                    Python
    integer                   int
    float                     float (finite only)
    atom                      Atom("name"); true/false -> bool, nil -> None
    binary                    bytes (a Python str is encoded as a UTF-8 binary)
    list / [] / 'charlist'    list (a charlist decodes to its list of ints)
    improper list             ImproperList(items, tail)
    tuple                     tuple
    map                       dict (keys must be hashable: no list or map keys)
    bitstring                 BitBinary(data, bits)
    pid, port, reference, fun Opaque(tag, raw bytes) — kept, re-encoded as read

``undefined`` stays ``Atom("undefined")``; Elixir's ``nil`` is Python's None.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass
from typing import Any

from .errors import ProtocolError

VERSION = 131
COMPRESSED = 80
NEW_FLOAT = 70
BIT_BINARY = 77
NEW_PID = 88
NEW_PORT = 89
NEWER_REFERENCE = 90
SMALL_INTEGER = 97
INTEGER = 98
ATOM = 100  # latin-1, deprecated but still read
PORT = 102
PID = 103
SMALL_TUPLE = 104
LARGE_TUPLE = 105
NIL = 106
STRING = 107
LIST = 108
BINARY = 109
SMALL_BIG = 110
LARGE_BIG = 111
SMALL_ATOM = 115  # latin-1
MAP = 116
ATOM_UTF8 = 118
SMALL_ATOM_UTF8 = 119
V4_PORT = 120
NEW_FUN = 112
EXPORT = 113

_OPAQUE = (NEW_PID, PID, NEW_PORT, PORT, V4_PORT, NEWER_REFERENCE, NEW_FUN, EXPORT)
_ATOM_TAGS = (ATOM, SMALL_ATOM, ATOM_UTF8, SMALL_ATOM_UTF8)
_DOUBLE = struct.Struct(">d")
_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")


class EtfError(ProtocolError):
    """Bytes that are not a term this decoder accepts, or a value it cannot encode."""


@dataclass(frozen=True, slots=True)
class Atom:
    name: str

    def __repr__(self) -> str:
        return f"Atom({self.name!r})"


@dataclass(frozen=True, slots=True)
class ImproperList:
    items: tuple[Any, ...]
    tail: Any


@dataclass(frozen=True, slots=True)
class BitBinary:
    data: bytes
    bits: int  # bits used in the last byte, 1..8


@dataclass(frozen=True, slots=True)
class Opaque:
    """A pid, port, reference or fun: meaningless outside its node (a fun's code lives
    there), kept byte for byte; a fun's insides are not read."""

    tag: int
    raw: bytes  # everything after the tag

    @property
    def kind(self) -> str:
        if self.tag in (NEW_PID, PID):
            return "PID"
        if self.tag in (NEW_FUN, EXPORT):
            return "Function"
        return "Reference" if self.tag == NEWER_REFERENCE else "Port"


@dataclass(frozen=True, slots=True)
class Limits:
    size: int = 4 << 20  # bytes of the (uncompressed) term
    depth: int = 64  # nested lists, tuples and maps
    terms: int = 200_000  # terms in one message
    atoms: int = 256  # distinct atoms in one message
    big_bytes: int = 256  # digits of one bignum (2048 bits)


DEFAULT = Limits()


# -- decoding ----------------------------------------------------------------------------
def decode(data: bytes, limits: Limits = DEFAULT) -> Any:
    """``:erlang.binary_to_term`` for untrusted bytes, within ``limits``."""
    if len(data) > limits.size:
        raise EtfError(f"term of {len(data)} bytes is over the {limits.size} bytes allowed")
    if len(data) < 2 or data[0] != VERSION:
        raise EtfError("not an external term (no version byte 131)")
    buf, start = bytes(data), 1
    if buf[1] == COMPRESSED:
        buf, start = _inflate(buf, limits), 0
    reader = _Reader(buf, start, limits)
    term = reader.term(0)
    if reader.pos != len(buf):
        raise EtfError(f"{len(buf) - reader.pos} trailing bytes after the term")
    return term


def _inflate(data: bytes, limits: Limits) -> bytes:
    if len(data) < 6:
        raise EtfError("truncated compressed term")
    size = _U32.unpack_from(data, 2)[0]
    if size > limits.size:
        raise EtfError(f"compressed term declares {size} bytes, over {limits.size}")
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data[6:], size + 1)  # never more than declared (+1 to see)
    except zlib.error as exc:
        raise EtfError(f"bad compressed term: {exc}") from None
    if len(out) != size or not inflater.eof or inflater.unused_data:
        raise EtfError("compressed term does not inflate to its declared size")
    return out


class _Reader:
    """One pass over the bytes; every length checked against what is left first."""

    __slots__ = ("atoms", "buf", "end", "limits", "pos", "terms")

    def __init__(self, buf: bytes, pos: int, limits: Limits) -> None:
        self.buf, self.pos, self.end, self.limits, self.terms = buf, pos, len(buf), limits, 0
        self.atoms: dict[bytes, Any] = {}

    def take(self, n: int) -> bytes:
        pos = self.pos
        if n > self.end - pos:
            raise EtfError("truncated term")
        self.pos = pos + n
        return self.buf[pos : pos + n]

    def u8(self) -> int:
        pos = self.pos
        if pos >= self.end:
            raise EtfError("truncated term")
        self.pos = pos + 1
        return self.buf[pos]

    def u32(self) -> int:
        value: int = _U32.unpack(self.take(4))[0]
        return value

    def count(self, n: int, each: int) -> int:
        """``n`` elements of at least ``each`` bytes must fit in what is left."""
        if n * each > self.end - self.pos:
            raise EtfError(f"length {n} is longer than the bytes left")
        self.terms += n
        if self.terms > self.limits.terms:
            raise EtfError(f"more than {self.limits.terms} terms")
        return n

    def term(self, depth: int) -> Any:
        tag = self.u8()
        if tag == BINARY:
            return self.take(self.u32())
        if tag == SMALL_ATOM_UTF8:
            pos = self.pos
            found = self.atoms.get(
                self.buf[pos : pos + 1 + self.buf[pos]] if pos < self.end else b""
            )
            if found is not None:  # seen in this term: the common case (map keys)
                self.pos = pos + 1 + self.buf[pos]
                return found
            return self.atom(tag)
        if tag == SMALL_INTEGER:
            return self.u8()
        if tag == INTEGER:
            value: int = _I32.unpack(self.take(4))[0]
            return value
        if tag in _ATOM_TAGS:
            return self.atom(tag)
        if tag == NEW_FLOAT:
            number: float = _DOUBLE.unpack(self.take(8))[0]
            if not math.isfinite(number):
                raise EtfError("float that is not finite")
            return number
        if depth >= self.limits.depth:
            raise EtfError(f"terms nested deeper than {self.limits.depth}")
        if tag == NIL:
            return []
        if tag == STRING:
            return list(self.take(self.count(_U16.unpack(self.take(2))[0], 1)))
        if tag == LIST:
            n = self.count(self.u32(), 1)
            items = [self.term(depth + 1) for _ in range(n)]
            tail = self.term(depth + 1)
            return items if tail == [] else ImproperList(tuple(items), tail)
        if tag in (SMALL_TUPLE, LARGE_TUPLE):
            n = self.count(self.u8() if tag == SMALL_TUPLE else self.u32(), 1)
            return tuple([self.term(depth + 1) for _ in range(n)])
        if tag == MAP:
            return self.map(self.count(self.u32(), 2), depth)
        if tag in (SMALL_BIG, LARGE_BIG):
            n = self.u8() if tag == SMALL_BIG else self.u32()
            if n > self.limits.big_bytes:
                raise EtfError(f"integer of {n} bytes is over {self.limits.big_bytes}")
            sign = self.u8()
            magnitude = int.from_bytes(self.take(n), "little")
            return -magnitude if sign else magnitude
        if tag == BIT_BINARY:
            n = self.u32()
            bits = self.u8()
            if not 1 <= bits <= 8 or n == 0:
                raise EtfError("bad bitstring")
            return BitBinary(self.take(n), bits)
        if tag in _OPAQUE:
            return Opaque(tag, self.opaque(tag))
        raise EtfError(f"unsupported term tag {tag}")

    def atom(self, tag: int) -> Any:
        small = tag in (SMALL_ATOM, SMALL_ATOM_UTF8)
        n = self.u8() if small else _U16.unpack(self.take(2))[0]
        raw = self.take(n)
        key = (bytes([n]) + raw) if tag == SMALL_ATOM_UTF8 else bytes([tag]) + raw
        found = self.atoms.get(key)
        if found is not None:
            return found
        if len(self.atoms) >= self.limits.atoms:
            raise EtfError(f"more than {self.limits.atoms} distinct atoms")
        try:
            name = raw.decode("utf-8" if tag in (ATOM_UTF8, SMALL_ATOM_UTF8) else "latin-1")
        except UnicodeDecodeError:
            raise EtfError("atom that is not UTF-8") from None
        if len(name) > 255:
            raise EtfError("atom longer than 255 characters")
        value: Any = Atom(name)
        if name in ("true", "false", "nil"):
            value = {"true": True, "false": False, "nil": None}[name]
        self.atoms[key] = value
        return value

    def map(self, n: int, depth: int) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        for _ in range(n):
            key = self.term(depth + 1)
            value = self.term(depth + 1)
            try:
                if key in out:
                    raise EtfError("map with a duplicate key")
                out[key] = value
            except TypeError:
                raise EtfError("map key of a type this decoder cannot hash") from None
        return out

    def opaque(self, tag: int) -> bytes:
        start = self.pos
        if tag == NEW_FUN:  # Size (counting itself), then what only its node can use
            size = self.u32()
            if size < 4:
                raise EtfError("bad fun size")
            self.take(size - 4)
            return self.buf[start : self.pos]
        if tag == EXPORT:  # fun Module:Function/Arity
            module, function, arity = (self.term(self.limits.depth - 1) for _ in range(3))
            if not (isinstance(module, Atom) and isinstance(function, Atom)):
                raise EtfError("bad external fun")
            if not isinstance(arity, int) or isinstance(arity, bool):
                raise EtfError("bad external fun")
            return self.buf[start : self.pos]
        words = 0
        if tag == NEWER_REFERENCE:  # Len, Node, Creation, ID words
            words = _U16.unpack(self.take(2))[0]
            if words > 5:
                raise EtfError("reference with too many words")
        node = self.u8()
        if node not in _ATOM_TAGS:
            raise EtfError("pid, port or reference without a node atom")
        self.atom(node)
        sizes = {NEW_PID: 12, PID: 9, NEW_PORT: 8, PORT: 5, V4_PORT: 12}
        self.take(4 + 4 * words if tag == NEWER_REFERENCE else sizes[tag])
        return self.buf[start : self.pos]


# -- encoding ----------------------------------------------------------------------------
def encode(term: Any, *, compressed: int = 0, limits: Limits = DEFAULT) -> bytes:
    """``:erlang.term_to_binary(term, compressed: level)``; raises EtfError for values
    with no Erlang form (a set, a non-finite float, a cycle past ``limits.depth``)."""
    out = bytearray()
    _encode(term, out, 0, limits.depth)
    if compressed:
        if not 0 <= compressed <= 9:
            raise EtfError("compression level must be 0..9")
        packed = zlib.compress(bytes(out), compressed)
        if len(packed) + 5 < len(out):  # as Erlang: only when it saves bytes
            return bytes([VERSION, COMPRESSED]) + _U32.pack(len(out)) + packed
    return bytes([VERSION]) + bytes(out)


def atom_bytes(name: str) -> bytes:
    raw = name.encode()
    if len(name) > 255:
        raise EtfError("atom longer than 255 characters")
    if len(raw) < 256:
        return bytes([SMALL_ATOM_UTF8, len(raw)]) + raw
    return bytes([ATOM_UTF8]) + _U16.pack(len(raw)) + raw


def _encode(term: Any, out: bytearray, depth: int, max_depth: int) -> None:
    if term is True or term is False or term is None:
        out += atom_bytes("true" if term is True else "false" if term is False else "nil")
    elif isinstance(term, int):
        if 0 <= term < 256:
            out += bytes([SMALL_INTEGER, term])
        elif -(1 << 31) <= term < (1 << 31):
            out.append(INTEGER)
            out += _I32.pack(term)
        else:
            magnitude = abs(term)
            digits = magnitude.to_bytes((magnitude.bit_length() + 7) // 8, "little")
            if len(digits) < 256:
                out += bytes([SMALL_BIG, len(digits)])
            else:
                out.append(LARGE_BIG)
                out += _U32.pack(len(digits))
            out.append(1 if term < 0 else 0)
            out += digits
    elif isinstance(term, float):
        if not math.isfinite(term):
            raise EtfError("Erlang has no NaN or infinite floats")
        out.append(NEW_FLOAT)
        out += _DOUBLE.pack(term)
    elif isinstance(term, Atom):
        out += atom_bytes(term.name)
    elif isinstance(term, str | bytes | bytearray | memoryview):
        raw = term.encode() if isinstance(term, str) else bytes(term)
        out.append(BINARY)
        out += _U32.pack(len(raw))
        out += raw
    elif depth >= max_depth:
        raise EtfError(f"terms nested deeper than {max_depth}")
    elif isinstance(term, tuple):
        if len(term) < 256:
            out += bytes([SMALL_TUPLE, len(term)])
        else:
            out.append(LARGE_TUPLE)
            out += _U32.pack(len(term))
        for item in term:
            _encode(item, out, depth + 1, max_depth)
    elif isinstance(term, list | ImproperList):
        items = term.items if isinstance(term, ImproperList) else term
        if not items:
            out.append(NIL)
            return
        out.append(LIST)
        out += _U32.pack(len(items))
        for item in items:
            _encode(item, out, depth + 1, max_depth)
        if isinstance(term, ImproperList):
            _encode(term.tail, out, depth + 1, max_depth)
        else:
            out.append(NIL)
    elif isinstance(term, dict):
        out.append(MAP)
        out += _U32.pack(len(term))
        for key, value in term.items():
            _encode(key, out, depth + 1, max_depth)
            _encode(value, out, depth + 1, max_depth)
    elif isinstance(term, BitBinary):
        out.append(BIT_BINARY)
        out += _U32.pack(len(term.data))
        out.append(term.bits)
        out += term.data
    elif isinstance(term, Opaque):
        out.append(term.tag)
        out += term.raw
    else:
        raise EtfError(f"no Erlang form for {type(term).__name__}")
