"""``roost serve``'s loop: the app on a FrontSite, shut down as ``web.run_app`` does.

SIGTERM/SIGINT end the serving task; its ``runner.cleanup()`` then closes the listener,
runs the app's ``on_shutdown`` hooks (the drain: the node reports not ready at once and
closes its sockets with 1012 over ``--drain-window``), closes aiohttp's connections
(``SHUTDOWN_TIMEOUT``) and runs the cleanup hooks (the broker stops). Then the other
tasks are cancelled and the loop closed — the order ``web.run_app`` keeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket as pysocket

from aiohttp import web
from aiohttp.web_runner import GracefulExit

from .front import FrontSite

log = logging.getLogger("roost.server")

SHUTDOWN_TIMEOUT = 3.0
#: Connections the kernel queues before roost accepts them (aiohttp's default is 128): a
#: reconnect storm of tens of thousands of clients overflows a small queue into SYN
#: retries, a second or more each.
BACKLOG = 4096


async def _serve(
    app: web.Application,
    host: str | None,
    port: int,
    reuse_port: bool,
    sock: pysocket.socket | None,
) -> None:
    runner = web.AppRunner(
        app, handle_signals=True, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT
    )
    await runner.setup()
    try:
        site = FrontSite(runner, host, port, reuse_port=reuse_port, sock=sock, backlog=BACKLOG)
        await site.start()
        while True:
            await asyncio.sleep(3600)
    finally:
        await runner.cleanup()


def run(
    app: web.Application,
    host: str | None,
    port: int,
    *,
    reuse_port: bool = False,
    sock: pysocket.socket | None = None,
) -> None:
    """Serve ``app`` until SIGTERM/SIGINT (``sock``: an inherited listening socket)."""
    loop = asyncio.new_event_loop()
    main_task = loop.create_task(_serve(app, host, port, reuse_port, sock))
    try:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(main_task)
    except (GracefulExit, KeyboardInterrupt):
        pass
    finally:
        try:
            if not main_task.done():
                main_task.cancel()
                slow = loop.call_later(SLOW_SHUTDOWN, _report_slow, loop)
                stuck = loop.call_later(STUCK_SHUTDOWN, _abandon, main_task)
                with contextlib.suppress(asyncio.CancelledError):
                    loop.run_until_complete(main_task)
                slow.cancel()
                stuck.cancel()
        finally:
            _cancel_all(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()


SLOW_SHUTDOWN = 12.0  # past the default drain window and the 3 s shutdown timeout
#: A cleanup still waiting then is abandoned (cancelled where it waits) and the process
#: exits: a stop must end (a supervisor or an orchestrator would kill it anyway).
STUCK_SHUTDOWN = 20.0


def _abandon(task: asyncio.Task[None]) -> None:
    log.error("shutdown stuck for %.0f s: abandoning the cleanup", STUCK_SHUTDOWN)
    task.cancel()


def _report_slow(loop: asyncio.AbstractEventLoop) -> None:
    """The shutdown is taking long: log what every task is waiting for."""
    tasks = asyncio.all_tasks(loop)
    log.warning("shutdown still running after %.0f s; %d tasks:", SLOW_SHUTDOWN, len(tasks))
    for task in tasks:
        log.warning("task %s%s", task.get_name(), "".join(_awaiting(task.get_coro())))


def _awaiting(coro: object) -> list[str]:
    """The chain of coroutines ``coro`` waits in, outermost first."""
    lines: list[str] = []
    while coro is not None and len(lines) < 40:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            lines.append(
                f"\n    {frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}"
            )
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    if coro is not None:
        lines.append(f"\n    ... {coro!r}")
    return lines


#: After the cleanup, what is left is cancelled and given this long to end; a task still
#: running then is logged (where it waits) and left: the process exits anyway.
CANCEL_TIMEOUT = SHUTDOWN_TIMEOUT


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    tasks = asyncio.all_tasks(loop)
    if not tasks:
        return
    for task in tasks:
        task.cancel()
    # Bounded: a task that outlives its cancel (a library that waits out a socket
    # timeout first) must not hold the exit unseen, as an unbounded gather did.
    _, pending = loop.run_until_complete(asyncio.wait(tasks, timeout=CANCEL_TIMEOUT))
    for task in pending:
        log.error(
            "task %s still running %.0f s after its cancel; left%s",
            task.get_name(),
            CANCEL_TIMEOUT,
            "".join(_awaiting(task.get_coro())),
        )
    for task in tasks - pending:
        if not task.cancelled() and task.exception() is not None:
            loop.call_exception_handler(
                {
                    "message": "unhandled exception during shutdown",
                    "exception": task.exception(),
                    "task": task,
                }
            )
