"""Shared by the PyPI client drivers: a deadline, one JSON result line, a clear failure.

Each driver is run as ``python <driver>.py <ws url node 1> <ws url node 2>`` by
tests/test_clients.py, with an interpreter that has the client installed. It prints exactly
one JSON line (``{"ok": true, ...}``) on its last stdout line and exits 0, or prints
``FAIL: <reason>`` on stderr and exits 1; it never runs longer than ``DEADLINE_S``.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import string
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

DEADLINE_S = float(os.environ.get("ROOST_CLIENT_DEADLINE_S", "20"))
STEP_S = 5.0
stage = ["start"]


def set_stage(text: str) -> None:
    stage[0] = text


def fail(message: str) -> None:
    sys.stderr.write(f"FAIL: {message}\n")
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(1)


def succeed(result: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps({"ok": True, **result}) + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def start_deadline() -> None:
    """Fail the whole driver, naming the step it is stuck at, after DEADLINE_S."""

    def watchdog() -> None:
        time.sleep(DEADLINE_S)
        fail(f"deadline of {DEADLINE_S:.0f} s passed; stuck at: {stage[0]}")

    threading.Thread(target=watchdog, daemon=True).start()


def urls() -> tuple[str, str]:
    if len(sys.argv) != 3:
        fail(f"usage: {sys.argv[0]} <ws://host:port/socket node 1> <... node 2>")
    return sys.argv[1], sys.argv[2]


def room() -> str:
    return "c" + "".join(random.choices(string.ascii_lowercase + string.digits, k=8))


def wait_for(pred: Callable[[], object], what: str, timeout: float = STEP_S) -> None:
    """Poll ``pred`` (threads) until true, else fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.01)


async def until(pred: Callable[[], object], what: str, timeout: float = STEP_S) -> None:
    """Poll ``pred`` (asyncio) until true, else fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            fail(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.01)


def presence_keys(state: dict[str, Any], event: str, payload: Any) -> None:
    """Apply a presence_state or presence_diff payload to ``state`` (key → count of metas)."""
    if not isinstance(payload, dict):
        return
    if event == "presence_state":
        state.clear()
        state.update({k: len(v.get("metas", [])) for k, v in payload.items()})
        return
    for key, entry in payload.get("joins", {}).items():
        state[key] = state.get(key, 0) + len(entry.get("metas", []))
    for key, entry in payload.get("leaves", {}).items():
        state[key] = state.get(key, 0) - len(entry.get("metas", []))
        if state[key] <= 0:
            del state[key]
