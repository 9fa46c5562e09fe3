"""History paging: a ``history`` push ``{before, limit, epoch}`` answered from the
topic's stream within its current epoch (memory broker, and real Redis across nodes)."""

from __future__ import annotations

from typing import Any

import pytest

import test_history
from roost.brokers.memory import MemoryBroker
from roost.client import Client
from roost.pubsub import HistoryPolicy
from roost.pubsub.history import Page, page_of
from test_history import send

# test_history's fixtures: each test runs on the memory broker and on Redis (two nodes)
kind = test_history.kind
nodes = test_history.nodes

POLICY = HistoryPolicy(max_len=500, recent=50)


async def page(url: str, room: str, **payload: Any) -> Any:
    async with Client(url) as c:
        ch = c.channel(room, {"user": "reader"})
        joined = await ch.join()
        payload.setdefault("epoch", joined["epoch"])
        return joined, await ch.push("history", payload)


async def test_pages_back_to_the_beginning_without_gaps_or_duplicates(nodes: Any) -> None:
    servers = await nodes(2, POLICY)
    await send(servers[0].ws_url, "rooms:paged", [f"m{i}" for i in range(1, 131)])
    async with Client(servers[-1].ws_url) as c:
        ch = c.channel("rooms:paged", {"user": "reader"})
        joined = await ch.join()
        seen = [m["offset"] for m in joined["history"]]
        assert seen == list(range(81, 131))
        while True:
            reply = await ch.push(
                "history", {"before": seen[0], "limit": 30, "epoch": joined["epoch"]}
            )
            assert reply.ok, reply
            got = reply.response
            assert got["epoch"] == joined["epoch"] and got["reset"] is False
            offsets = [m["offset"] for m in got["history"]]
            assert len(offsets) <= 30
            assert offsets == list(range(seen[0] - len(offsets), seen[0]))  # ascending, adjacent
            assert [m["body"] for m in got["history"]] == [f"m{o}" for o in offsets]
            seen = offsets + seen
            if got["beginning"]:
                break
    assert seen == list(range(1, 131))


async def test_a_page_ends_where_the_history_was_trimmed(nodes: Any) -> None:
    servers = await nodes(1, HistoryPolicy(max_len=40, recent=10))
    await send(servers[0].ws_url, "rooms:trimmed", [f"m{i}" for i in range(1, 101)])
    _, reply = await page(servers[0].ws_url, "rooms:trimmed", before=91, limit=100)
    assert reply.ok, reply
    assert [m["offset"] for m in reply.response["history"]] == list(range(61, 91))
    assert reply.response["beginning"] is True
    _, reply = await page(servers[0].ws_url, "rooms:trimmed", before=61, limit=5)
    assert reply.response["history"] == [] and reply.response["beginning"] is True


async def test_another_epoch_is_a_reset(nodes: Any) -> None:
    servers = await nodes(1, POLICY)
    await send(servers[0].ws_url, "rooms:epochs", ["a", "b", "c"])
    joined, reply = await page(servers[0].ws_url, "rooms:epochs", before=3, epoch="other.1.x")
    assert reply.ok, reply
    assert reply.response == {
        "history": [],
        "epoch": joined["epoch"],
        "beginning": False,
        "reset": True,
    }


async def test_a_cursor_begun_on_the_empty_room_pages_its_first_epoch(nodes: Any) -> None:
    servers = await nodes(1, POLICY)
    async with Client(servers[0].ws_url) as c:
        ch = c.channel("rooms:fresh", {"user": "early"})
        joined = await ch.join()
        assert joined["offset"] == 0 and joined["epoch"].startswith("~")
        await send(servers[0].ws_url, "rooms:fresh", ["x", "y", "z"])
        reply = await ch.push("history", {"before": 3, "epoch": joined["epoch"]})
    assert reply.ok, reply
    assert [m["body"] for m in reply.response["history"]] == ["x", "y"]
    assert reply.response["reset"] is False and reply.response["beginning"] is True
    assert not reply.response["epoch"].startswith("~")


async def test_an_empty_room_pages_to_its_beginning(nodes: Any) -> None:
    servers = await nodes(1, POLICY)
    _, reply = await page(servers[0].ws_url, "rooms:nothing", before=5)
    assert reply.ok, reply
    assert reply.response["history"] == [] and reply.response["beginning"] is True
    assert reply.response["reset"] is False


@pytest.mark.parametrize(
    "payload",
    [
        None,
        [],
        {},
        {"before": 0, "epoch": "e"},
        {"before": -3, "epoch": "e"},
        {"before": "5", "epoch": "e"},
        {"before": True, "epoch": "e"},
        {"before": 5},
        {"before": 5, "epoch": ""},
        {"before": 5, "epoch": 7},
        {"before": 5, "epoch": "e" * 65},
        {"before": 5, "epoch": "e", "limit": 0},
        {"before": 5, "epoch": "e", "limit": 101},
        {"before": 5, "epoch": "e", "limit": 2.5},
        {"before": 2**60, "epoch": "e"},
    ],
)
async def test_invalid_page_requests_are_refused(local_server: Any, payload: Any) -> None:
    server = await local_server()
    async with Client(server.ws_url) as c:
        ch = c.channel("rooms:bad-page", {"user": "r"})
        await ch.join()
        reply = await ch.push("history", payload)
        assert reply.status == "error" and reply.response == {"reason": "invalid page"}
        # the channel is still there
        assert (await ch.push("new:msg", {"body": "still here"})).ok


def test_page_of_a_window() -> None:
    """The pure decision, on a window that starts at offset 11 (1..10 trimmed)."""
    from roost.pubsub.history import Position, StoredMessage

    window = [StoredMessage(o, "new:msg", b"{}", 1000) for o in range(11, 21)]
    current = Position(20, "g.1.a")
    policy = HistoryPolicy(max_age=3600)

    def offsets(p: Page) -> list[int]:
        return [m.offset for m in p.messages]

    p = page_of("g.1.a", 18, 3, current, window, policy, 2000)
    assert offsets(p) == [15, 16, 17] and not p.beginning and not p.reset
    p = page_of("g.1.a", 14, 10, current, window, policy, 2000)
    assert offsets(p) == [11, 12, 13] and p.beginning
    p = page_of("x.1.a", 14, 10, current, window, policy, 2000)
    assert p.reset and p.messages == []
    # messages past the age cap are gone for paging too
    old = [StoredMessage(o, "e", b"{}", 0 if o < 15 else 10_000_000) for o in range(11, 21)]
    p = page_of("g.1.a", 18, 10, current, old, policy, 10_000_000)
    assert offsets(p) == [15, 16, 17] and p.beginning


async def test_memory_broker_page_is_bounded_by_the_limit() -> None:
    broker = MemoryBroker()
    assert isinstance(await broker.page("rooms:none", 10, 5, "~x.1", POLICY), Page)
