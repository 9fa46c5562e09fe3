"""Reading a request body whole, bounded: for the long-poll POST and ``/api/broadcast``.

``request.content.read(n)`` returns what has arrived so far, not ``n`` bytes: a body
sent in several TCP segments (a proxy streaming it, ``proxy_request_buffering off``)
would be read short. ``read_body`` reads to the end, refusing a body over ``limit`` as
soon as it is known to be too large: from Content-Length before reading anything, or
while reading a chunked body, without ever holding more than ``limit + 1`` bytes.
"""

from __future__ import annotations

from aiohttp import web


class TooLarge(Exception):
    """The body is larger than the limit (answer 413)."""


async def read_body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge
    body = bytearray()
    while True:
        chunk = await request.content.read(limit + 1 - len(body))
        if not chunk:
            return bytes(body)
        body += chunk
        if len(body) > limit:
            raise TooLarge


__all__ = ["TooLarge", "read_body"]
