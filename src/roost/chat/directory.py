"""The room directory: the busiest public rooms and how many are online in each.

Read from presence (every node's members: Redis' presence store, or this node's with
the memory broker) through ``Presence.busiest``, which reads the store at most once per
two seconds per node, however many ask. Private rooms (``ChatSettings.private``) and,
with an allow-list, rooms not on it are never listed.
"""

from __future__ import annotations

import logging
from typing import Any

from ..channels.presence import Presence
from . import validate

log = logging.getLogger("roost.chat")

PREFIX = "rooms:"
#: Rooms in a directory answer.
TOP = 20
#: Rooms with members looked at, at most, per reading of the store.
SCAN = 1000


async def listing(presence: Presence, settings: Any, top: int = TOP) -> list[dict[str, Any]]:
    """``[{"room": name, "online": connections}, ...]``, the busiest first.

    Raises what the presence store raises (the caller answers ``temporarily
    unavailable``)."""
    rooms = []
    for topic, online in await presence.busiest(PREFIX, SCAN):
        name = topic[len(PREFIX) :]
        if not validate.ROOM_RE.fullmatch(name):
            continue
        if settings is not None and (
            settings.is_private(name) or (settings.rooms is not None and name not in settings.rooms)
        ):
            continue
        rooms.append({"room": name, "online": online})
        if len(rooms) >= top:
            break
    return rooms
