"""``roost chat`` with every kind of standard input: a pipe, a file, /dev/null, a terminal
(a real pty) — lines are sent, end of input ends it cleanly, nothing prints a traceback —
and a connection the server closes ends it with a message."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from roost.client import Client

from support import start_server


def chat(url: str, user: str, **kw: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "roost", "chat", "--url", url, "--user", user, "--room", "tty"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


async def listen(url: str) -> tuple[Client, list[str]]:
    bodies: list[str] = []
    client = Client(url, {"user": "watcher"})
    await client.connect()
    room = client.channel("rooms:tty", {"user": "watcher"})
    room.on("new:msg", lambda p: bodies.append(f"{p['user']}: {p['body']}"))
    await room.join()
    return client, bodies


async def until(pred: Any, timeout: float = 15.0) -> None:
    import asyncio

    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


async def test_a_pipe_a_file_and_dev_null(roost_server: Any, tmp_path: Path) -> None:
    client, bodies = await listen(roost_server.ws_url)
    try:
        piped = chat(roost_server.ws_url, "pipe", stdin=subprocess.PIPE)
        out, err = piped.communicate("one\n\ntwo\n", timeout=30)
        assert piped.returncode == 0, err
        assert "Traceback" not in err and "joined rooms:tty" in out

        lines = tmp_path / "lines.txt"
        lines.write_text("from a file\n")
        with lines.open() as f:
            filed = chat(roost_server.ws_url, "file", stdin=f)
            out, err = filed.communicate(timeout=30)
        assert filed.returncode == 0 and "Traceback" not in err, err

        with open(os.devnull) as null:
            nothing = chat(roost_server.ws_url, "null", stdin=null)
            out, err = nothing.communicate(timeout=30)
        assert nothing.returncode == 0 and err == "", err

        await until(lambda: len(bodies) == 3)
        assert bodies == ["pipe: one", "pipe: two", "file: from a file"]
    finally:
        await client.close()


async def test_a_terminal(roost_server: Any) -> None:
    client, bodies = await listen(roost_server.ws_url)
    leader, follower = pty.openpty()
    try:
        proc = chat(roost_server.ws_url, "tty", stdin=follower)
        os.close(follower)
        os.write(leader, b"typed on a terminal\n")
        await until(lambda: bodies)
        os.write(leader, b"\x04")  # ^D: end of input
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0 and "Traceback" not in err, err
        assert bodies == ["tty: typed on a terminal"]
    finally:
        os.close(leader)
        await client.close()


def test_the_server_going_away_ends_the_chat_with_a_message() -> None:
    server = start_server(node="tty-gone")
    proc = chat(server.ws_url, "left", stdin=subprocess.PIPE)  # input stays open
    try:
        assert proc.stdout is not None
        seen: list[str] = []
        while not any("joined rooms:tty" in line for line in seen):
            ready, _, _ = select.select([proc.stdout], [], [], 30)
            assert ready, seen
            line = proc.stdout.readline()
            assert line, f"the chat ended before it joined: {seen}"
            seen.append(line)
        server.stop(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 1
        assert "connection closed by the server (code 1012)" in err
        assert "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
        server.stop()
