"""One node, several worker processes: ``/metrics`` and ``/readyz`` answer for all of them.

``roost serve --workers N`` runs N processes on one port (see ``roost.workers``); a
scrape or a readiness probe lands on whichever worker the kernel picks. So every
worker also serves its own ``/metrics`` and ``/readyz`` on a private Unix socket
(``<dir>/w<k>.sock``, in a directory only the server's user can enter), and its public
``/metrics`` and ``/readyz`` ask every sibling there and answer for the whole group:

- ``/metrics``: every worker's families merged into one exposition. roost's own
  metrics carry ``node="<node>-w<k>"``, so they stay apart; samples with the same name
  and labels (the latency histograms) are summed, ``*_created`` takes the earliest.
  ``roost_workers`` says how many workers there should be, ``roost_workers_answering``
  how many answered within ``SIBLING_TIMEOUT``.
- ``/readyz``: ready only if every worker answers ready (a worker that is restarting,
  draining or has lost Redis makes the group not ready), with each worker's answer.

The private socket also answers ``/load`` (open sockets and readiness, as JSON): what
the siblings' rebalancers read (balance.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from .admission import ENDPOINT_KEY

log = logging.getLogger("roost.workers")

SIBLING_TIMEOUT = 1.0
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Siblings:
    """This worker's place in its group: worker ``index`` (1-based) of ``count``."""

    index: int
    count: int
    node: str  # the group's node name; workers are <node>-w<k>
    directory: Path

    def socket_path(self, index: int) -> Path:
        return self.directory / f"w{index}.sock"

    def others(self) -> list[int]:
        return [k for k in range(1, self.count + 1) if k != self.index]


async def ask(siblings: Siblings, index: int, path: str) -> tuple[int, bytes] | None:
    """GET ``path`` from worker ``index``'s private socket; None if it does not answer."""
    sock = siblings.socket_path(index)
    try:
        async with (
            aiohttp.UnixConnector(path=str(sock)) as conn,
            aiohttp.ClientSession(connector=conn) as session,
            session.get(
                f"http://worker{path}", timeout=aiohttp.ClientTimeout(total=SIBLING_TIMEOUT)
            ) as resp,
        ):
            return resp.status, await resp.read()
    except (TimeoutError, OSError, aiohttp.ClientError) as exc:
        log.debug("worker w%d did not answer %s: %r", index, path, exc)
        return None


def merge_expositions(texts: list[str]) -> list[Metric]:
    """Prometheus text expositions merged into one list of families (see module doc)."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], Sample]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            merged = families.get(family.name)
            if merged is None:
                merged = Metric(family.name, family.documentation, family.type, family.unit)
                families[family.name] = merged
                values[family.name] = {}
            seen = values[family.name]
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                old = seen.get(key)
                if old is None:
                    seen[key] = sample
                elif sample.name.endswith("_created"):
                    seen[key] = old._replace(value=min(old.value, sample.value))
                else:
                    seen[key] = old._replace(value=old.value + sample.value)
    for name, merged in families.items():
        merged.samples = list(values[name].values())
    return list(families.values())


class _Families:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


class GroupView:
    """The public ``/metrics`` and ``/readyz`` of a worker, answering for its group."""

    def __init__(
        self, app: web.Application, siblings: Siblings, metrics: Handler, readyz: Handler
    ) -> None:
        self.app = app
        self.siblings = siblings
        self.local_metrics = metrics
        self.local_readyz = readyz

    async def metrics(self, request: web.Request) -> web.Response:
        own = await self.local_metrics(request)
        others = await asyncio.gather(
            *(ask(self.siblings, k, "/metrics") for k in self.siblings.others())
        )
        texts = [_text(own)] + [got[1].decode() for got in others if got is not None]
        registry = CollectorRegistry(auto_describe=False)
        families = merge_expositions(texts)
        node = self.siblings.node
        for name, doc, value in (
            ("roost_workers", "Worker processes this node runs.", self.siblings.count),
            ("roost_workers_answering", "Workers that answered this scrape.", len(texts)),
        ):
            gauge = GaugeMetricFamily(name, doc, labels=["node"])
            gauge.add_metric([node], value)
            families.append(gauge)
        registry.register(_Families(families))
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE})

    async def readyz(self, request: web.Request) -> web.Response:
        own = await self.local_readyz(request)
        workers: dict[str, object] = {}
        ready = own.status == 200
        workers[f"w{self.siblings.index}"] = _json(_text(own).encode())
        others = self.siblings.others()
        answers = await asyncio.gather(*(ask(self.siblings, k, "/readyz") for k in others))
        for k, got in zip(others, answers, strict=True):
            if got is None:
                ready = False
                workers[f"w{k}"] = {"ready": False, "answering": False}
                continue
            status, body = got
            ready = ready and status == 200
            workers[f"w{k}"] = _json(body)
        answer = {"ready": ready, "workers": workers}
        return web.json_response(answer, status=200 if ready else 503)

    def private_app(self) -> web.Application:
        """What siblings ask: this worker's own answers, on its private socket."""
        app = web.Application()
        app[ENDPOINT_KEY] = self.app[ENDPOINT_KEY]  # what the local handlers read
        app.router.add_get("/metrics", self.local_metrics)
        app.router.add_get("/readyz", self.local_readyz)
        app.router.add_get("/load", self.load)
        return app

    async def load(self, request: web.Request) -> web.Response:
        """What the siblings' rebalancers read (balance.py): open sockets, and whether
        this worker is ready (its ``/readyz``)."""
        ready = (await self.local_readyz(request)).status == 200
        endpoint = request.app[ENDPOINT_KEY]
        return web.json_response({"connections": len(endpoint.sockets), "ready": ready})

    async def serve_private(self, app: web.Application) -> AsyncIterator[None]:
        """cleanup_ctx: the private socket lives as long as the public app."""
        path = self.siblings.socket_path(self.siblings.index)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a crashed predecessor's
        runner = web.AppRunner(self.private_app(), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.UnixSite(runner, str(path), shutdown_timeout=0.5)
        await site.start()
        os.chmod(path, 0o600)
        try:
            yield
        finally:
            await runner.cleanup()
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _text(response: web.StreamResponse) -> str:
    body = response.body if isinstance(response, web.Response) else None
    return bytes(body).decode() if isinstance(body, bytes | bytearray) else ""


def _json(body: bytes) -> object:
    try:
        return json.loads(body)
    except ValueError:
        return {"answer": body[:200].decode(errors="replace")}


def attach(app: web.Application, siblings: Siblings, metrics: Handler, readyz: Handler) -> None:
    """Route ``/metrics`` and ``/readyz`` of ``app`` to the group's view."""
    view = GroupView(app, siblings, metrics, readyz)
    app.router.add_get("/metrics", view.metrics)
    app.router.add_get("/readyz", view.readyz)
    app.cleanup_ctx.append(view.serve_private)
