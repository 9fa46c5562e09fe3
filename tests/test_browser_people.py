"""The chat as people use it (issue 20), in Debian's chromium at a phone and a desktop size.

Two ``roost serve`` nodes share a private redis-server. Two people, one on each node,
pick their names on a first visit, find a room in the directory, chat, and scroll back
through more history than a join brings. The browser, the page factory and its error
checks come from test_browser; bots in other rooms are Python clients.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

import roost
from roost.client import Client
from roost.pubsub import HistoryPolicy
from test_browser import WAIT_MS, Chat, browser, entered, open_chat

from support import ROOT, ServerProcess, start_redis, start_server

__all__ = ["browser", "open_chat"]  # fixtures, shared with test_browser

HISTORY = 300  # --history-size: the stream keeps this many; a join brings the latest 50
SEEDED = 130
JOIN_BRINGS = 50
VIEWPORTS = {
    "phone": {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True},
    "desktop": {"viewport": {"width": 1280, "height": 800}},
}
SHOTS = {"phone": ROOT / "docs" / "img" / "chat-phone.png"}
DIRECTORY_SHOT = ROOT / "docs" / "img" / "chat-directory.png"
# bots keeping other rooms busy for the directory: room → how many
CROWD = {"lobby": 3, "music": 2, "help": 1}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, list[ServerProcess]]]:
    redis = start_redis()
    logs = tmp_path_factory.mktemp("browser-people")
    args = ["--redis", redis.url, "--history-size", str(HISTORY)]
    nodes = [start_server(*args, node=n, log_dir=logs) for n in ("p1", "p2")]
    yield redis, nodes
    for n in nodes:
        n.stop()
    redis.stop()


class Crowd:
    """Python clients sitting in rooms (on their own event loop, in a thread)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.clients: list[Client] = []

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def join(self, ws_url: str, room: str, user: str) -> None:
        async def run() -> None:
            client = Client(ws_url, {"user": user}, reconnect=False)
            await client.connect()
            self.clients.append(client)
            await client.channel(f"rooms:{room}", {"user": user}).join()

        asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout=30)

    def close(self) -> None:
        async def run() -> None:
            for client in self.clients:
                await client.close()

        asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


GARDEN_LOG = [
    ("rosa", "tomatoes are in: six plants along the south fence"),
    ("tom", "watered the beds, the soil was bone dry again"),
    ("rosa", "the basil needs a bigger pot"),
    ("tom", "found slugs on the lettuce, put out a beer trap"),
    ("rosa", "compost turned; it's steaming nicely"),
]


async def seed(redis_url: str, room: str) -> None:
    """``SEEDED`` stored messages, as if sent before anybody here came (offsets 1..)."""
    policy = HistoryPolicy(max_len=HISTORY)
    start = int(time.time() * 1000) - SEEDED * 60_000
    for i in range(1, SEEDED + 1):
        user, text = GARDEN_LOG[i % len(GARDEN_LOG)]
        payload = {
            "id": f"seed-{room}-{i}",
            "user": user,
            "verified": False,
            "body": f"#{i} {text}",
            "at": start + i * 60_000,
            "node": "p1",
        }
        await roost.publish_async(
            redis_url, f"rooms:{room}", "new:msg", payload, store=True, history=policy
        )


def offsets(page: Page) -> list[int]:
    result: list[int] = page.locator("#messages li.msg").evaluate_all(
        "items => items.map(li => Number(li.dataset.offset))"
    )
    return result


def pick_name(chat: Chat, name: str) -> None:
    """A first visit: the page asks for a name before it joins anything."""
    expect(chat.page.locator("#name-gate")).to_be_visible(timeout=WAIT_MS)
    chat.page.locator("#name-input").fill(name)
    chat.page.locator("#name-go").click()
    expect(chat.page.locator("#name-gate")).to_be_hidden()
    chat.wait_connected()
    expect(chat.page.locator("#username")).to_have_value(name)


def find_in_directory(chat: Chat, room: str, online: int) -> None:
    """Open the room list until it shows ``room`` with ``online`` (each node re-reads
    presence at most every 2 s), then take it."""
    link = chat.page.locator(f"#directory-list .room-link[data-room='{room}']")
    deadline = time.monotonic() + 15
    while True:
        chat.page.locator("#rooms-open").click()
        expect(chat.page.locator("#directory")).to_be_visible()
        expect(chat.page.locator("#directory-note")).to_be_hidden(timeout=WAIT_MS)
        if link.count() and link.locator(".room-online").text_content() == f"{online} online":
            break
        assert time.monotonic() < deadline, chat.page.locator("#directory-list").inner_text()
        chat.page.locator("#rooms-close").click()
        chat.page.wait_for_timeout(300)


def scroll_back_to_the_beginning(chat: Chat) -> None:
    edge = chat.page.locator("#messages li.edge", has_text="beginning of the history")
    for _ in range(20):
        if edge.count():
            break
        shown = chat.page.locator("#messages li.msg").count()
        chat.page.locator("#messages").evaluate("list => { list.scrollTop = 0 }")
        deadline = time.monotonic() + WAIT_MS / 1000
        while chat.page.locator("#messages li.msg").count() == shown and not edge.count():
            assert time.monotonic() < deadline, "no older messages came"
            chat.page.wait_for_timeout(100)
    expect(edge).to_have_count(1)
    # the edge is at the very top, above the first message
    assert chat.page.locator("#messages > li").first.get_attribute("class") == "edge"


