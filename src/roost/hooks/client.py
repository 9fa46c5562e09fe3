"""Asking the application's backend: one signed POST, with a deadline, retries and a
failure policy.

The backend answers ``200`` with a JSON object: ``{"allow": true}`` or ``{"allow":
false, "reason": "..."}``, optionally ``"payload"`` (a rewrite) and ``"assigns"`` (to
merge). Anything else — a timeout, a refused connection, a 5xx, a non-JSON or oversize
body — is a failure: retried ``retries`` times (50 ms, 100 ms … apart; 4xx is not
retried), then decided by the policy: ``closed`` (the default: deny, ``temporarily
unavailable``) or ``open`` (allow, unchanged). Connections are kept alive and reused.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from ..security.hooksign import HEADER, sign

log = logging.getLogger("roost.hooks")

MAX_ANSWER = 64 * 1024
UNAVAILABLE = "temporarily unavailable"


@dataclass(frozen=True)
class HookPolicy:
    timeout: float = 2.0  # seconds per attempt
    retries: int = 1
    fail_open: bool = False


@dataclass
class Answer:
    """A decision (``data`` the backend's object) or a failure (``data`` None)."""

    data: dict[str, Any] | None
    error: str = ""

    @property
    def allowed(self) -> bool:
        return self.data is not None and self.data.get("allow") is True


@dataclass
class HookStats:
    allowed: int = 0
    denied: int = 0
    failed: int = 0  # no decision after the retries (then the policy decided)


class HookClient:
    def __init__(
        self,
        secret: bytes,
        node: str,
        policy: HookPolicy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.secret = secret
        self.node = node
        self.policy = policy or HookPolicy()
        self.clock = clock
        self.stats = HookStats()
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=30),
                json_serialize=lambda v: orjson.dumps(v).decode(),
            )
        return self._session

    async def ask(self, hook: str, url: str, body: dict[str, Any]) -> Answer:
        raw = orjson.dumps({"hook": hook, "node": self.node, **body})
        error = ""
        for attempt in range(1 + max(0, self.policy.retries)):
            if attempt:
                await asyncio.sleep(0.05 * 2 ** (attempt - 1))
            headers = {
                "Content-Type": "application/json",
                HEADER: sign(self.secret, raw, self.clock()),
                "X-Roost-Hook": hook,
            }
            try:
                async with self._client().post(
                    url,
                    data=raw,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=self.policy.timeout),
                ) as resp:
                    text = await resp.content.read(MAX_ANSWER + 1)
                    if resp.status != 200:
                        error = f"HTTP {resp.status}"
                        if resp.status < 500:
                            break  # the backend's own answer: asking again changes nothing
                        continue
                    if len(text) > MAX_ANSWER:
                        error = "answer too large"
                        break
                    data = orjson.loads(text)
                    if not isinstance(data, dict) or not isinstance(data.get("allow"), bool):
                        error = 'answer is not {"allow": true|false, ...}'
                        break
                    self._count(data["allow"])
                    return Answer(data)
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                error = type(exc).__name__ if not str(exc) else f"{type(exc).__name__}: {exc}"
            except orjson.JSONDecodeError:
                error = "answer is not JSON"
                break
        self.stats.failed += 1
        log.warning("%s hook %s failed: %s (policy: fail %s)", hook, url, error,
                    "open" if self.policy.fail_open else "closed")  # fmt: skip
        return Answer(None, error)

    def _count(self, allowed: bool) -> None:
        if allowed:
            self.stats.allowed += 1
        else:
            self.stats.denied += 1

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
