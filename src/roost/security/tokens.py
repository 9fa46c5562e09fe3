"""Signed, expiring connection tokens (itsdangerous).

A token binds a user name, and optionally the private rooms that user may join:

    token = mint(secret, "al", ttl=3600, rooms=["ops"])
    claims = verify(secret, token, max_age=...)   # → Claims(user="al", rooms=("ops",))

Forged, tampered, wrong-secret and expired tokens all raise ``BadToken`` with a reason.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

SALT = "roost.socket.v1"
MAX_TTL = 30 * 24 * 3600


class BadToken(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Claims:
    user: str
    rooms: tuple[str, ...] = ()
    expires: float = 0.0


def _serializer(secret: str) -> URLSafeTimedSerializer:
    if not secret:
        raise ValueError("a secret is required (ROOST_SECRET)")
    return URLSafeTimedSerializer(secret, salt=SALT)


def mint(secret: str, user: str, ttl: float = 3600.0, rooms: Sequence[str] = ()) -> str:
    if not user or len(user) > 32:
        raise ValueError("user must be 1-32 characters")
    if not 0 < ttl <= MAX_TTL:
        raise ValueError(f"ttl must be between 1 and {MAX_TTL} seconds")
    body = {"u": user, "r": list(rooms), "e": int(time.time() + ttl)}
    return str(_serializer(secret).dumps(body))


def verify(secret: str, token: str) -> Claims:
    try:
        body: Any = _serializer(secret).loads(token, max_age=MAX_TTL)
    except SignatureExpired:
        raise BadToken("expired token") from None
    except BadSignature:
        raise BadToken("invalid token") from None
    if not isinstance(body, dict) or not isinstance(body.get("u"), str):
        raise BadToken("invalid token")
    expires = body.get("e")
    if not isinstance(expires, int) or expires < time.time():
        raise BadToken("expired token")
    rooms = body.get("r") or []
    if not isinstance(rooms, list) or not all(isinstance(r, str) for r in rooms):
        raise BadToken("invalid token")
    return Claims(body["u"], tuple(rooms), float(expires))
