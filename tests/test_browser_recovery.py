"""The chat page's history, recovery and online list, in Debian's chromium (playwright).

Real ``roost serve`` subprocesses; two nodes share a private redis-server where a test
needs them. The browser, the page factory and its error checks come from test_browser.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, WebSocket, WebSocketRoute, expect

from roost.client import Client
from test_browser import WAIT_MS, Chat, browser, open_chat

from support import RedisProcess, ServerProcess, free_port, start_server

__all__ = ["browser", "open_chat"]  # fixtures, shared with test_browser

RECONNECT_MS = 35_000  # the jittered reconnect window tops out at 30 s, then one rejoin
HOSTILE = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = start_server(node="solo", log_dir=tmp_path_factory.mktemp("recovery-logs"))
    yield srv
    srv.stop()


def send(ws_url: str, room: str, user: str, *bodies: str) -> list[str]:
    """Send ``bodies`` to ``rooms:<room>`` through a Python client; return their ids."""

    async def run() -> list[str]:
        async with Client(ws_url, {"user": user}, reconnect=False) as client:
            channel = client.channel(f"rooms:{room}", {"user": user})
            await channel.join()
            ids = []
            for body in bodies:
                reply = await channel.push("new:msg", {"body": body})
                assert reply.ok, reply
                ids.append(reply.response["id"])
            return ids

    # playwright's sync API runs its own loop in this thread: the client runs in another
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(run())).result(timeout=30)


def rows(page: Page) -> list[dict[str, Any]]:
    """The message rows as shown: id, offset and body, top to bottom."""
    result: list[dict[str, Any]] = page.locator("#messages li.msg").evaluate_all(
        "items => items.map(li => ({id: li.dataset.id, offset: Number(li.dataset.offset),"
        " body: li.querySelector('.body').textContent}))"
    )
    return result


def assert_once_in_order(page: Page, bodies: list[str]) -> None:
    shown = rows(page)
    assert [r["body"] for r in shown] == bodies
    ids = [r["id"] for r in shown]
    assert len(set(ids)) == len(ids), ids  # every id once in the DOM
    offsets = [r["offset"] for r in shown]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets), offsets


def online(page: Page) -> Any:
    return page.locator("#online-list li")


def record_frames(page: Page) -> list[tuple[str, list[Any]]]:
    """Every text frame the page's sockets send ("out") and receive ("in"), decoded."""
    frames: list[tuple[str, list[Any]]] = []

    def watch(ws: WebSocket) -> None:
        def keep(direction: str) -> Callable[[str | bytes], None]:
            return lambda data: frames.append((direction, json.loads(data)))

        ws.on("framesent", keep("out"))
        ws.on("framereceived", keep("in"))

    page.on("websocket", watch)
    return frames


# -- history -----------------------------------------------------------------------------------


def test_reload_shows_the_conversation(
    server: ServerProcess, open_chat: Callable[..., Chat]
) -> None:
    url = f"{server.url}/rooms/reload"
    al = open_chat(url, user="al")
    al.wait_connected()
    al.send("first")
    al.send("second")
    expect(al.page.locator("#messages li.msg")).to_have_count(2, timeout=WAIT_MS)
    send(server.ws_url, "reload", "bo", "third, from bo")
    expected = ["first", "second", "third, from bo"]
    expect(al.page.locator("#messages li.msg .body")).to_have_text(expected, timeout=WAIT_MS)

    al.page.reload()
    al.wait_connected()
    expect(al.page.locator("#messages li.msg .body")).to_have_text(expected, timeout=WAIT_MS)
    assert_once_in_order(al.page, expected)
    # a newcomer finds the same conversation in its join reply
    cy = open_chat(url, user="cy")
    cy.wait_connected()
    expect(cy.page.locator("#messages li.msg .body")).to_have_text(expected, timeout=WAIT_MS)
    assert rows(cy.page) == rows(al.page)


