"""A client channel's states (phoenix.js's ``CHANNEL_STATES``) and the transitions
between them, as one table; anything else raises. The values are phoenix.js's
strings, so ``channel.state == "joined"`` keeps working.

    closed ─join─▶ joining ─ok─▶ joined ─error/disconnected─▶ errored ─join─▶ joining
                      └─failed/error/disconnected─▶ errored
    any ─leave─▶ leaving ─closed─▶ closed        (phx_close: any ─closed─▶ closed)
"""

from __future__ import annotations

import enum


class ChannelState(enum.StrEnum):
    CLOSED = "closed"
    JOINING = "joining"
    JOINED = "joined"
    ERRORED = "errored"
    LEAVING = "leaving"


class ChannelEvent(enum.Enum):
    JOIN = "join"  # a phx_join is sent
    JOINED = "joined"  # its ok reply
    FAILED = "failed"  # refused, timed out, or the connection went away while joining
    ERROR = "error"  # phx_error from the server
    DISCONNECTED = "disconnected"  # the socket closed
    LEAVE = "leave"  # a phx_leave is sent
    CLOSED = "closed"  # phx_close, or the leave finished


S, E = ChannelState, ChannelEvent
TRANSITIONS: dict[tuple[ChannelState, ChannelEvent], ChannelState] = {
    (S.CLOSED, E.JOIN): S.JOINING,
    (S.ERRORED, E.JOIN): S.JOINING,
    (S.JOINING, E.JOINED): S.JOINED,
    (S.JOINING, E.FAILED): S.ERRORED,
    (S.ERRORED, E.FAILED): S.ERRORED,  # the connection dropped first, then the join failed
    (S.JOINING, E.ERROR): S.ERRORED,
    (S.JOINED, E.ERROR): S.ERRORED,
    (S.ERRORED, E.ERROR): S.ERRORED,
    (S.JOINING, E.DISCONNECTED): S.ERRORED,
    (S.JOINED, E.DISCONNECTED): S.ERRORED,
    **{(state, E.LEAVE): S.LEAVING for state in S},
    **{(state, E.CLOSED): S.CLOSED for state in S},
}


def advance(state: ChannelState, event: ChannelEvent) -> ChannelState:
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise RuntimeError(f"client channel: no transition {state.value} --{event.value}") from None
