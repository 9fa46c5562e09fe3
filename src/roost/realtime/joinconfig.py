"""The join payload of a Supabase Realtime channel, parsed and checked.

    {"config": {"broadcast": {"self": false, "ack": false},
                "presence": {"key": "", "enabled": false},
                "postgres_changes": [], "private": false},
     "access_token": "..."}

Every field is optional (realtime-js sends them all). What roost cannot honour is
refused with a reason the client shows (``CODE: message``, the server's style):
``postgres_changes`` filters, ``broadcast.replay`` and ``broadcast.replication_ready``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any


class Invalid(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


NOT_SUPPORTED = (
    "PostgresChangesNotSupported: this server carries Broadcast and Presence only; "
    "postgres_changes is not supported"
)


@dataclass(frozen=True)
class JoinConfig:
    self_broadcast: bool = False
    ack: bool = False
    presence_key: str = ""
    presence_enabled: bool = False
    private: bool = False
    #: the join's access token (``access_token``, or the older ``user_token``); None: none
    access_token: str | None = None


def _flag(obj: dict[str, Any], name: str, where: str) -> bool:
    """A boolean, also as the strings "true"/"false" (the server's FlexibleBoolean)."""
    value = obj.get(name)
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return bool(value == "true")
    raise Invalid(f"InvalidJoinPayload: {where}.{name} must be a boolean")


def _section(config: dict[str, Any], name: str) -> dict[str, Any]:
    value = config.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Invalid(f"InvalidJoinPayload: config.{name} must be an object")
    return value


def _key(presence: dict[str, Any]) -> str:
    key = presence.get("key")
    if key is None or key == "":
        return str(uuid.uuid4())  # the server's default: a generated id per join
    if isinstance(key, bool) or not isinstance(key, str | int):
        raise Invalid("InvalidJoinPayload: config.presence.key must be a string")
    key = str(key)
    if len(key) > 255:
        raise Invalid("InvalidJoinPayload: config.presence.key is longer than 255 characters")
    return key


def parse(payload: Any) -> JoinConfig:
    """Raise ``Invalid`` for a payload roost refuses."""
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise Invalid("InvalidJoinPayload: the join payload must be an object")
    config = payload.get("config")
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise Invalid("InvalidJoinPayload: config must be an object")
    changes = config.get("postgres_changes")
    if changes is not None and not isinstance(changes, list):
        raise Invalid("InvalidJoinPayload: config.postgres_changes must be an array")
    if any(change is not None for change in changes or ()):
        raise Invalid(NOT_SUPPORTED)
    broadcast = _section(config, "broadcast")
    if broadcast.get("replay") is not None:
        raise Invalid("ReplayNotSupported: broadcast.replay is not supported by this server")
    if _flag(broadcast, "replication_ready", "config.broadcast"):
        raise Invalid(
            "ReplicationNotSupported: broadcast.replication_ready needs Postgres changes, "
            "which this server does not carry"
        )
    presence = _section(config, "presence")
    token = payload.get("access_token") or payload.get("user_token")
    if token is not None and not isinstance(token, str):
        raise Invalid("InvalidJoinPayload: access_token must be a string")
    return JoinConfig(
        self_broadcast=_flag(broadcast, "self", "config.broadcast"),
        ack=_flag(broadcast, "ack", "config.broadcast"),
        presence_key=_key(presence),
        presence_enabled=_flag(presence, "enabled", "config.presence"),
        private=_flag(config, "private", "config"),
        access_token=token,
    )
