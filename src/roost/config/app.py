"""What the node keeps and serves besides: long-poll, drain, history, presence, extras."""

from __future__ import annotations

from dataclasses import dataclass

from ..channels.presence import Presence
from ..pubsub import HistoryPolicy
from ..server import build_app
from .option import default_of, opt

H = HistoryPolicy


@dataclass(frozen=True)
class AppOptions:
    longpoll_window: float = opt(
        default_of(build_app, "longpoll_window"),
        "--longpoll-window",
        "ROOST_LONGPOLL_WINDOW",
        "Seconds a long-poll GET waits for messages.",
    )
    drain_window: float = opt(
        default_of(build_app, "drain_window"),
        "--drain-window",
        "ROOST_DRAIN_WINDOW",
        "On SIGTERM, seconds over which sockets are closed (1012).",
    )
    history_size: int = opt(
        H.max_len,
        "--history-size",
        "ROOST_HISTORY_SIZE",
        "Messages kept per room for late joiners and recovery.",
    )
    history_ttl: float = opt(
        H.max_age, "--history-ttl", "ROOST_HISTORY_TTL", "Seconds a message stays in history."
    )
    history_bytes: int = opt(
        H.max_bytes,
        "--history-bytes",
        "ROOST_HISTORY_BYTES",
        "Bytes of history kept per room (oldest messages dropped first).",
        minimum=1,
    )
    history_rooms: int = opt(
        H.max_rooms,
        "--history-rooms",
        "ROOST_HISTORY_ROOMS",
        "Rooms with history per node (memory broker; an idle room is evicted first).",
        minimum=1,
    )
    presence_batch: float = opt(
        default_of(Presence.__init__, "batch"),
        "--presence-batch",
        "ROOST_PRESENCE_BATCH",
        "Seconds over which a room's presence changes are merged into one diff (0: none).",
    )
    presence_timeout: float = opt(
        30.0,
        "--presence-timeout",
        "ROOST_PRESENCE_TIMEOUT",
        "Seconds after which the users of a node that died are shown as gone.",
    )
    echo: bool = opt(
        False, "--echo", "ROOST_ECHO", "Also serve the diagnostic echo:* channel.", is_flag=True
    )
    realtime: bool = opt(
        False,
        "--realtime",
        "ROOST_REALTIME",
        "Also serve Supabase Realtime clients: realtime:* channels (Broadcast, Presence).",
        is_flag=True,
    )

    def history(self) -> HistoryPolicy:
        return HistoryPolicy(
            max_len=self.history_size,
            max_age=self.history_ttl,
            max_bytes=self.history_bytes,
            max_rooms=self.history_rooms,
        )
