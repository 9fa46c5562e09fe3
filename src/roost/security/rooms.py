"""Who may join a room: the policy the chat and the realtime channels share.

The chat's ``ChatSettings`` (``--secret``, ``--rooms``, ``--private-rooms``) is one; the
endpoint carries it as ``settings["rooms"]`` so every channel family and the REST API
authorize rooms the same way without knowing the chat.
"""

from __future__ import annotations

from typing import Any, Protocol


class RoomPolicy(Protocol):
    #: verifies tokens (``security.tokens``); empty: tokens are not enabled
    @property
    def secret(self) -> str: ...

    def is_private(self, room: str) -> bool:
        """Only users whose token lists the room may join it."""
        ...

    def may_join(self, room: str, assigns: dict[str, Any]) -> bool:
        """A socket (or channel) with these assigns may join ``room``."""
        ...


#: The key of ``Endpoint.settings`` that holds the RoomPolicy.
SETTINGS_KEY = "rooms"
