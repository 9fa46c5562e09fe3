"""The supervisor's bookkeeping: N worker slots, restarts with back-off, stopping.

Pure logic over an injectable clock and two callables — ``start(index, takeover)``
starts a worker process and returns it with its node-name claim, ``ready(index)`` says
whether it answers yet — so the timing rules are tested without processes and the
real ones (process.py) stay a thin shell.

Rules:

- A worker that exits while the supervisor is not stopping is restarted: after
  ``RESTART_DELAY`` the first time, doubling for every further crash within
  ``STABLE`` seconds of its start (a crash loop), at most ``MAX_DELAY``. The new process
  takes over the dead one's node-name claim (``takeover``), so it gets its name back at
  once instead of waiting for the claim's TTL.
- A worker that exits before it was ever ready, on the group's first start, is a
  configuration error (its port is taken, its node name is in use, Redis refuses it):
  ``fatal`` is set with its exit code and the supervisor stops the group instead of
  looping.
- ``stop(sig)`` passes the signal to every worker (each drains its own sockets, spread
  over ``--drain-window``); ``kill()`` ends those still alive after the grace time.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ._state import Event, State, step

log = logging.getLogger("roost.workers")

RESTART_DELAY = 0.5
MAX_DELAY = 30.0
STABLE = 10.0


class Proc(Protocol):
    pid: int

    def poll(self) -> int | None: ...

    def send_signal(self, sig: int) -> None: ...

    def kill(self) -> None: ...


Start = Callable[[int, str | None], tuple[Proc, str]]


@dataclass(slots=True)
class Slot:
    index: int
    state: State = State.PENDING
    proc: Proc | None = None
    instance: str = ""  # the current process's node-name claim
    takeover: str | None = None  # a dead predecessor's claim
    due: float = 0.0
    started: float = 0.0
    quick_crashes: int = 0
    starts: int = 0
    ever_ready: bool = False

    def event(self, event: Event) -> None:
        self.state = step(self.state, event)


class Supervisor:
    def __init__(
        self,
        count: int,
        start: Start,
        ready: Callable[[int], bool],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.slots = [Slot(k) for k in range(1, count + 1)]
        self.start = start
        self.ready = ready
        self.clock = clock
        self.stopping = False
        self.fatal: int | None = None
        self.restarts = 0

    def tick(self) -> None:
        """Reap exited workers, start due ones, notice ready ones."""
        now = self.clock()
        for slot in self.slots:
            if slot.proc is not None:
                code = slot.proc.poll()
                if code is not None:
                    self._exited(slot, code, now)
            if self.stopping:
                continue
            if slot.state in (State.PENDING, State.BACKOFF) and now >= slot.due:
                self._start(slot, now)
            elif slot.state is State.STARTING and self.ready(slot.index):
                slot.event(Event.READY)
                slot.ever_ready = True
                log.info("worker w%d ready (pid %d)", slot.index, _pid(slot))

    def _start(self, slot: Slot, now: float) -> None:
        slot.proc, slot.instance = self.start(slot.index, slot.takeover)
        slot.started = now
        slot.starts += 1
        slot.event(Event.DUE)
        log.info("worker w%d started (pid %d)", slot.index, slot.proc.pid)

    def _exited(self, slot: Slot, code: int, now: float) -> None:
        pid = _pid(slot)
        slot.proc = None
        first_start = slot.state is State.STARTING and not any(s.ever_ready for s in self.slots)
        slot.event(Event.EXITED)
        if slot.state is not State.BACKOFF:
            log.info("worker w%d (pid %d) stopped with %s", slot.index, pid, _how(code))
            return
        if first_start and not self.stopping:
            log.error("worker w%d (pid %d) could not start: %s", slot.index, pid, _how(code))
            self.fatal = code if code > 0 else 1
            self.stop(signal.SIGTERM)
            return
        slot.quick_crashes = slot.quick_crashes + 1 if now - slot.started < STABLE else 1
        delay = min(MAX_DELAY, RESTART_DELAY * 2 ** (slot.quick_crashes - 1))
        slot.due = now + delay
        slot.takeover = slot.instance
        self.restarts += 1
        log.warning(
            "worker w%d (pid %d) exited with %s; restarting in %.1fs",
            slot.index,
            pid,
            _how(code),
            delay,
        )

    def stop(self, sig: int) -> None:
        """Pass ``sig`` to every live worker; start nothing more."""
        self.stopping = True
        for slot in self.slots:
            if slot.proc is not None and slot.state is not State.STOPPING:
                with contextlib.suppress(ProcessLookupError):  # exited: the next tick reaps it
                    slot.proc.send_signal(sig)
            slot.event(Event.STOP)

    def kill(self) -> None:
        for slot in self.slots:
            if slot.proc is not None:
                log.warning("worker w%d (pid %d) did not stop: killed", slot.index, _pid(slot))
                with contextlib.suppress(ProcessLookupError):
                    slot.proc.kill()

    @property
    def done(self) -> bool:
        return all(slot.state is State.STOPPED for slot in self.slots)

    def live(self) -> dict[int, int]:
        """index → pid of every worker process alive now."""
        return {s.index: s.proc.pid for s in self.slots if s.proc is not None}


def _pid(slot: Slot) -> int:
    return slot.proc.pid if slot.proc is not None else -1


def _how(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"
