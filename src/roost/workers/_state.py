"""The lifecycle of one worker slot, as a transition table.

::

    PENDING --due--> STARTING --ready--> RUNNING
       ^                |                   |
       |             exited              exited
       +----due---- BACKOFF <---------------+
    STARTING/RUNNING --stop--> STOPPING --exited--> STOPPED
    PENDING/BACKOFF  --stop--> STOPPED

A slot is PENDING until its process is started (at once for the first start, after a
back-off for a restart); STARTING until the worker listens on its private socket;
RUNNING until its process exits. A process that exits while the supervisor is not
stopping is a crash: the slot waits in BACKOFF and starts a new process. Anything not
in the table is a bug and raises.
"""

from __future__ import annotations

from enum import Enum


class State(Enum):
    PENDING = "pending"
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    STOPPING = "stopping"
    STOPPED = "stopped"


class Event(Enum):
    DUE = "due"  # its start time came (supervisor starts a process)
    READY = "ready"  # the worker answers on its private socket
    EXITED = "exited"  # its process ended
    STOP = "stop"  # the supervisor is shutting down


S, E = State, Event

TRANSITIONS: dict[tuple[State, Event], State] = {
    (S.PENDING, E.DUE): S.STARTING,
    (S.PENDING, E.STOP): S.STOPPED,
    (S.STARTING, E.READY): S.RUNNING,
    (S.STARTING, E.EXITED): S.BACKOFF,
    (S.STARTING, E.STOP): S.STOPPING,
    (S.RUNNING, E.EXITED): S.BACKOFF,
    (S.RUNNING, E.STOP): S.STOPPING,
    (S.BACKOFF, E.DUE): S.STARTING,
    (S.BACKOFF, E.STOP): S.STOPPED,
    (S.STOPPING, E.EXITED): S.STOPPED,
    (S.STOPPING, E.STOP): S.STOPPING,
    (S.STOPPED, E.STOP): S.STOPPED,
}


class BadTransition(RuntimeError):
    pass


def step(state: State, event: Event) -> State:
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise BadTransition(f"worker slot: {event.value} in state {state.value}") from None
