"""The live dashboard (issue 18): ``--admin-secret``, the ``admin:cluster`` channel, ``/admin``.

Two ``roost serve`` nodes on a private redis-server, members in rooms on both; the
channel with roost.client (refusals, snapshots from both nodes, the node registry,
read only), then the page in Debian's chromium (as tests/test_browser.py drives it):
both nodes, the busiest room with its member count, updated when someone joins on the
other node. ``docs/img/admin.png`` is (re)written when missing or with
ROOST_UPDATE_SCREENSHOT=1.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import signal
import threading
import urllib.error
import urllib.request
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from roost.admin import TOKEN_PREFIX
from roost.client import Client, JoinRefused
from test_browser import BROKEN_WEBSOCKET, CHROMIUM_ARGS, WAIT_MS, chromium_path

from support import ROOT, RedisProcess, ServerProcess, start_redis, start_server, until

SECRET = "admin-secret-0123456789abcdef"
API_KEY = "admin-test-api-key"
SCREENSHOT = ROOT / "docs" / "img" / "admin.png"
T = TypeVar("T")
NONZERO = re.compile(r"^[1-9][0-9.,]*$|^0\.[0-9]+$")  # a rate the page shows, above zero


class Crowd:
    """Clients living on an event loop of their own thread, so that they stay joined
    while a synchronous test (playwright's) runs."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.clients: list[Client] = []

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _join(self, server: ServerProcess, room: str, user: str) -> None:
        client = Client(server.ws_url, {"user": user})
        await client.connect()
        self.clients.append(client)
        await client.channel(f"rooms:{room}", {"user": user}).join()

    def join(self, server: ServerProcess, room: str, user: str) -> None:
        self.run(self._join(server, room, user))

    async def _chatter(self, server: ServerProcess, room: str, user: str) -> None:
        async with Client(server.ws_url, {"user": user}) as client:
            channel = client.channel(f"rooms:{room}", {"user": user})
            await channel.join()
            i = 0
            while True:  # cancelled by stop_chatter
                i += 1
                await channel.push("new:msg", {"body": f"message {i}"})
                await asyncio.sleep(0.1)

    def chatter(self, server: ServerProcess, room: str, user: str) -> Any:
        """A member who keeps talking (about 10 messages a second) until stopped."""
        return asyncio.run_coroutine_threadsafe(self._chatter(server, room, user), self.loop)

    def close(self) -> None:
        async def close_all() -> None:
            await asyncio.gather(*(c.close() for c in self.clients), return_exceptions=True)

        self.run(close_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisProcess]:
    proc = start_redis()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def nodes(redis: RedisProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Any]]:
    logs = tmp_path_factory.mktemp("admin-logs")
    args = ["--redis", redis.url, "--admin-secret", SECRET, "--api-key", API_KEY]
    servers = [start_server(*args, node=n, log_dir=logs) for n in ("n1", "n2")]
    yield servers
    for server in servers:
        server.stop()
        assert "Traceback" not in server.log(), server.log()
        assert SECRET not in server.log()


@pytest.fixture(scope="module")
def crowd(nodes: list[ServerProcess]) -> Iterator[Crowd]:
    """rooms:busy has 3 members on n1 and 2 on n2; rooms:quiet 1 on n1, rooms:side 1 on n2."""
    n1, n2 = nodes
    crowd = Crowd()
    for user in ("ana", "bo", "cy"):
        crowd.join(n1, "busy", user)
    for user in ("dee", "eli"):
        crowd.join(n2, "busy", user)
    crowd.join(n1, "quiet", "fay")
    crowd.join(n2, "side", "gus")
    yield crowd
    crowd.close()


def admin_token(secret: str) -> dict[str, str]:
    """The page's socket: the secret as phoenix.js's authToken (a subprotocol)."""
    raw = base64.urlsafe_b64encode(f"{TOKEN_PREFIX}{secret}".encode()).decode().rstrip("=")
    return {"Sec-WebSocket-Protocol": f"phoenix, base64url.bearer.phx.{raw}"}


