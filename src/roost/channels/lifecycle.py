"""The life of one joined channel on a socket, as a transition table (after h11's
``_state.py``): every change of a channel's state is one of these transitions, and
anything else raises.

    JOINING ──join ok──▶ JOINED ──leave / crash / replaced / closed / lost──▶ CLOSED
       └──refused / crash / closed──▶ CLOSED

- JOINING: the ``join`` callback runs; the channel is subscribed *held* (its
  broadcasts are kept until the reply is written).
- JOINED: the ok reply is written; broadcasts flow; ``handle_in`` is called.
- CLOSED: terminated (``terminate`` ran once, presence untracked). A rejoin of the same
  topic is a new channel (Phoenix closes the old one: ``replaced``).

This module imports nothing: the table is read, tested and drawn on its own.
"""

from __future__ import annotations

import enum


class ChannelState(enum.Enum):
    JOINING = "joining"
    JOINED = "joined"
    CLOSED = "closed"


class ChannelEvent(enum.Enum):
    JOIN_OK = "join_ok"  # the ok reply was written
    REFUSED = "refused"  # JoinError, the broker unavailable, or the join crashed
    LEAVE = "leave"  # the client's phx_leave
    CRASH = "crash"  # a callback raised: phx_error
    REPLACED = "replaced"  # a second join of the same topic on the same socket
    CLOSED = "closed"  # the connection went away
    LOST = "lost"  # this node lost the topic's continuity: phx_error, the client rejoins


J, E = ChannelState, ChannelEvent
ENDINGS = (E.LEAVE, E.CRASH, E.REPLACED, E.CLOSED, E.LOST)

TRANSITIONS: dict[tuple[ChannelState, ChannelEvent], ChannelState] = {
    (J.JOINING, E.JOIN_OK): J.JOINED,
    (J.JOINING, E.REFUSED): J.CLOSED,
    (J.JOINING, E.CRASH): J.CLOSED,
    (J.JOINING, E.CLOSED): J.CLOSED,
    **{(J.JOINED, event): J.CLOSED for event in ENDINGS},
}


class LifecycleError(RuntimeError):
    """A transition the table does not have: a bug in the caller."""


def advance(state: ChannelState, event: ChannelEvent) -> ChannelState:
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise LifecycleError(f"channel: no transition {state.value} --{event.value}") from None
