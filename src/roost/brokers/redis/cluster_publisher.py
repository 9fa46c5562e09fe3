"""The ordered publisher on a Redis Cluster: SPUBLISH and the sharded history script,
one pipeline per master.

A batch is split by the master serving each item's slot (the client's shard map) and
each master gets its own pipeline, in the batch's order, all at once. A master that
fails (dead, frozen past the deadline, failing over) fails only its own items: its
stored publishes get an error reply, its plain ones go back to the head of the queue
(as on one Redis); rooms on the other masters go on. redis-py's cluster pipeline
refuses ``Script`` objects, so the script goes as a raw EVALSHA; a master that does
not know it (a promoted replica: script caches are not replicated) gets those items
again as EVAL, in order.

With ``wait_replicas`` N > 0, each master's pipeline that holds stored publishes ends
with ``WAIT N timeout`` sent to that master (on the pipeline's one connection to it,
after its scripts), with one Redis's meaning: fewer replicas in time, and that group's
stored publishes answer ``HistoryTimeout`` (stored and published, not known to be
durable: the client's ``timeout``). A stored publish that a MOVED redirect sent to
another master is not covered by that WAIT and is answered the same way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from redis.exceptions import ClusterError, NoScriptError

from ...pubsub.history import HistoryTimeout
from .cluster import CLUSTER_ERRORS, PUBLISH_STORED_SHARDED, ClusterConnection
from .publisher import PlainPublish, Publisher, StoredPublish

log = logging.getLogger("roost.redis")

Item = PlainPublish | StoredPublish
Address = tuple[str, int] | None  # a master; None when no master is known for the slot


class ClusterPublisher(Publisher):
    def __init__(self, connection: ClusterConnection, *args: Any, **kwargs: Any) -> None:
        super().__init__(connection, *args, **kwargs)
        self.cluster = connection
        self._sharded = connection.cluster.register_script(PUBLISH_STORED_SHARDED)
        self._failing = 0  # batches in a row with a master failing

    async def _send(self, batch: list[Item]) -> list[Any]:
        groups: dict[Address, list[int]] = {}
        for i, item in enumerate(batch):
            groups.setdefault(self._owner(item), []).append(i)
        outcomes = await asyncio.gather(
            *(self._send_group([batch[i] for i in idx], at) for at, idx in groups.items()),
            return_exceptions=True,
        )
        results: list[Any] = [None] * len(batch)
        down: list[int] = []  # items of the masters that failed
        failed: BaseException | None = None
        for idx, outcome in zip(groups.values(), outcomes, strict=True):
            if not isinstance(outcome, BaseException):
                for i, result in zip(idx, outcome, strict=True):
                    results[i] = result
                continue
            if not isinstance(outcome, CLUSTER_ERRORS):
                raise outcome  # cancelled, or a bug
            failed = outcome
            for i in idx:
                results[i] = outcome
            down += idx
        if failed is None:
            self._failing = 0
            return results
        if len(down) == len(batch):  # the publisher's own path: back off, retry plain ones
            raise ClusterError(str(failed) or type(failed).__name__) from failed
        return await self._partly_failed([batch[i] for i in sorted(down)], results, failed)

    async def _partly_failed(
        self, down: list[Item], results: list[Any], exc: BaseException
    ) -> list[Any]:
        """Some masters failed: their plain items to the queue's head, their stored ones
        an error (the caller's reply); a short pause so a dead master is not hammered."""
        retry = [item for item in down if isinstance(item, PlainPublish)]
        self.queue.extendleft(reversed(retry))
        self.stats.published -= len(retry)  # counted when they go out
        stored = len(down) - len(retry)
        self.stats.publish_errors += stored
        self._failing += 1
        if self._failing == 1 or self._failing % 100 == 0:
            log.warning(
                "redis cluster: a master failed (%d stored refused, %d to retry): %r",
                stored,
                len(retry),
                exc,
            )
        await asyncio.sleep(0.05 * min(self._failing, 10))
        return results

    def _owner(self, item: Item) -> Address:
        name = item.channel if isinstance(item, PlainPublish) else item.keys[0]
        try:
            return self.cluster.owner(name)
        except CLUSTER_ERRORS:
            return None  # no master known for the slot: the pipeline finds out

    async def _send_group(self, items: list[Item], address: Address) -> list[Any]:
        """One master's items, in order, inside the publisher's bound."""
        script = self._sharded
        async with asyncio.timeout(3 * self.connection.timeout):
            results = await self._pipeline(
                items, lambda item: ("EVALSHA", script.sha, len(item.keys)), address
            )
            again = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
            if again:
                retry = await self._pipeline(
                    [items[i] for i in again],
                    lambda item: ("EVAL", script.script, len(item.keys)),
                    address,
                )
                for i, result in zip(again, retry, strict=True):
                    results[i] = result
            return results

    async def _pipeline(
        self,
        items: list[Item],
        head: Callable[[StoredPublish], tuple[Any, ...]],
        address: Address,
    ) -> list[Any]:
        wait = self.wait_replicas > 0 and any(isinstance(i, StoredPublish) for i in items)
        client = self.cluster.cluster
        node = client.get_node(host=address[0], port=address[1]) if address else None
        async with client.pipeline(transaction=False) as pipe:
            for item in items:
                if isinstance(item, PlainPublish):
                    pipe.execute_command("SPUBLISH", item.channel, item.data)
                else:
                    item.sent = True
                    pipe.execute_command(*head(item), *item.keys, *item.args)
            if wait and node is not None:  # after the scripts, on their connection
                pipe.execute_command("WAIT", self.wait_replicas, self.wait_ms, target_nodes=node)
            t0 = self.clock()
            results = list(await pipe.execute(raise_on_error=False))
            if self.observe is not None:
                self.observe(self.clock() - t0)
        if wait:
            acked = results.pop() if node is not None else None
            self._replicated(items, results, acked, address)
        return results

    def _replicated(
        self, items: list[Item], results: list[Any], acked: Any, address: Address
    ) -> None:
        """The group's stored results become ``HistoryTimeout`` unless WAIT on its
        master answered enough replicas and the publish ran on that master."""
        if acked is None:
            why: str | None = "no master known to WAIT on"
        elif isinstance(acked, Exception):
            why = f"WAIT failed: {acked}"
        elif int(acked) < self.wait_replicas:
            self.stats.unreplicated += 1
            why = f"stored on {int(acked)} of {self.wait_replicas} replicas in time"
        else:
            why = None
        for i, item in enumerate(items):
            if not isinstance(item, StoredPublish) or isinstance(results[i], Exception):
                continue
            # A MOVED redirect ran it on another master: the WAIT above did not cover it.
            reason = why or (None if self._owner(item) == address else "moved before WAIT")
            if reason is not None:
                self.stats.publish_errors += 1
                results[i] = HistoryTimeout(reason)