def test_late_and_repeated_frames_show_once_in_offset_order(
    server: ServerProcess, open_chat: Callable[..., Chat]
) -> None:
    """A new:msg that arrives late is put in its offset's place; a repeated one shows once."""
    held: list[str] = []

    def relay(ws: WebSocketRoute) -> None:
        upstream = ws.connect_to_server()

        def to_page(message: str | bytes) -> None:
            frame = json.loads(message)
            if frame[3] == "new:msg" and frame[4]["body"] == "late":
                held.append(str(message))  # delivered after the next one
                return
            ws.send(message)
            if frame[3] == "new:msg":
                ws.send(message)  # and every message twice
                for late in held:
                    ws.send(late)
                held.clear()

        upstream.on_message(to_page)

    chat = open_chat("about:blank", user="ord")
    chat.page.route_web_socket("**/socket/websocket*", relay)
    chat.page.goto(f"{server.url}/rooms/order")
    chat.wait_connected()
    send(server.ws_url, "order", "bo", "early", "late", "on time")
    expected = ["early", "late", "on time"]
    expect(chat.page.locator("#messages li.msg .body")).to_have_text(expected, timeout=WAIT_MS)
    assert_once_in_order(chat.page, expected)


# -- recovery ----------------------------------------------------------------------------------


def test_recovers_what_it_missed_while_its_node_was_down(
    redis_server: RedisProcess, open_chat: Callable[..., Chat], tmp_path: Path
) -> None:
    redis = ("--redis", redis_server.url)
    port = free_port()
    n1 = start_server(*redis, node="n1", port=port, log_dir=tmp_path)
    n2 = start_server(*redis, node="n2", log_dir=tmp_path)
    try:
        al = open_chat("about:blank", user="al")
        frames = record_frames(al.page)
        al.page.goto(f"{n1.url}/rooms/recover")
        al.wait_connected()
        expect(al.page.locator("#node")).to_have_text("node n1")
        al.send("before 1")
        expect(al.page.locator("#messages li.msg")).to_have_count(1, timeout=WAIT_MS)
        send(n2.ws_url, "recover", "bo", "before 2, via n2")
        before = ["before 1", "before 2, via n2"]
        expect(al.page.locator("#messages li.msg .body")).to_have_text(before, timeout=WAIT_MS)
        last_seen = rows(al.page)[-1]["offset"]

        n1.stop()  # SIGTERM: a clean shutdown frees the name n1
        expect(al.page.locator("#status")).to_have_attribute(
            "data-state", "reconnecting", timeout=WAIT_MS
        )
        missed = [f"missed {i}" for i in range(1, 6)]
        missed_ids = send(n2.ws_url, "recover", "bo", *missed)
        n1 = start_server(*redis, node="n1", port=port, log_dir=tmp_path)

        expect(al.page.locator("#status")).to_have_attribute(
            "data-state", "connected", timeout=RECONNECT_MS
        )
        expect(al.page.locator("#node")).to_have_text("node n1")
        expect(al.page.locator("#messages li.msg .body")).to_have_text(
            before + missed, timeout=WAIT_MS
        )
        assert_once_in_order(al.page, before + missed)
        assert [r["id"] for r in rows(al.page)[2:]] == missed_ids

        # the rejoin asked for what it missed, and got exactly that
        joins = [f for d, f in frames if d == "out" and f[3] == "phx_join"]
        assert joins[0][4].get("since") is None
        since = joins[-1][4]["since"]
        assert since["offset"] == last_seen
        reply = next(
            f for d, f in frames if d == "in" and f[3] == "phx_reply" and f[1] == joins[-1][1]
        )
        assert reply[4]["status"] == "ok"
        assert reply[4]["response"]["recovered"] is True
        assert [m["id"] for m in reply[4]["response"]["history"]] == missed_ids
        assert al.page.locator("#messages li.system").count() == 0

        # and live delivery goes on, across the nodes
        send(n2.ws_url, "recover", "bo", "after")
        expect(al.page.locator("#messages li.msg .body").last).to_have_text(
            "after", timeout=WAIT_MS
        )
        assert_once_in_order(al.page, [*before, *missed, "after"])
    finally:
        n1.stop()
        n2.stop()


