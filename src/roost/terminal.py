"""``roost chat``: the terminal chat. Lines come from a terminal, a pipe or a file alike.

Standard input is read by a daemon thread, never by the event loop: a loop cannot watch
every kind of input (a file, ``/dev/null``, a terminal in the background), and a thread
reading lines works for all of them. End of input ends the chat cleanly (exit 0, after
the replies to what was sent); a connection the server closes ends it with a message
and exit 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys
import threading
from collections.abc import Sequence
from typing import IO, Any

import click

from .client import Client, JoinRefused

REPLY_WAIT = 10.0


def _reader(
    stream: IO[str], loop: asyncio.AbstractEventLoop, lines: asyncio.Queue[str | None]
) -> None:
    try:
        for line in stream:
            loop.call_soon_threadsafe(lines.put_nowait, line)
    except (OSError, ValueError):  # closed or unreadable input: as its end
        pass
    finally:
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
            loop.call_soon_threadsafe(lines.put_nowait, None)


async def run(
    url: str, room: str, user: str | None, send_text: str | None, stdin: IO[str] | None = None
) -> int:
    params = {"user": user} if user else {}
    client = Client(url, params, reconnect=False)
    try:
        await client.connect()
    except Exception as exc:
        click.echo(f"cannot connect to {url}: {exc}", err=True)
        return 1
    closed: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

    def on_close(code: int | None) -> None:
        if not closed.done():
            closed.set_result(code)

    client.on_close.append(on_close)
    channel = client.channel(f"rooms:{room}", {"user": user} if user else {})

    def show(payload: Any) -> None:
        click.echo(f"[{payload.get('user') or 'anonymous'}] {payload.get('body')}")

    def entered(payload: Any) -> None:
        click.echo(f"* {payload.get('user')} entered")

    try:
        if send_text is None:
            channel.on("new:msg", show)
            channel.on("user:entered", entered)
        try:
            joined = await channel.join()
        except JoinRefused as exc:
            click.echo(f"join refused: {exc.response}", err=True)
            return 1
        if send_text is not None:
            reply = await send_message(channel, send_text)
            if not reply.ok:
                click.echo(f"error: {reply.response}", err=True)
                return 1
            return 0
        click.echo(f"joined rooms:{room} on node {joined.get('node')}; type and press Enter.")
        return await _converse(channel, stdin or sys.stdin, closed)
    finally:
        await client.close()


RETRY_AFTER = (0.5, 1.5, 3.0)  # seconds before each retry of a message (same key)
RETRYABLE = frozenset({"timeout", "temporarily unavailable"})


async def send_message(channel: Any, text: str, retry_after: Sequence[float] = RETRY_AFTER) -> Any:
    """``new:msg`` with an idempotency key, sent again with the same key when the answer
    was ``timeout`` / ``temporarily unavailable`` or did not come: stored once however
    often it goes (the last reply, or the last TimeoutError, is the caller's)."""
    payload = {"body": text, "key": secrets.token_urlsafe(12)}
    for attempt in range(len(retry_after) + 1):
        last = attempt == len(retry_after)
        try:
            reply = await channel.push("new:msg", payload, timeout=REPLY_WAIT)
        except TimeoutError:
            if last:
                raise
        else:
            if reply.ok or last or reply.response.get("reason") not in RETRYABLE:
                return reply
        await asyncio.sleep(retry_after[attempt])
    raise AssertionError("unreachable")


async def _converse(channel: Any, stream: IO[str], closed: asyncio.Future[int | None]) -> int:
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str | None] = asyncio.Queue()
    threading.Thread(target=_reader, args=(stream, loop, lines), daemon=True).start()
    while True:
        next_line = asyncio.ensure_future(lines.get())
        waiting: set[asyncio.Future[Any]] = {next_line, closed}
        done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if closed in done:
            next_line.cancel()
            code = closed.result()
            click.echo(f"connection closed by the server (code {code}); bye", err=True)
            return 1
        line = next_line.result()
        if line is None:  # end of input
            return 0
        text = line.strip()
        if not text:
            continue
        try:
            reply = await send_message(channel, text)
        except (TimeoutError, ConnectionError):
            continue  # the close, if that was it, ends the loop next
        if not reply.ok:
            click.echo(f"error: {reply.response.get('reason')}", err=True)
