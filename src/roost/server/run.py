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
import socket as pysocket

from aiohttp import web
from aiohttp.web_runner import GracefulExit

from .front import FrontSite

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
                with contextlib.suppress(asyncio.CancelledError):
                    loop.run_until_complete(main_task)
        finally:
            _cancel_all(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    tasks = asyncio.all_tasks(loop)
    if not tasks:
        return
    for task in tasks:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            loop.call_exception_handler(
                {
                    "message": "unhandled exception during shutdown",
                    "exception": task.exception(),
                    "task": task,
                }
            )
