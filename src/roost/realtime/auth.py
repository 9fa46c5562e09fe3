"""Access tokens and room authorization for Supabase Realtime channels.

The ``access_token`` of a join (or of an ``access_token`` push) is a roost token
(``roost token``), verified as the connect hook verifies one (``security.tokens``).
A Supabase API key — ``sb_...``, or a legacy anon key (a JWT whose claims say
``"role": "anon"``), what the Supabase clients send when no user is signed in — stands
for "no user token": the socket's own identity applies. Such a key is not verified:
it claims no more than the socket already has. Rooms are authorized
by the endpoint's ``RoomPolicy`` (the chat's ``--rooms``/``--private-rooms``).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from ..security import tokens
from ..security.rooms import RoomPolicy
from .joinconfig import Invalid

API_KEY_PREFIX = "sb_"


def is_api_key(token: str) -> bool:
    """``sb_...``, or a JWT claiming only the ``anon`` role (read, not verified)."""
    if token.startswith(API_KEY_PREFIX):
        return True
    parts = token.split(".")
    if len(parts) != 3 or not token.startswith("eyJ") or len(token) > 4096:
        return False
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(claims, dict) and claims.get("role") == "anon"


@dataclass(frozen=True)
class Identity:
    assigns: dict[str, Any]
    #: wall-clock expiry of the token that gave it (None: the socket's own identity)
    expires: float | None = None


def identify(policy: RoomPolicy | None, token: str | None, assigns: dict[str, Any]) -> Identity:
    """The identity a channel acts with; ``Invalid`` for a bad or expired token."""
    if not token or is_api_key(token):
        return Identity(assigns)
    if policy is None or not policy.secret:
        raise Invalid("InvalidJWTToken: tokens are not enabled on this server")
    try:
        claims = tokens.verify(policy.secret, token)
    except tokens.BadToken as exc:
        raise Invalid(f"InvalidJWTToken: {exc.reason}") from None
    merged = {**assigns, "user": claims.user, "verified": True, "rooms": claims.rooms}
    return Identity(merged, claims.expires)


def authorize(policy: RoomPolicy | None, room: str, assigns: dict[str, Any], private: bool) -> None:
    """Raise ``Invalid`` unless these assigns may join ``room``.

    A room is private when the server says so (``--private-rooms``): a join needs a
    token listing it, whatever its ``private`` flag. ``private: true`` on a room the
    server keeps public is refused: its messages would reach anybody.
    """
    if private and (policy is None or not policy.is_private(room)):
        raise Invalid(
            f"Unauthorized: {room} is not a private channel on this server (--private-rooms)"
        )
    if policy is not None and not policy.may_join(room, assigns):
        raise Invalid(
            f"Unauthorized: You do not have permissions to read from this Channel topic: {room}"
        )