def get(url: str, **headers: str) -> tuple[int, dict[str, str], str]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


async def refusal(server: ServerProcess, payload: Any, token: str | None = None) -> Any:
    headers = admin_token(token) if token is not None else None
    async with Client(server.ws_url, headers=headers) as client:
        try:
            await client.channel("admin:cluster", payload).join()
        except JoinRefused as exc:
            return exc.response
    return None


def rooms(snapshot: dict[str, Any] | None) -> dict[str, tuple[int, int]]:
    """A snapshot's listed topics: (members, presence entries)."""
    if snapshot is None:
        return {}
    return {t["topic"]: (t["members"], t["presence"]) for t in snapshot["top"]}


async def watch(server: ServerProcess) -> dict[str, Any]:
    """Join with the secret; what the reply, the snapshots and a push bring."""
    async with Client(server.ws_url) as client:
        channel = client.channel("admin:cluster", {"secret": SECRET})
        latest: dict[str, dict[str, Any]] = {}
        channel.on("snapshot", lambda snap: latest.__setitem__(snap["node"], snap))
        reply = await channel.join()

        def both_counted() -> bool:
            # snapshots come every 2 s (the first one may predate the crowd's last
            # join): wait for the picture the crowd makes, members and presence alike
            # (and one taken after this watcher joined: a snapshot made a moment before the
            # join can still reach it, counting no watcher yet)
            return (
                rooms(latest.get("n1")) == {"rooms:busy": (3, 3), "rooms:quiet": (1, 1)}
                and rooms(latest.get("n2")) == {"rooms:busy": (2, 2), "rooms:side": (1, 1)}
                and latest["n1"].get("watchers", 0) >= 1
            )

        await until(both_counted, timeout=15, what="snapshots of n1 and n2")
        pushed = await channel.push("snapshot", {"node": "n9", "top": []})
        return {"reply": reply, "latest": dict(latest), "push": pushed}


def test_wrong_or_missing_secret_is_unauthorized(nodes: list[ServerProcess], crowd: Crowd) -> None:
    n1, n2 = nodes
    for payload in ({"secret": "not-the-secret"}, {"secret": SECRET[:-1]}, {}, None, {"secret": 7}):
        assert crowd.run(refusal(n1, payload)) == {"reason": "unauthorized"}, payload
    assert crowd.run(refusal(n2, {"secret": SECRET + "x"})) == {"reason": "unauthorized"}
    # a wrong secret as the socket's token: admitted as any anonymous socket of the chat,
    # refused at the join
    assert crowd.run(refusal(n1, {"secret": "guess-0123456789abcd"}, "guess-0123456789abcd")) == {
        "reason": "unauthorized"
    }
    # another admin:* topic is not a way in
    assert crowd.run(refusal(n1, {"secret": SECRET})) is None  # the right one is joined
    response = asyncio.run_coroutine_threadsafe(
        _join_topic(n1, "admin:other", {"secret": SECRET}), crowd.loop
    ).result(10)
    assert response is not None and "unauthorized" not in json.dumps(response)


async def _join_topic(server: ServerProcess, topic: str, payload: Any) -> Any:
    async with Client(server.ws_url) as client:
        try:
            await client.channel(topic, payload).join()
        except JoinRefused as exc:
            return exc.response
    return None


