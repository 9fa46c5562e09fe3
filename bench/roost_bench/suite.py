"""``roost-bench all``: every scenario in one run, then issue 8's targets as ratios.

Each scenario runs as its own command would (same code, same tables, ``NAME.json`` and
``NAME.png`` under the output folder); ``--quick`` shrinks every one of them so that
the whole suite takes a few minutes. At the end, one table holds each target, the
measured ratio and whether it was met; it is also written as ``summary.json``.
A target whose scenario did not run (failed, or a peer not installed) is reported as
not measured, with the reason — never as met.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import (
    connections,
    crossnode,
    crossreport,
    fanout,
    peerreport,
    peers,
    peersystems,
    rooms,
    roomsreport,
)

Say = Callable[[str], None]


@dataclass
class Scenario:
    name: str
    run: Callable[[Say], Any]
    table: Callable[[Any], list[str]]
    plot: Callable[[Any, Path], bool]
    as_json: Callable[[Any], Any] = lambda result: result


def scenarios(out: Path, quick: bool, setup: bool, timeout: float) -> list[Scenario]:
    """The five scenarios, each with its default sizes or, with ``quick``, small ones."""
    if quick:
        fan = ([1000], 100, 2)
        xn = crossnode.Config(rates=[1000, 5000], duration=1.0, rounds=1, saturation=2000, out=out)
        rm = rooms.Config(rooms=200, members=10, messages=10, rounds=1, out=out)
        cn = connections.Config(clients=2000, rest=2.0, heartbeat=10.0, out=out)
        one = peersystems.Config(
            clients=200, messages=100, min_messages=10, rounds=1, round_s=0.5, latency_s=2.0
        )
    else:
        fan = ([1000, 10_000], 200, 5)
        xn = crossnode.Config(rates=[1000, 5000, 20_000], out=out)
        rm = rooms.Config(out=out)
        cn = connections.Config(out=out)
        one = peersystems.Config()
    one.out = out
    two = dataclasses.replace(one, cross_node=True)
    return [
        Scenario("fanout", lambda say: fanout.measure(*fan), fanout.table, fanout.plot),
        Scenario(
            "crossnode",
            lambda say: crossnode.run(xn, timeout, say),
            crossreport.table,
            crossreport.plot,
            lambda result: result.as_dict(),
        ),
        Scenario(
            "rooms", lambda say: rooms.run(rm, timeout, say), roomsreport.table, roomsreport.plot
        ),
        Scenario(
            "connections",
            lambda say: connections.run(cn, timeout, say),
            connections.table,
            connections.plot,
        ),
        Scenario(
            "peers",
            lambda say: peers.run(one, timeout, setup, say),
            peerreport.table,
            peerreport.plot,
        ),
        Scenario(
            "peers-crossnode",
            lambda say: peers.run(two, timeout, False, say),
            peerreport.table,
            peerreport.plot,
        ),
    ]


# -- the targets ---------------------------------------------------------------------------
@dataclass
class Target:
    scenario: str
    measure: str
    goal: str
    value: float | None = None
    shown: str = "-"
    met: bool | None = None  # None: not measured
    why: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def targets(results: dict[str, Any], errors: dict[str, str]) -> list[Target]:
    """Issue 8's targets, read from whatever scenarios produced."""
    out: list[Target] = []

    def missing(t: Target, scenario: str) -> Target:
        t.why = errors.get(scenario, "not run")
        return t

    # fanout: roost / raw limit at 1,000 subscribers
    t = Target("fanout", "roost / raw limit, 1,000 subscribers", f">= {fanout.TARGET}")
    rows = [r for r in results.get("fanout") or [] if r["raw"]["clients"] == 1000]
    if rows:
        t.value = rows[0]["ratio"]
        t.shown, t.met = f"{t.value:.2f}", t.value >= fanout.TARGET
        out.append(t)
    else:
        out.append(missing(t, "fanout"))

    # peers: roost + Redis against python-socketio and Node socket.io
    ratios = (results.get("peers") or {}).get("ratios", {}).get("roost-redis", {})
    systems = {s["system"]: s for s in (results.get("peers") or {}).get("systems", [])}
    for key, label in (("python-socketio", "python-socketio"), ("node-socketio", "Node socket.io")):
        goal = peers.TARGETS[key]
        t = Target("peers", f"roost + Redis / {label}", f">= {goal:g}")
        if key in ratios:
            t.value = ratios[key]["ratio"]
            t.shown, t.met = f"{t.value:.2f}", bool(ratios[key]["met"])
            out.append(t)
        elif key in systems:
            t.why = str(systems[key].get("reason", "not measured"))
            out.append(t)
        else:
            out.append(missing(t, "peers"))

    # cross-node: p99 at 5,000 msg/s against bare Redis, and no loss at any rate
    xn = results.get("crossnode")
    t = Target("crossnode", "p99 at 5,000 msg/s / bare Redis p99 (last subscriber)", "<= 3")
    lost = Target("crossnode", "messages lost, every rate and saturation", "0")
    if xn is not None:
        row = next((r for r in xn.rates if r["rate"] == 5000), None)
        if row is not None and row["p99_ratio"] is not None:
            t.value = row["p99_ratio"]
            t.shown, t.met = f"{t.value:.2f}", t.value <= 3
        else:
            t.why = "no 5,000 msg/s phase"
        n = sum(r["roost"]["lost"] for r in xn.rates) + xn.saturation["roost"]["lost"]
        lost.value, lost.shown, lost.met = n, str(n), n == 0
        out += [t, lost]
    else:
        out += [missing(t, "crossnode"), missing(lost, "crossnode")]

    # connections: RSS per joined idle connection, join rate
    cn = results.get("connections")
    rss = Target("connections", "RSS per joined idle connection", f"<= {connections.TARGET_KB} KiB")
    joins = Target("connections", "joins/s", f">= {connections.TARGET_JOINS:,}")
    if cn is not None:
        rss.value = cn["kib_per_connection_joined"]
        rss.shown, rss.met = f"{rss.value:.1f} KiB", cn["targets"]["kib_per_connection_met"]
        joins.value = cn["joins_per_s"]
        joins.shown, joins.met = f"{joins.value or 0:,.0f}", cn["targets"]["joins_per_s_met"]
        out += [rss, joins]
    else:
        out += [missing(rss, "connections"), missing(joins, "connections")]

    # rooms: in topic mode a node receives its share of the traffic
    rm = results.get("rooms")
    for node in rooms.NODES:
        t = Target("rooms", f"topic mode, {node}: share received / share of rooms", "≈ 1")
        c = ((rm or {}).get("comparison") or {}).get(node)
        if c and c["share_received_topic"] is not None and c["share_expected"]:
            t.value = c["share_received_topic"] / c["share_expected"]
            t.shown = f"{c['share_received_topic']:.3f} / {c['share_expected']:.3f}"
            t.met = bool(c["target_met"])
            out.append(t)
        else:
            out.append(missing(t, "rooms"))
    return out


