"""``GET /metrics``: Prometheus metrics, read from the node's counters at scrape time.

Nothing on the message path talks to prometheus-client: sockets, the fastlane and
the broker bump plain integers, and a collector turns them into metrics when
Prometheus scrapes. Only the two latency histograms are observed as they happen
(once per Redis round trip, once per envelope received — never per subscriber).
"""

from __future__ import annotations

from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..channels import Endpoint

LAG_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class RoostCollector(Collector):
    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint

    def collect(self) -> Iterator[Metric]:
        ep = self.endpoint
        st = ep.stats
        node = ep.node

        def gauge(name: str, doc: str, value: float) -> Metric:
            g = GaugeMetricFamily(name, doc, labels=["node"])
            g.add_metric([node], value)
            return g

        def counter(name: str, doc: str, value: float) -> Metric:
            c = CounterMetricFamily(name, doc, labels=["node"])
            c.add_metric([node], value)
            return c

        yield gauge("roost_connections", "Open sockets.", len(ep.sockets))
        yield gauge(
            "roost_channels_joined",
            "Joined channels over all sockets.",
            sum(len(s.channels) for s in list(ep.sockets)),
        )
        yield counter("roost_connections_accepted", "Sockets accepted.", st.connections_total)
        msgs_in = CounterMetricFamily(
            "roost_messages_in", "Client messages by event class.", labels=["node", "class"]
        )
        for cls, value in (
            ("join", st.joins),
            ("leave", st.leaves),
            ("heartbeat", st.heartbeats),
            ("push", st.pushes),
        ):
            msgs_in.add_metric([node, cls], value)
        yield msgs_in
        msgs_out = CounterMetricFamily(
            "roost_messages_out", "Frames sent by kind.", labels=["node", "kind"]
        )
        msgs_out.add_metric([node, "reply"], st.replies_out)
        msgs_out.add_metric([node, "push"], st.pushes_out)
        msgs_out.add_metric([node, "broadcast"], ep.pubsub.delivered)
        yield msgs_out
        yield counter(
            "roost_fastlane_deliveries",
            "Broadcast frames written to subscribers.",
            ep.pubsub.delivered,
        )
        yield counter("roost_rate_limited", "Messages refused by a rate limit.", st.rate_limited)
        yield counter(
            "roost_messages_expired",
            "Client messages that waited out --push-deadline before handling (answered error).",
            st.expired,
        )
        yield counter(
            "roost_connections_throttled",
            "New connections answered 429 (a client's connection rate or open-connection cap).",
            st.throttled,
        )
        yield counter(
            "roost_connections_shed",
            "New connections answered 503 + Retry-After at once (event-loop lag or "
            "handshakes in flight past --shed-lag / --handshakes-in-flight).",
            st.shed,
        )
        yield counter(
            "roost_connections_rebalanced",
            "Sockets closed with 1012 to hand them back to less loaded workers (--worker-balance).",
            st.rebalanced,
        )
        yield counter(
            "roost_slow_consumer_disconnects",
            "Clients disconnected for not reading (1013).",
            st.slow_consumers,
        )
        presence = ep.presence
        yield gauge(
            "roost_presence_entries",
            "Presence metas tracked by this node.",
            presence.entries if presence is not None else 0,
        )
        broker = ep.pubsub.broker
        yield gauge(
            "roost_broker_connected",
            "1 when the broker's subscription is up.",
            1 if broker.connected else 0,
        )
        for name, doc, count in broker.counters():
            yield counter(name, doc, count)
        hooks = ep.settings.get("hooks")
        if hooks is not None:  # --hook-*: the backend's decisions
            decided = CounterMetricFamily(
                "roost_hook_decisions",
                "Backend hook answers: allow, deny, or none (failed: the policy decided).",
                labels=["node", "result"],
            )
            for result, value in (
                ("allow", hooks.stats.allowed),
                ("deny", hooks.stats.denied),
                ("failed", hooks.stats.failed),
            ):
                decided.add_metric([node, result], value)
            yield decided


class Metrics:
    """The registry of one app, and the hooks the broker calls."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(RoostCollector(endpoint))
        self.publish_seconds = Histogram(
            "roost_broker_publish_seconds",
            "Round trip of one pipelined publish batch to Redis.",
            registry=self.registry,
            buckets=LAG_BUCKETS,
        )
        self.lag_seconds = Histogram(
            "roost_delivery_lag_seconds",
            "From the origin node's publish to delivery on this node.",
            registry=self.registry,
            buckets=LAG_BUCKETS,
        )
        endpoint.pubsub.broker.observe(self.publish_seconds.observe, self.lag_seconds.observe)

    async def handle(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.registry),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )


__all__ = ["Metrics"]