def test_snapshots_from_both_nodes(nodes: list[ServerProcess], crowd: Crowd) -> None:
    out = crowd.run(watch(nodes[0]))
    reply, latest = out["reply"], out["latest"]
    assert reply["node"] == "n1"
    assert {"n1", "n2"} <= set(reply["nodes"]), reply  # the Redis node registry
    assert reply["interval"] > 0 and reply["stale_after"] > reply["interval"]
    n1, n2 = latest["n1"], latest["n2"]
    # what the until in watch waited for: each node's own members, summed on the page
    assert rooms(n1) == {"rooms:busy": (3, 3), "rooms:quiet": (1, 1)}
    assert rooms(n2) == {"rooms:busy": (2, 2), "rooms:side": (1, 1)}
    assert n1["top"][0]["topic"] == "rooms:busy"  # the busiest first
    assert n1["topics"] == 2 and n1["channels"] == 4  # the dashboard's own topic left out
    for snap in (n1, n2):
        assert snap["connections"] >= 3
        assert snap["broker"]["kind"] == "RedisBroker" and snap["broker"]["connected"] is True
        assert set(snap["rates"]) >= {"pushes_in", "delivered", "joins", "connects"}
        assert snap["uptime"] >= 0
    assert n1["watchers"] >= 1  # this watcher, on n1
    # read only: a client cannot publish a snapshot (or anything) on the topic
    assert out["push"].status == "error" and out["push"].response == {"reason": "read only"}


def test_api_cannot_broadcast_on_admin_topics(nodes: list[ServerProcess]) -> None:
    body = json.dumps({"topic": "admin:cluster", "event": "snapshot", "payload": {}}).encode()
    request = urllib.request.Request(
        f"{nodes[0].url}/api/broadcast",
        data=body,
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 400


def test_admin_page_served_with_strict_csp(nodes: list[ServerProcess]) -> None:
    status, headers, body = get(f"{nodes[0].url}/admin")
    assert status == 200
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "<script>" not in body and "style=" not in body and "<style" not in body
    assert 'src="/admin/static/admin.js"' in body
    assert get(f"{nodes[0].url}/admin/static/admin.js")[0] == 200


def test_no_admin_without_the_option(tmp_path: Path) -> None:
    server = start_server(node="plain", log_dir=tmp_path)
    try:
        for path in ("/admin", "/admin/static/admin.js", "/admin/static/index.html"):
            assert get(server.url + path)[0] == 404, path

        async def attempt() -> Any:
            return await _join_topic(server, "admin:cluster", {"secret": SECRET})

        assert asyncio.run(attempt()) is not None  # no such channel: refused
    finally:
        server.stop()


# -- the page in chromium ----------------------------------------------------------------------


@contextlib.contextmanager
def dashboard_page(url: str, init_script: str | None = None) -> Iterator[Page]:
    """``url`` open in Debian's chromium (a desktop viewport); no script errors allowed."""
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS
        )
        try:
            context = browser.new_context(viewport={"width": 1200, "height": 540})
            if init_script is not None:
                context.add_init_script(init_script)
            page = context.new_page()
            page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(url)
            yield page
            context.close()
        finally:
            browser.close()
    assert [e for e in errors if "WebSocket" not in e] == []