@pytest.mark.parametrize("size", ["phone", "desktop"])
def test_two_people_on_two_nodes(
    cluster: tuple[Any, list[ServerProcess]],
    open_chat: Any,
    size: str,
    tmp_path: Path,
) -> None:
    redis, (p1, p2) = cluster
    garden = f"garden-{size}"
    crowd = Crowd()
    try:
        crowd.run(seed(redis.url, garden))
        for room, count in CROWD.items():
            for i in range(count):
                node = (p1, p2)[i % 2]
                crowd.join(node.ws_url, f"{room}-{size}", f"bot{i}")

        # Ben, on node p2, goes straight to the garden room by its address
        ben = open_chat(f"{p2.url}/rooms/{garden}", **VIEWPORTS[size])
        pick_name(ben, "ben")
        expect(ben.page.locator("#node")).to_have_text("node p2")
        assert offsets(ben.page) == list(range(SEEDED - JOIN_BRINGS + 1, SEEDED + 1))

        # Ana, on node p1, lands in the lobby and finds the garden in the directory
        ana = open_chat(f"{p1.url}/", **VIEWPORTS[size])
        pick_name(ana, "ana")
        expect(ana.page.locator("#node")).to_have_text("node p1")
        find_in_directory(ana, garden, 1)
        listed = ana.page.locator("#directory-list .room-link").evaluate_all(
            "links => links.map(a => [a.dataset.room, a.querySelector('.room-online').textContent])"
        )
        # the busiest first, counted across both nodes
        assert listed.index([f"lobby-{size}", "3 online"]) < listed.index([garden, "1 online"])
        assert [f"music-{size}", "2 online"] in listed
        shoot(ana.page, None, tmp_path / "dir.png")
        ana.page.locator(f"#directory-list .room-link[data-room='{garden}']").click()
        expect(ana.page.locator("#directory")).to_be_hidden()
        ana.page.wait_for_url(f"**/rooms/{garden}")
        ana.wait_connected()
        expect(entered(ben.page, "ana")).to_be_visible(timeout=WAIT_MS)
        for chat in (ana, ben):  # one name everywhere: online lists agree
            for name in ("ana", "ben"):
                expect(chat.page.locator(f"#online-list li[data-user='{name}']")).to_have_count(
                    1, timeout=WAIT_MS
                )

        # they chat across the nodes
        ana.send("hi ben, is the garden room always this busy?")
        ben.send("only in summer! scroll up, the whole log is there")
        for chat in (ana, ben):
            expect(chat.page.locator("#messages li.msg")).to_have_count(
                JOIN_BRINGS + 2, timeout=WAIT_MS
            )
            assert chat.lines()[-2:] == [
                "[ana] hi ben, is the garden room always this busy?",
                "[ben] only in summer! scroll up, the whole log is there",
            ]

        # Ana scrolls back through all of it: older pages, no duplicates, then the beginning
        scroll_back_to_the_beginning(ana)
        assert offsets(ana.page) == list(range(1, SEEDED + 3))
        assert ana.bodies()[0] == f"#1 {GARDEN_LOG[1][1]}"
        # the view stayed usable: no sideways scrolling at either size
        overflow = ana.page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0
        for sel in ("#message", "#send", "#username", "#rooms-open", "#room-input"):
            expect(ana.page.locator(sel)).to_be_in_viewport()

        # Ben renames himself: announced on both nodes, lists moved in place
        name = ben.page.locator("#username")
        name.fill("benjamin")
        name.press("Enter")
        for chat in (ana, ben):
            expect(chat.page.locator("#messages li.renamed em")).to_have_text(
                "[ben] is now [benjamin]", timeout=WAIT_MS
            )
            expect(chat.page.locator("#online-list li[data-user='benjamin']")).to_have_count(1)
            expect(chat.page.locator("#online-list li[data-user='ben']")).to_have_count(0)
        ben.send("same person, longer name")
        expect(ana.page.locator("#messages li.msg").last).to_contain_text(
            "[benjamin] same person, longer name", timeout=WAIT_MS
        )
        ana.send("the tomatoes look great in the photos")
        expect(ben.page.locator("#messages li.msg").last).to_contain_text(
            "tomatoes", timeout=WAIT_MS
        )
        ana.page.locator("#messages").evaluate("list => { list.scrollTop = list.scrollHeight }")
        ana.page.locator("#message").fill("see you at the allotment")
        shoot(ana.page, SHOTS.get(size), tmp_path / "chat.png")
        if size == "desktop":  # the directory over a room in use, for the README
            find_in_directory(ana, garden, 2)
            ana.page.evaluate("document.activeElement.blur()")
            shoot(ana.page, DIRECTORY_SHOT, tmp_path / "dir-garden.png")
    finally:
        crowd.close()
    for node in (p1, p2):
        assert "Traceback" not in node.log()


def shoot(page: Page, target: Path | None, scratch: Path) -> None:
    """A screenshot: a README one (``target``) is rewritten only when missing or with
    ROOST_UPDATE_SCREENSHOT=1 (message times change every run); otherwise, or without
    a target, it goes to ``scratch``."""
    update = target is not None and (
        os.environ.get("ROOST_UPDATE_SCREENSHOT") == "1" or not target.exists()
    )
    path = target if update and target is not None else scratch
    page.mouse.move(0, 0)  # no row highlighted by a hovering pointer
    page.screenshot(path=str(path), animations="disabled", caret="hide")
    assert path.stat().st_size > 10_000