def test_unrecoverable_gap_shows_the_latest_history(
    open_chat: Callable[..., Chat], tmp_path: Path
) -> None:
    """A memory node that restarts has a new epoch: the rejoin gets recovered: false."""
    srv = start_server(node="m1", log_dir=tmp_path)
    try:
        chat = open_chat(f"{srv.url}/rooms/gap", user="al")
        chat.wait_connected()
        chat.send("from the old epoch")
        expect(chat.page.locator("#messages li.msg")).to_have_count(1, timeout=WAIT_MS)

        srv.stop()
        expect(chat.page.locator("#status")).to_have_attribute(
            "data-state", "reconnecting", timeout=WAIT_MS
        )
        srv = start_server(node="m1", port=srv.port, log_dir=tmp_path)
        send(srv.ws_url, "gap", "bo", "new epoch 1", "new epoch 2")
        expect(chat.page.locator("#status")).to_have_attribute(
            "data-state", "connected", timeout=RECONNECT_MS
        )
        expected = ["new epoch 1", "new epoch 2"]
        expect(chat.page.locator("#messages li.msg .body")).to_have_text(expected, timeout=WAIT_MS)
        assert_once_in_order(chat.page, expected)
        expect(chat.page.locator("#messages li.system")).to_contain_text(
            "could not all be recovered"
        )
    finally:
        srv.stop()


# -- the online list ---------------------------------------------------------------------------


def test_online_list_one_row_per_user(
    redis_server: RedisProcess, open_chat: Callable[..., Chat], tmp_path: Path
) -> None:
    redis = ("--redis", redis_server.url)
    n1 = start_server(*redis, node="n1", log_dir=tmp_path)
    n2 = start_server(*redis, node="n2", log_dir=tmp_path)
    try:
        al_tab1 = open_chat(f"{n1.url}/rooms/who", user="al")
        al_tab2 = open_chat(f"{n2.url}/rooms/who", user="al")
        bo = open_chat(f"{n1.url}/rooms/who", user="bo")
        pages = (al_tab1, al_tab2, bo)
        for chat in pages:
            chat.wait_connected()
        for chat in pages:
            expect(online(chat.page).locator(".name")).to_have_text(["al", "bo"], timeout=WAIT_MS)
            expect(chat.page.locator("#online-count")).to_have_text("2")
            al = chat.page.locator('#online-list li[data-user="al"]')
            expect(al.locator(".count")).to_have_text("\u00d72")  # two tabs, one row
            expect(al.locator(".nodes")).to_have_text("n1, n2")
            bo_row = chat.page.locator('#online-list li[data-user="bo"]')
            expect(bo_row.locator(".count")).to_have_count(0)
            expect(bo_row.locator(".nodes")).to_have_text("n1")

        bo.page.close()  # bo leaves: gone from al's lists, on both nodes
        for chat in (al_tab1, al_tab2):
            expect(online(chat.page).locator(".name")).to_have_text(["al"], timeout=WAIT_MS)
            expect(chat.page.locator("#online-count")).to_have_text("1")

        al_tab2.page.close()  # one of al's tabs: al stays, once, on n1 only
        expect(online(al_tab1.page).locator(".count")).to_have_count(0, timeout=WAIT_MS)
        expect(online(al_tab1.page).locator(".nodes")).to_have_text(["n1"])
        expect(online(al_tab1.page).locator(".name")).to_have_text(["al"])
    finally:
        n1.stop()
        n2.stop()


def test_hostile_name_in_online_list_is_text(
    server: ServerProcess, open_chat: Callable[..., Chat]
) -> None:
    url = f"{server.url}/rooms/xss-online"
    victim = open_chat(url, user="victim")
    victim.wait_connected()
    mallory = open_chat(url, user=HOSTILE)
    mallory.wait_connected()
    for chat in (victim, mallory):
        names = online(chat.page).locator(".name")
        expect(names).to_have_text([HOSTILE, "victim"], timeout=WAIT_MS)
        assert chat.page.locator("#online-list img, #online-list script").count() == 0
        assert chat.dialogs == []
        assert not any(u.rstrip("/").endswith("/x") for u in chat.requests), chat.requests