def test_dashboard_in_chromium(nodes: list[ServerProcess], crowd: Crowd, tmp_path: Path) -> None:
    n1, n2 = nodes
    update = os.environ.get("ROOST_UPDATE_SCREENSHOT") == "1" or not SCREENSHOT.exists()
    target = SCREENSHOT if update else tmp_path / "admin.png"
    with dashboard_page(f"{n1.url}/admin") as page:
        # a wrong secret: the page says so and keeps nothing
        page.locator("#secret").fill("wrong-secret-0123456789")
        page.locator("#open").click()
        expect(page.locator("#unlock-error")).to_contain_text("unauthorized", timeout=WAIT_MS)
        assert page.evaluate("sessionStorage.getItem('roost:admin-secret')") is None
        # the right one
        page.locator("#secret").fill(SECRET)
        page.locator("#open").click()
        expect(page.locator("#status")).to_have_text("live", timeout=WAIT_MS)
        for name in ("n1", "n2"):
            row = page.locator(f'#nodes tr[data-node="{name}"]')
            expect(row.locator(".state")).to_have_text("live", timeout=WAIT_MS)
        busy = page.locator('#topics tr[data-topic="rooms:busy"] .members')
        expect(busy).to_have_text("5", timeout=WAIT_MS)
        expect(page.locator("#topics tbody tr").first).to_have_attribute("data-topic", "rooms:busy")
        # live: someone joins on the other node and talks; the count and rates follow
        talk = crowd.chatter(n2, "busy", "hal")
        expect(busy).to_have_text("6", timeout=WAIT_MS)
        expect(page.locator("#t-nodes")).to_have_text("2 / 2")
        n2_in = page.locator('#nodes tr[data-node="n2"] td').nth(5)  # pushes in / s
        expect(n2_in).to_have_text(NONZERO, timeout=WAIT_MS)
        expect(page.locator("#t-out")).to_have_text(NONZERO)
        assert page.evaluate("sessionStorage.getItem('roost:admin-secret')") == SECRET
        assert page.evaluate("localStorage.length") == 0
        target.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(target), animations="disabled", caret="hide")
        assert target.stat().st_size > 10_000
        talk.cancel()
        # a reload in the same tab reconnects with the kept secret
        page.reload()
        expect(page.locator("#status")).to_have_text("live", timeout=WAIT_MS)
        # a node that stops reporting is shown as gone, and back when it answers again
        n2_state = page.locator('#nodes tr[data-node="n2"] .state')
        expect(n2_state).to_have_text("live", timeout=WAIT_MS)
        n2.proc.send_signal(signal.SIGSTOP)
        try:
            expect(n2_state).to_have_text("gone", timeout=3 * WAIT_MS)
            expect(page.locator("#t-nodes")).to_have_text("1 / 2")
        finally:
            n2.proc.send_signal(signal.SIGCONT)
        expect(n2_state).to_have_text("live", timeout=WAIT_MS)


def test_dashboard_beside_your_own_application(tmp_path: Path) -> None:
    """``roost serve MODULE:NAME --admin-secret``: the application's own page at /, the
    dashboard at /admin with its client from /admin/lib/, the channel beside the app's."""
    server = start_server(
        "examples.votes.votes:app", "--admin-secret", SECRET, node="v1", log_dir=tmp_path
    )
    try:
        for path in (
            "/admin",
            "/admin/static/admin.js",
            "/admin/lib/roost.js",
            "/admin/lib/base.css",
        ):
            assert get(server.url + path)[0] == 200, path
        page = get(server.url + "/admin")[2]
        assert "/admin/lib/base.css" in page and "/admin/static/admin.js" in page

        async def watch_one() -> Any:
            # the example admits only sockets with a name: the page's token lets it in
            async with Client(server.ws_url, headers=admin_token(SECRET)) as client:
                got: list[Any] = []
                channel = client.channel("admin:cluster", {"secret": SECRET})
                channel.on("snapshot", got.append)
                reply = await channel.join()
                await until(lambda: got, 10, "a snapshot")
                return reply, got[0]

        async def refused(headers: dict[str, str] | None) -> int | None:
            try:
                async with Client(server.ws_url, headers=headers, reconnect=False):
                    return None
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status

        assert asyncio.run(refused(None)) == 403  # the application's own rule
        assert asyncio.run(refused(admin_token("wrong-secret-0123456789"))) == 403

        reply, snap = asyncio.run(watch_one())
        assert reply["nodes"] == ["v1"] and snap["node"] == "v1"
        assert snap["broker"]["kind"] == "MemoryBroker"
        # the page, its WebSocket refused (a proxy that blocks it): over long-poll, the
        # secret in X-Phoenix-AuthToken gets it past the example's connect hook
        broken = BROKEN_WEBSOCKET.replace("MODE", json.dumps("refused"))
        with dashboard_page(f"{server.url}/admin", broken) as page:
            page.locator("#secret").fill(SECRET)
            page.locator("#open").click()
            expect(page.locator('#nodes tr[data-node="v1"] .state')).to_have_text(
                "live", timeout=WAIT_MS
            )
            assert page.evaluate("window.wsAttempts") >= 1
    finally:
        server.stop()
    assert "Traceback" not in server.log()
