"""The WebSocket upgrade request as the front listener sees it, and its answers.

``parse_head`` reads a request head strictly (request line, ``name: value`` lines);
whatever it does not accept the front hands to aiohttp, which answers as it always
has. ``HandshakeRequest`` is the small request-like object admission reads (client
address, headers, Host, query, per-request slots) — dropped after the 101, so an open
connection keeps none of it. ``response`` and ``switching`` build the bytes of a
refusal and of the 101, with the headers the aiohttp path sends (``Server: roost``,
nosniff).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import socket
import time
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy, MultiDictProxy
from yarl import URL

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET = re.compile(rb"/[\x21-\x7e]*")


class Head:
    """A parsed request head: the target's path and query string, the headers."""

    __slots__ = ("headers", "path", "query_string")

    def __init__(self, path: str, query_string: str, headers: CIMultiDict[str]) -> None:
        self.path = path
        self.query_string = query_string
        self.headers = headers


def parse_head(head: bytes) -> Head | None:
    """``GET <target> HTTP/1.1`` and its header lines (no final blank line), or None.

    None for anything else — another method or version, an absolute or odd target,
    folded or malformed header lines — so the caller lets aiohttp answer it.
    """
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[0] != b"GET" or parts[2] != b"HTTP/1.1":
        return None
    if not _TARGET.fullmatch(parts[1]):
        return None
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.fullmatch(name) or b"\n" in value or b"\r" in value:
            return None
        headers.add(name.decode("ascii"), value.strip(b" \t").decode("utf-8", "surrogateescape"))
    path, _, query = parts[1].decode("ascii").partition("?")
    return Head(path, query, headers)


def is_upgrade(headers: CIMultiDict[str]) -> bool:
    """``Upgrade: websocket`` and ``Connection: ... upgrade ...``, nothing in a body."""
    if headers.get("Upgrade", "").strip().lower() != "websocket":
        return False
    tokens = {t.strip().lower() for t in headers.get("Connection", "").split(",")}
    if "upgrade" not in tokens:
        return False
    return "Transfer-Encoding" not in headers and headers.get("Content-Length", "0") == "0"


def check_key(headers: CIMultiDict[str]) -> tuple[str | None, str | None]:
    """(the Sec-WebSocket-Accept value, None) or (None, the 400 text aiohttp would send)."""
    version = headers.get("Sec-WebSocket-Version", "")
    if version not in ("13", "8", "7"):
        return None, f"Unsupported version: {version}"
    key = headers.get("Sec-WebSocket-Key")
    try:
        if not key or len(base64.b64decode(key)) != 16:
            return None, f"Handshake error: {key!r}"
    except binascii.Error:
        return None, f"Handshake error: {key!r}"
    return base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode(), None


class HandshakeRequest:
    """What ``admission.admit`` reads of a request, for an upgrade the front parsed."""

    __slots__ = ("app", "headers", "path", "query", "query_string", "remote", "slots")

    secure = False  # the front serves plain TCP (TLS ends at the proxy)

    def __init__(self, app: web.Application, head: Head, peer: Any) -> None:
        self.app = app
        self.headers: CIMultiDictProxy[str] = CIMultiDictProxy(head.headers)
        self.path = head.path
        self.query_string = head.query_string
        self.query: MultiDictProxy[str] = URL.build(
            path=head.path, query_string=head.query_string, encoded=True
        ).query
        self.remote = peer[0] if isinstance(peer, (list, tuple)) and peer else None
        self.slots: dict[Any, Any] = {}

    @property
    def host(self) -> str:
        host = self.headers.get("Host")
        return host if host is not None else socket.getfqdn()

    def get(self, key: Any, default: Any = None) -> Any:
        return self.slots.get(key, default)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.slots[key] = value


_date: tuple[int, str] = (0, "")


def _http_date() -> str:
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, formatdate(now, usegmt=True))
    return _date[1]


def _common() -> str:
    return f"Date: {_http_date()}\r\nServer: roost\r\nX-Content-Type-Options: nosniff\r\n"


def response(status: int, text: str, headers: Any = None) -> bytes:
    """A complete plain-text HTTP/1.1 response that closes the connection."""
    body = text.encode()
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    return (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
        f"{extra}{_common()}Connection: close\r\n\r\n"
    ).encode() + body


def refusal(resp: web.Response) -> bytes:
    """The bytes of an admission refusal (status, text, Retry-After as aiohttp sends them)."""
    after = resp.headers.get("Retry-After")
    return response(resp.status, resp.text or "", {"Retry-After": after} if after else None)


def switching(accept: str, phoenix: bool) -> bytes:
    """The 101 that completes the upgrade (``phoenix`` echoed when the client offered it)."""
    proto = "Sec-WebSocket-Protocol: phoenix\r\n" if phoenix else ""
    return (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept}\r\n{proto}{_common()}\r\n"
    ).encode()