def summary_table(ts: list[Target]) -> list[str]:
    lines = [
        "targets (issue 8):",
        f"{'scenario':<12} {'measure':<56} {'result':>15}  {'target':<10} verdict",
    ]
    for t in ts:
        verdict = "met" if t.met else "MISSED" if t.met is False else f"not measured ({t.why})"
        lines.append(f"{t.scenario:<12} {t.measure:<56} {t.shown:>15}  {t.goal:<10} {verdict}")
    return lines


def run_all(
    out: Path, quick: bool, setup: bool, timeout: float, say: Say, echo: Say
) -> tuple[list[Target], dict[str, str]]:
    """Every scenario in turn (one failing does not stop the others); the targets."""
    import json

    from .harness import _clean, write_results

    results: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for sc in scenarios(out, quick, setup, timeout):
        say(f"== {sc.name}")
        try:
            result = sc.run(say)
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            errors[sc.name] = f"{type(exc).__name__}: {exc}"
            echo(f"{sc.name}: FAILED ({errors[sc.name]})")
            continue
        results[sc.name] = result
        echo("")
        for line in sc.table(result):
            echo(line)
        echo(write_results(out, sc.name, result, sc.plot, sc.as_json(result)))
    ts = targets(results, errors)
    echo("")
    for line in summary_table(ts):
        echo(line)
    summary = {
        "quick": quick,
        "targets": [t.as_dict() for t in ts],
        "failed": errors,
    }
    (out / "summary.json").write_text(json.dumps(_clean(summary), indent=2) + "\n")
    echo(f"wrote {out / 'summary.json'}")
    return ts, errors
