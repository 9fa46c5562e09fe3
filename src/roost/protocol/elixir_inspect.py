"""Terms (``etf``'s Python values) printed as Elixir's ``IO.inspect`` prints them.

What the article's ``redis_print`` shows: a struct whose module is not loaded is a map
with its ``__struct__`` key; maps list their keys in Erlang's term order, atom keys in
keyword form (``body: "hi"``); a container that does not fit in the width (80) puts
each element on its own line, indented by two, its closing bracket on a line of its
own (Inspect.Algebra's strict breaks)::

    %{
      __struct__: Phoenix.Socket.Broadcast,
      event: "new:msg",
      payload: %{body: "hello from u1", user: "u1"},
      topic: "rooms:lobby"
    }
"""

from __future__ import annotations

import re
from typing import Any

from .etf import Atom, BitBinary, ImproperList, Opaque

WIDTH = 80
_PLAIN_ATOM = re.compile(r"^[a-z_][a-zA-Z0-9_@]*[?!]?$")
_ALIAS = re.compile(r"^Elixir(\.[A-Z][a-zA-Z0-9_]*)+$")
_OPERATORS = frozenset(("+", "-", "*", "/", "==", "!=", "<", ">", "<=", ">=", "<>", "++", "--"))
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r", "\x1b": "\\e"}


def inspect(term: Any, width: int = WIDTH) -> str:
    return _render(term, 0, width)


def atom_text(name: str) -> str:
    """An atom as Elixir writes it: ``:ok``, ``Phoenix.Socket.Broadcast``, ``:"a b"``."""
    if name in ("true", "false", "nil"):
        return name
    if _ALIAS.match(name):
        return name[len("Elixir.") :]
    if _PLAIN_ATOM.match(name) or name in _OPERATORS:
        return ":" + name
    return ':"' + _escape(name) + '"'


def _escape(text: str) -> str:
    return "".join(_ESCAPES.get(c, c) for c in text).replace("#{", "\\#{")


def _binary(data: bytes) -> str:
    try:
        text = data.decode()
    except UnicodeDecodeError:
        text = None
    if text is not None and all(c.isprintable() or c in _ESCAPES for c in text):
        return '"' + _escape(text) + '"'
    return "<<" + ", ".join(str(b) for b in data) + ">>"


def _float(number: float) -> str:
    text = repr(number)
    if "e" in text:
        mantissa, exponent = text.split("e")
        if "." not in mantissa:
            mantissa += ".0"
        return f"{mantissa}e{int(exponent)}"
    return text


def _atom_key(key: Any) -> str | None:
    if isinstance(key, Atom):
        name = key.name
    elif key is None or isinstance(key, bool):
        name = {None: "nil", True: "true", False: "false"}[key]
    else:
        return None
    if _PLAIN_ATOM.match(name):
        return name + ":"
    return '"' + _escape(name) + '":'


def order(term: Any) -> tuple[Any, ...]:
    """Erlang's term order: number < atom < reference < fun < port < pid < tuple < map <
    list < bitstring (enough of it to sort a map's keys as Erlang does)."""
    if isinstance(term, bool) or term is None:
        return (1, {None: "nil", True: "true", False: "false"}[term])
    if isinstance(term, int | float):
        return (0, term)
    if isinstance(term, Atom):
        return (1, term.name)
    if isinstance(term, Opaque):
        return ({"Reference": 2, "Function": 2.5, "Port": 3, "PID": 4}[term.kind], term.raw)
    if isinstance(term, tuple):
        return (5, len(term), tuple(order(t) for t in term))
    if isinstance(term, dict):
        return (6, len(term), sorted(order(k) for k in term))
    if isinstance(term, list | ImproperList):
        return (7, repr(term))
    if isinstance(term, BitBinary):
        return (8, term.data)
    return (8, bytes(term))


def _render(term: Any, column: int, width: int) -> str:
    flat = _flat(term)
    if column + len(flat) <= width:
        return flat
    if isinstance(term, dict) and term:
        keys = sorted(term, key=order)
        atom_keys = all(_atom_key(k) is not None for k in keys)
        lines = []
        for i, key in enumerate(keys):
            if atom_keys:
                head = (_atom_key(key) or "") + " "
            else:
                head = _render(key, column + 2, width) + " => "
            tail = "," if i < len(keys) - 1 else ""
            value = _render(term[key], column + 2 + len(head), width - len(tail))
            lines.append(" " * (column + 2) + head + value + tail)
        return "%{\n" + "\n".join(lines) + "\n" + " " * column + "}"
    if isinstance(term, list | tuple) and term:
        open_, close = ("[", "]") if isinstance(term, list) else ("{", "}")
        lines = []
        for i, item in enumerate(term):
            tail = "," if i < len(term) - 1 else ""
            lines.append(" " * (column + 2) + _render(item, column + 2, width - len(tail)) + tail)
        return open_ + "\n" + "\n".join(lines) + "\n" + " " * column + close
    return flat


def _flat(term: Any) -> str:
    if term is None or isinstance(term, bool):
        return {None: "nil", True: "true", False: "false"}[term]
    if isinstance(term, int):
        return str(term)
    if isinstance(term, float):
        return _float(term)
    if isinstance(term, Atom):
        return atom_text(term.name)
    if isinstance(term, bytes):
        return _binary(term)
    if isinstance(term, dict):
        keys = sorted(term, key=order)
        if all(_atom_key(k) is not None for k in keys):
            inner = [f"{_atom_key(k)} {_flat(term[k])}" for k in keys]
        else:
            inner = [f"{_flat(k)} => {_flat(term[k])}" for k in keys]
        return "%{" + ", ".join(inner) + "}"
    if isinstance(term, tuple):
        return "{" + ", ".join(_flat(t) for t in term) + "}"
    if isinstance(term, list):
        return "[" + ", ".join(_flat(t) for t in term) + "]"
    if isinstance(term, ImproperList):
        return "[" + ", ".join(_flat(t) for t in term.items) + " | " + _flat(term.tail) + "]"
    if isinstance(term, BitBinary):
        head = [str(b) for b in term.data[:-1]]
        return "<<" + ", ".join([*head, f"{term.data[-1]}::size({term.bits})"]) + ">>"
    if isinstance(term, Opaque):
        return f"#{term.kind}<{term.raw.hex()}>"
    return repr(term)
