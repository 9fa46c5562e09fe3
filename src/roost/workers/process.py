"""``roost serve --workers N``: the supervisor process, a thin shell over Supervisor.

It resolves the port (so that ``--port 0`` means one port for all workers), starts N
``roost serve`` processes that find their role in ``ROOST_WORKER`` (role.py), and then
only watches: restarts a worker that died, passes SIGTERM/SIGINT on (each worker drains
its own sockets, spread over ``--drain-window``, so the group's clients leave spread
out too) and kills what is still alive ``GRACE`` seconds after the window.

How the workers share the port (``--worker-socket``):

- ``reuseport`` (the default on Linux): every worker binds the port with SO_REUSEPORT
  and has its own accept queue; the kernel spreads new connections by a hash of their
  addresses. A restarted worker binds again; while it is down the others take all new
  connections. With ``--port 0`` the supervisor binds the port first (SO_REUSEPORT,
  not listening: it holds the number and never takes a connection).
- ``shared`` (the default elsewhere: on macOS and the BSDs SO_REUSEPORT does not spread
  connections, the last socket bound gets them all): the supervisor binds and listens,
  and every worker accepts on that inherited socket.

Workers run in their own session (a terminal's ^C reaches only the supervisor, which
passes one SIGTERM on) and die with the supervisor (Linux: PR_SET_PDEATHSIG), so a
killed supervisor leaves no orphan serving the port.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

from ..server.fdlimit import raise_fd_limit
from ._state import State
from .role import ENV, Role
from .supervisor import Proc, Supervisor

log = logging.getLogger("roost.workers")

GRACE = 10.0
TICK = 0.05
IDLE_TICK = 5.0
WATCHED = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT)


class _Signals:
    """The supervisor's sleep: woken at once by a child's exit, SIGTERM or SIGINT.

    Linux: the three are blocked and awaited with sigtimedwait (an idle supervisor wakes
    every IDLE_TICK, not 20 times a second). Elsewhere: handlers and short sleeps.
    """

    def __init__(self) -> None:
        self.asked: signal.Signals | None = None
        self.blocking = hasattr(signal, "sigtimedwait")
        if self.blocking:
            signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED)
        else:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self._handler)

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.asked = self.asked or signal.Signals(signum)

    def sleep(self, timeout: float) -> None:
        if not self.blocking:
            time.sleep(min(timeout, TICK))
            return
        got = signal.sigtimedwait(WATCHED, timeout)
        if got is not None and got.si_signo != signal.SIGCHLD:
            self.asked = self.asked or signal.Signals(got.si_signo)

    def restore(self) -> None:
        if self.blocking:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, WATCHED)


def supervise(cfg: Any, node: str) -> int:
    """Run the group until SIGTERM/SIGINT; the exit code (0, or a worker's that failed)."""
    count = cfg.worker_count()
    limit = raise_fd_limit()
    directory = Path(tempfile.mkdtemp(prefix="roost-workers-"))  # mode 0700
    held, port = _listen(cfg.host, cfg.port, cfg.worker_socket)
    fd = held.fileno() if cfg.worker_socket == "shared" else None
    config = {**dataclasses.asdict(cfg), "port": port}

    def start(index: int, takeover: str | None) -> tuple[Proc, str]:
        instance = os.urandom(8).hex()
        role = Role(index, count, node, str(directory), instance, takeover, port, fd, config)
        proc = subprocess.Popen(
            [sys.executable, "-m", "roost", "serve"],
            env={**os.environ, ENV: role.to_env()},
            pass_fds=(fd,) if fd is not None else (),
            preexec_fn=_die_with_parent,
            start_new_session=True,  # a terminal's ^C reaches the supervisor only
        )
        return proc, instance

    def ready(index: int) -> bool:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(directory / f"w{index}.sock"))
            return True
        except OSError:
            return False
        finally:
            probe.close()

    log.info(
        "roost supervisor node=%s workers=%d url=http://%s:%d/ socket=%s file-limit=%d",
        node,
        count,
        cfg.host,
        port,
        cfg.worker_socket,
        limit,
    )
    sup = Supervisor(count, start, ready)
    wait = _Signals()
    deadline: float | None = None
    try:
        while not sup.done:
            if wait.asked and not sup.stopping:
                log.info("supervisor: %s, stopping %d workers", wait.asked.name, count)
                sup.stop(signal.SIGTERM)
            sup.tick()
            if sup.stopping and deadline is None:
                deadline = time.monotonic() + cfg.drain_window + GRACE
            if deadline is not None and time.monotonic() > deadline:
                sup.kill()
                deadline = float("inf")
            # Quick ticks while anything is on its way; asleep (until a signal) when all run.
            busy = sup.stopping or any(slot.state is not State.RUNNING for slot in sup.slots)
            wait.sleep(TICK if busy else IDLE_TICK)
    finally:
        wait.restore()
        held.close()
        shutil.rmtree(directory, ignore_errors=True)
    log.info("supervisor stopped (%d restarts)", sup.restarts)
    return sup.fatal or 0


def _listen(host: str, port: int, mode: str) -> tuple[socket.socket, int]:
    """The socket the supervisor holds: listening (shared) or only the port (reuseport)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if mode == "reuseport":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    if mode == "shared":
        sock.listen(BACKLOG)
        sock.set_inheritable(True)
    return sock, sock.getsockname()[1]


BACKLOG = 4096


def _die_with_parent() -> None:
    """In the child, before exec: its signals unblocked (the supervisor blocks those it
    waits for, and a mask survives exec), and SIGTERM when the supervisor dies (Linux)."""
    if hasattr(signal, "sigtimedwait"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, WATCHED)
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
