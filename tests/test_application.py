"""Your own application on roost: ``roost serve MODULE:NAME`` with examples/votes, on two
real nodes and a real Redis (and as a two-worker group), and the loader's errors."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any

import pytest

from roost.application import Application, AppNotFound, load
from roost.client import Client
from roost.client.client import JoinRefused
from test_admin import admin_token

from support import ROOT, free_port, start_server, until, wait_http

SPEC = "examples.votes.votes:app"
ADMIN_SECRET = "admin-secret-for-the-walkthrough"
ENV = {"VOTES_TICK": "0.3"}


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


async def collect(
    client: Client, topic: str, payload: Any = None
) -> tuple[Any, dict[str, list[Any]]]:
    got: dict[str, list[Any]] = {}
    channel = client.channel(topic, payload or {})
    for event in ("vote", "tick", "presence_state", "presence_diff"):
        channel.on(event, lambda p, e=event: got.setdefault(e, []).append(p))
    reply = await channel.join()
    return (channel, reply), got


async def test_the_example_on_two_nodes(redis_server: Any) -> None:
    n1 = start_server(SPEC, "--redis", redis_server.url, node="v1", env=ENV)
    n2 = start_server(SPEC, "--redis", redis_server.url, node="v2", env=ENV)
    try:
        assert "app=examples.votes.votes:app" in n1.log()
        assert status_of(f"{n1.url}/") == 404  # no chat page: the example has none
        with pytest.raises(Exception, match="403"):  # its connect hook wants a name
            async with Client(n1.ws_url) as anon:
                await anon.connect()

        async with (
            Client(n1.ws_url, {"name": "ana"}) as ana,
            Client(n2.ws_url, {"name": "bo"}) as bo,
        ):
            (poll_a, reply_a), got_a = await collect(ana, "poll:lunch")
            (poll_b, _reply_b), got_b = await collect(bo, "poll:lunch")
            assert reply_a["history"] == [] and reply_a["offset"] == 0
            voted = await poll_a.push("vote", {"choice": "yes"})
            assert voted.ok and voted.response == {"choice": "yes"}
            await until(lambda: got_b.get("vote") and got_a.get("vote"), 10, "the vote on both")
            vote = got_b["vote"][0]
            assert (vote["name"], vote["choice"], vote["offset"]) == ("ana", "yes", 1)
            bad = await poll_b.push("vote", {"choice": "pizza"})
            assert not bad.ok and bad.response == {"reason": "choice must be yes, no or maybe"}
            unknown = await poll_b.push("shout", {})
            assert not unknown.ok and unknown.response == {"reason": "unknown event"}
            # Presence across nodes: each sees both voters.
            await until(
                lambda: _present(got_a) >= {"ana", "bo"} and _present(got_b) >= {"ana", "bo"},
                10,
                "both voters in presence on both nodes",
            )
            # The clock: broadcast from outside a channel, by each node.
            (_, _), clock = await collect(bo, "poll:clock")
            await until(lambda: {t["node"] for t in clock.get("tick", [])} >= {"v1", "v2"}, 10)

            # A rejoin with since gets exactly the votes it missed.
            async with Client(n2.ws_url, {"name": "cy"}) as cy:
                first = cy.channel("poll:lunch", {})
                seen = await first.join()
                assert seen["offset"] == 1 and len(seen["history"]) == 1
                await first.leave()
                await poll_b.push("vote", {"choice": "no"})
                await poll_a.push("vote", {"choice": "maybe"})
                await until(lambda: len(got_a.get("vote", [])) == 3, 10, "three votes")
                since = {"offset": seen["offset"], "epoch": seen["epoch"]}
                again = await cy.channel("poll:lunch", {"since": since}).join()
                assert again["recovered"] is True and again["offset"] == 3
                assert [(v["name"], v["choice"]) for v in again["history"]] == [
                    ("bo", "no"),
                    ("ana", "maybe"),
                ]
                with pytest.raises(Exception, match="invalid since"):
                    await cy.channel("poll:x", {"since": {"offset": -1}}).join()
    except Exception:
        print(n1.log()[-3000:], n2.log()[-3000:])
        raise
    finally:
        n1.stop()
        n2.stop()


def _present(got: dict[str, list[Any]]) -> set[str]:
    names: set[str] = set()
    for state in got.get("presence_state", []):
        names |= set(state)
    for diff in got.get("presence_diff", []):
        names |= set(diff.get("joins", {}))
        names -= set(diff.get("leaves", {})) - set(diff.get("joins", {}))
    return names


async def test_the_example_as_a_worker_group(redis_server: Any) -> None:
    group = start_server(
        SPEC, "--workers", "2", "--redis", redis_server.url, "--drain-window", "1",
        node="vw", env=ENV,
    )  # fmt: skip
    try:
        wait_http(f"{group.url}/readyz", proc=group.proc)
        async with Client(group.ws_url, {"name": "ana"}) as ana:
            (poll, _reply), got = await collect(ana, "poll:w")
            assert (await poll.push("vote", {"choice": "no"})).ok
            await until(lambda: got.get("vote"), 10)
        assert "app=examples.votes.votes:app" in group.log()
    finally:
        assert group.stop(timeout=25) == 0


def test_a_bad_app_is_a_usage_error() -> None:
    for spec, why in (
        ("examples.votes.votes", "expected MODULE:NAME"),
        ("no.such.module:app", "cannot import no.such.module"),
        ("examples.votes.votes:nope", "has no nope"),
        ("examples.votes.votes:CHOICES", "is a frozenset, not a roost.Application"),
    ):
        with pytest.raises(AppNotFound, match=why):
            load(spec)
        done = subprocess.run(
            [sys.executable, "-m", "roost", "serve", spec, "--port", str(free_port())],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            env={k: v for k, v in os.environ.items() if not k.startswith("ROOST_")},
        )
        assert done.returncode == 2 and why in done.stderr, done.stderr


def test_factories_and_decorators() -> None:
    from roost import Channel

    app = Application()

    @app.channel("a:*")
    class A(Channel):
        pass

    assert app.router.match("a:1") is A and app.router.match("b:1") is None
    assert load("roost.chat:application").router.match("rooms:lobby") is not None


async def test_the_example_with_its_backend_deciding_joins(redis_server: Any) -> None:
    """The README's walk-through: the example's backend process decides joins on both nodes."""
    port = free_port()
    backend = subprocess.Popen(
        [sys.executable, "examples/votes/backend.py", "--port", str(port), "--secret", "s3"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    hooks = ("--hook-join", f"http://127.0.0.1:{port}/join", "--hook-secret", "s3",
             "--admin-secret", ADMIN_SECRET)  # fmt: skip
    nodes = []
    try:
        nodes = [
            start_server(SPEC, "--redis", redis_server.url, *hooks, node=name, env=ENV)
            for name in ("b1", "b2")
        ]
        for server in nodes:
            async with Client(server.ws_url, {"name": "ana"}) as ana:
                reply = await _join_when_backend_is_up(ana, "poll:open")
                assert reply["recovered"] is False and reply["history"] == []
                with pytest.raises(JoinRefused) as closed:
                    await ana.channel("poll:closed-lunch", {}).join()
                assert closed.value.response == {"reason": "this poll is closed"}
        # ... and /admin on one node watches both.
        async with Client(nodes[0].ws_url, headers=admin_token(ADMIN_SECRET)) as admin:
            snapshots: list[Any] = []
            channel = admin.channel("admin:cluster", {"secret": ADMIN_SECRET})
            channel.on("snapshot", snapshots.append)
            reply = await channel.join()
            assert sorted(reply["nodes"]) == ["b1", "b2"]
            await until(lambda: {s["node"] for s in snapshots} == {"b1", "b2"}, 15, "both")
    finally:
        for server in nodes:
            server.stop()
        backend.kill()
        backend.wait(5)


async def _join_when_backend_is_up(client: Client, topic: str) -> Any:
    for _ in range(100):  # the backend process may still be starting: fail closed, retry
        try:
            return await client.channel(topic, {}).join()
        except JoinRefused as exc:
            assert exc.response == {"reason": "temporarily unavailable"}, exc.response
            await asyncio.sleep(0.1)
    raise AssertionError("the backend never answered")
