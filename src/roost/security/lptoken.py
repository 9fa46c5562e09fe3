"""Long-poll session tokens: signed, naming the node that owns the session.

    tokens = SessionTokens(key)                 # key: the cluster-shared secret, or None
    token = tokens.sign("n1", sid)              # "lp.<payload>.<signature>"
    node, sid = tokens.verify(token)            # BadToken: forged, tampered, too old
    node, sid = tokens.claimed(token)           # what it says, without checking it

The payload (owner node, session id, issue time) is readable, only the signature is
secret: the session id alone — which other nodes see in forwarded requests, and so
does anyone reading Redis — does not make a token. ``proof(token)`` is a one-way
digest of a token: an owner can check that a request relayed by another node came
with the session's real token, although the relay never carries the token itself.

With ``key=None`` the key is random, this process's own: a token verifies only on the
node that signed it (``shared`` is False), and other nodes can only read the owner
from it and relay the request there with the proof.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

from .tokens import BadToken

PREFIX = "lp."
CONTEXT = b"roost.longpoll.v1"
#: How long a token stays valid, as Phoenix's long-poll ``crypto: [max_age:]`` (2 weeks).
MAX_AGE = 14 * 24 * 3600.0
MAX_TOKEN = 512  # longer is not ours: refused before any parsing


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionTokens:
    def __init__(
        self,
        key: bytes | None,
        *,
        max_age: float = MAX_AGE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.shared = bool(key)
        secret = key if key else secrets.token_bytes(32)
        # A key of its own for this use: the same secret also signs user tokens.
        self._key = hmac.new(secret, CONTEXT, hashlib.sha256).digest()
        self.max_age = max_age
        self.clock = clock

    def sign(self, node: str, sid: str) -> str:
        payload = _b64(f"{node}\n{sid}\n{int(self.clock())}".encode())
        return f"{PREFIX}{payload}.{self._signature(payload)}"

    def _signature(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def _split(self, token: str) -> tuple[str, str, str, float, str]:
        """(payload, node, sid, issued, signature), unchecked; BadToken if malformed."""
        if len(token) > MAX_TOKEN or not token.isascii() or not token.startswith(PREFIX):
            raise BadToken("invalid token")
        payload, _, signature = token[len(PREFIX) :].partition(".")
        try:
            node, sid, issued = _unb64(payload).decode().split("\n")
            return payload, node, sid, float(int(issued)), signature
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise BadToken("invalid token") from None

    def claimed(self, token: str) -> tuple[str, str]:
        """(owner node, session id) as the token says: not verified."""
        _, node, sid, _, _ = self._split(token)
        return node, sid

    def verify(self, token: str) -> tuple[str, str]:
        """(owner node, session id) of a token this key signed and not older than max_age."""
        payload, node, sid, issued, signature = self._split(token)
        if not hmac.compare_digest(signature.encode(), self._signature(payload).encode()):
            raise BadToken("invalid token")
        if not issued <= self.clock() + 60 or self.clock() - issued > self.max_age:
            raise BadToken("expired token")
        return node, sid


def proof(token: str) -> str:
    """A one-way digest of ``token``: relayed instead of the token, compared by the owner."""
    return hashlib.sha256(token.encode()).hexdigest()


__all__ = ["MAX_AGE", "PREFIX", "BadToken", "SessionTokens", "proof"]
