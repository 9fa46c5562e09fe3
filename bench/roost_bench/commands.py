"""``roost-bench``: the benchmark commands (each scenario's code is in its own module)."""

from __future__ import annotations

import sys
from typing import Any

import click

from roost.cli_support import use_uvloop


@click.group()
def bench() -> None:
    """Benchmarks on loopback, reported as ratios against a baseline run alongside."""


@bench.command("fanout")
@click.option("--clients", "clients", default="1000", show_default=True, help="Comma list.")
@click.option("--messages", default=200, show_default=True, help="Broadcasts per round.")
@click.option("--rounds", default=3, show_default=True)
@click.option("--out", default="bench-out", show_default=True, help="Folder for JSON results.")
def bench_fanout(clients: str, messages: int, rounds: int, out: str) -> None:
    """One node, one room: deliveries/s beside the raw transport limit."""
    from pathlib import Path

    from . import fanout
    from .harness import write_results

    use_uvloop()
    rows = fanout.measure([int(c) for c in clients.split(",")], messages, rounds)
    for line in fanout.table(rows):
        click.echo(line)
    click.echo(write_results(Path(out), "fanout", rows, fanout.plot))


@bench.command("crossnode")
@click.option("--redis", "redis_url", default=None, help="Use this Redis [default: a private one].")
@click.option(
    "--rates",
    default="1000,5000,20000",
    show_default=True,
    help="Publish rates (msg/s), comma list.",
)
@click.option("--duration", default=3.0, show_default=True, help="Seconds per rate.")
@click.option("--subscribers", default=100, show_default=True, help="Counting clients on n2.")
@click.option("--rounds", default=3, show_default=True, help="Rounds per rate (median shown).")
@click.option(
    "--saturation-messages",
    default=10_000,
    show_default=True,
    help="Unpaced broadcasts for the saturation run (5x as many for bare Redis).",
)
@click.option(
    "--pubsub-mode", type=click.Choice(["topic", "global"]), default="topic", show_default=True
)
@click.option(
    "--sink/--per-frame-clients",
    default=True,
    show_default=True,
    help="Counting clients in a batched sink process, or per-frame asyncio clients in the bench.",
)
@click.option("--timeout", default=900.0, show_default=True, help="Bound on the whole run (s).")
@click.option("--out", default="bench-out", show_default=True, help="Folder for JSON and PNG.")
def bench_crossnode(
    redis_url: str | None,
    rates: str,
    duration: float,
    subscribers: int,
    rounds: int,
    saturation_messages: int,
    pubsub_mode: str,
    sink: bool,
    timeout: float,
    out: str,
) -> None:
    """Two nodes on Redis: latency and deliveries/s n1 -> n2 beside bare redis-py."""
    from pathlib import Path

    from . import crossnode, crossreport

    cfg = crossnode.Config(
        rates=[int(r) for r in rates.split(",") if r.strip()],
        duration=duration,
        subscribers=subscribers,
        rounds=rounds,
        saturation=saturation_messages,
        redis_url=redis_url,
        mode=pubsub_mode,
        out=Path(out),
        sink=sink,
    )

    _run_scenario(
        "crossnode",
        lambda say: crossnode.run(cfg, timeout, say),
        crossreport.table,
        crossreport.plot,
        out,
        timeout,
        as_json=lambda r: r.as_dict(),
    )


def _run_scenario(
    name: str, run: Any, table: Any, plot: Any, out: str, timeout: float, as_json: Any = None
) -> None:
    """Run a bench scenario (``run(say)``), print its table, write JSON + PNG.

    Everything the scenario started is stopped by the scenario itself, whatever happens;
    here Ctrl-C and the time bound become an exit status.
    """
    from pathlib import Path

    from .harness import write_results

    use_uvloop()

    def say(line: str) -> None:
        click.echo(line, err=True)

    try:
        result = run(say)
    except KeyboardInterrupt:
        click.echo("interrupted; everything started was stopped", err=True)
        sys.exit(130)
    except TimeoutError:
        click.echo(f"timed out after {timeout:g} s; everything started was stopped", err=True)
        sys.exit(1)
    for line in table(result):
        click.echo(line)
    data = None if as_json is None else as_json(result)
    click.echo(write_results(Path(out), name, result, plot, data))


@bench.command("cluster")
@click.option("--masters", default="1,3", show_default=True, help="Topologies, comma list.")
@click.option("--rooms", "n_rooms", default=60, show_default=True, help="Rooms, spread evenly.")
@click.option("--members", default=5, show_default=True, help="Subscribers per room (on n2).")
@click.option("--rate", default=2000, show_default=True, help="Paced phase: msg/s over all rooms.")
@click.option("--duration", default=5.0, show_default=True, help="Seconds per phase.")
@click.option(
    "--saturation-messages",
    default=200_000,
    show_default=True,
    help="Most unpaced broadcasts of the saturation phase (it also stops after --duration).",
)
@click.option("--quick", is_flag=True, help="Short phases (3 s): well under 20 s per topology.")
@click.option("--timeout", default=600.0, show_default=True, help="Bound on the whole run (s).")
@click.option("--out", default="bench-out", show_default=True, help="Folder for JSON and PNG.")
def bench_cluster(
    masters: str,
    n_rooms: int,
    members: int,
    rate: int,
    duration: float,
    saturation_messages: int,
    quick: bool,
    timeout: float,
    out: str,
) -> None:
    """Two nodes on a Redis Cluster of 1, then 3 masters: deliveries/s, per-master
    SPUBLISH/s, p50/p99, and the ratios 3-master / 1-master."""
    from pathlib import Path

    from . import cluster, clusterreport

    topologies = tuple(int(m) for m in masters.split(",") if m.strip())
    if not topologies or min(topologies) < 1:
        raise click.UsageError("--masters: a comma list of master counts, each 1 or more")
    cfg = cluster.Config(
        masters=topologies,
        rooms=n_rooms,
        members=members,
        rate=rate,
        duration=min(duration, 3.0) if quick else duration,
        saturation=saturation_messages,
        out=Path(out),
    )
    _run_scenario(
        "cluster",
        lambda say: cluster.run(cfg, timeout, say),
        clusterreport.table,
        clusterreport.plot,
        out,
        timeout,
        as_json=lambda r: {"config": r.config, "topologies": r.topologies, "ratios": r.ratios},
    )


@bench.command("rooms")
@click.option("--rooms", "n_rooms", default=1000, show_default=True, help="Rooms.")
@click.option("--members", default=10, show_default=True, help="Members per room.")
@click.option("--messages", default=30, show_default=True, help="Broadcasts per room per round.")
@click.option("--rounds", default=3, show_default=True)
@click.option(
    "--split", default=0.2, show_default=True, help="Share of rooms with members on both nodes."
)
@click.option("--publishers", default=2, show_default=True, help="Publishing sockets per node.")
@click.option("--modes", default="global,topic", show_default=True, help="Comma list.")
@click.option("--redis", "redis_url", default=None, help="Use this Redis [default: a private one].")
@click.option("--timeout", default=900.0, show_default=True, help="Bound on the whole run (s).")
@click.option("--out", default="bench-out", show_default=True, help="Folder for JSON and PNG.")
def bench_rooms(
    n_rooms: int,
    members: int,
    messages: int,
    rounds: int,
    split: float,
    publishers: int,
    modes: str,
    redis_url: str | None,
    timeout: float,
    out: str,
) -> None:
    """Rooms over two nodes: throughput and per-node Redis bytes, global vs topic mode."""
    from pathlib import Path

    from . import rooms, roomsreport

    cfg = rooms.Config(
        rooms=n_rooms,
        members=members,
        messages=messages,
        rounds=rounds,
        split=split,
        publishers=publishers,
        modes=tuple(m.strip() for m in modes.split(",") if m.strip()),
        redis_url=redis_url,
        out=Path(out),
    )
    _run_scenario(
        "rooms",
        lambda say: rooms.run(cfg, timeout, say),
        roomsreport.table,
        roomsreport.plot,
        out,
        timeout,
    )


@bench.command("connections")
@click.option(
    "--clients",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Capped by the fd limit; 0: as many as it allows (at most 60,000).",
)
@click.option("--room-size", default=10, show_default=True, help="Clients per room joined.")
@click.option("--rest", default=10.0, show_default=True, help="Seconds of CPU measured at rest.")
@click.option(
    "--heartbeat",
    default=30.0,
    show_default=True,
    help="Heartbeat interval per client in the second rest phase (0: skip it).",
)
@click.option("--concurrency", default=200, show_default=True, help="Handshakes in flight.")
@click.option("--source-ips", default=0, show_default=True, help="127.0.0.x to use (0: auto).")
@click.option("--timeout", default=600.0, show_default=True, help="Bound on the whole run (s).")
@click.option("--out", default="bench-out", show_default=True, help="Folder for JSON and PNG.")
def bench_connections(
    clients: int,
    room_size: int,
    rest: float,
    heartbeat: float,
    concurrency: int,
    source_ips: int,
    timeout: float,
    out: str,
) -> None:
    """Joined idle clients on one node: RSS per connection, join rate, CPU at rest."""
    from pathlib import Path

    from . import connections

    cfg = connections.Config(
        clients=clients,
        room_size=room_size,
        rest=rest,
        heartbeat=heartbeat,
        concurrency=concurrency,
        source_ips=source_ips,
        out=Path(out),
    )
    _run_scenario(
        "connections",
        lambda say: connections.run(cfg, timeout, say),
        connections.table,
        connections.plot,
        out,
        timeout,
    )


@bench.command("workers")
@click.option("--clients", type=click.IntRange(min=1), default=100_000, show_default=True)
@click.option("--workers", "n_workers", type=click.IntRange(min=1), default=2, show_default=True)
@click.option(
    "--client-procs", type=click.IntRange(min=1), default=4, show_default=True,
    help="Client processes, each with its own 127.0.0.x source addresses.",
)  # fmt: skip
@click.option("--room-size", type=click.IntRange(min=1), default=10, show_default=True)
@click.option(
    "--channel", type=click.Choice(["echo", "rooms"]), default="echo", show_default=True,
    help="echo: roost serve --echo's channel (join = one Redis subscription per room); rooms: "
    "the chat (also history, presence, user:entered; use --join-concurrency).",
)  # fmt: skip
@click.option("--rest", default=10.0, show_default=True, help="Seconds of CPU measured at rest.")
@click.option(
    "--heartbeat", default=30.0, show_default=True,
    help="Heartbeat interval per client in the second rest phase (0: skip it).",
)  # fmt: skip
@click.option(
    "--concurrency", default=200, show_default=True, help="Handshakes in flight a process."
)
@click.option(
    "--join-concurrency", type=click.IntRange(min=0), default=0, show_default=True,
    help="Joins in flight a client process (0: every client sends its join at once).",
)  # fmt: skip
@click.option(
    "--storm/--no-storm", default=True, show_default=True,
    help="Then SIGKILL worker w1 and time every client's reconnect and rejoin.",
)  # fmt: skip
@click.option("--storm-timeout", default=120.0, show_default=True, help="Bound on the storm (s).")
@click.option(
    "--balance-timeout", default=300.0, show_default=True,
    help="After the storm, seconds to wait for the split to be within 20 % again (0: skip).",
)  # fmt: skip
@click.option("--timeout", default=900.0, show_default=True, help="Bound on the whole run (s).")
@click.option("--out", default="bench-out", show_default=True, help="Folder for JSON and PNG.")
def bench_workers(
    clients: int,
    n_workers: int,
    client_procs: int,
    room_size: int,
    channel: str,
    rest: float,
    heartbeat: float,
    concurrency: int,
    join_concurrency: int,
    storm: bool,
    storm_timeout: float,
    balance_timeout: float,
    timeout: float,
    out: str,
) -> None:
    """Idle joined clients over roost serve --workers N: RSS per connection, joins/s, CPU at
    rest, the kernel's split; then a reconnect storm after SIGKILL of one worker."""
    from pathlib import Path

    from . import workers, workersreport

    cfg = workers.Config(
        clients=clients,
        workers=n_workers,
        client_procs=client_procs,
        room_size=room_size,
        channel=channel,
        rest=rest,
        heartbeat=heartbeat,
        concurrency=concurrency,
        join_concurrency=join_concurrency,
        storm=storm,
        storm_timeout=storm_timeout,
        balance_timeout=balance_timeout,
        out=Path(out),
    )
    _run_scenario(
        "workers",
        lambda say: workers.run(cfg, timeout, say),
        workersreport.table,
        workersreport.plot,
        out,
        timeout,
    )


@bench.command("workers-fanout")
@click.option("--subscribers", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--workers", "workers_list", default="1,2", show_default=True, help="Comma list.")
@click.option("--messages", type=click.IntRange(min=1), default=10_000, show_default=True,
              help="Messages a burst round.")  # fmt: skip
@click.option("--rate", type=click.FloatRange(min=0), default=200.0, show_default=True,
              help="Paced rounds: messages/s (0: none).")  # fmt: skip
@click.option("--paced-seconds", type=click.FloatRange(min=0.1), default=5.0, show_default=True)
@click.option("--rounds", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--client-procs", type=click.IntRange(min=1), default=2, show_default=True,
              help="Sink processes holding the subscribers.")  # fmt: skip
@click.option("--raw/--no-raw", default=False, show_default=True,
              help="Also one process writing each frame to each subscriber (see BENCHMARKS.md: "
              "with batched readers the kernel's receive queues make it no limit).")  # fmt: skip
@click.option("--timeout", default=900.0, show_default=True, help="Bound on the whole run (s).")
@click.option("--out", default="bench-out", show_default=True, help="Folder for JSON and PNG.")
def bench_workers_fanout(
    subscribers: int,
    workers_list: str,
    messages: int,
    rate: float,
    paced_seconds: float,
    rounds: int,
    client_procs: int,
    raw: bool,
    timeout: float,
    out: str,
) -> None:
    """One room over roost serve --workers 1, then 2, on Redis: deliveries/s and CPU-seconds
    per million deliveries, beside the raw limit of one process; the ratios 2/1."""
    from pathlib import Path

    from . import workerfanout, workersreport

    try:
        counts = tuple(int(w) for w in workers_list.split(",") if w.strip())
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1:
        raise click.UsageError("--workers: a comma list of worker counts, each 1 or more")
    cfg = workerfanout.Config(
        subscribers=subscribers,
        workers=counts,
        messages=messages,
        rate=rate,
        paced_seconds=paced_seconds,
        rounds=rounds,
        client_procs=client_procs,
        raw=raw,
        out=Path(out),
    )
    _run_scenario(
        "workers-fanout",
        lambda say: workerfanout.run(cfg, timeout, say),
        workersreport.fanout_table,
        workersreport.fanout_plot,
        out,
        timeout,
    )


@bench.command("peers")
@click.option("--setup", "do_setup", is_flag=True, help="Install the peers first (network).")
@click.option("--clients", default=1000, show_default=True, help="Subscribers in the room.")
@click.option("--messages", default=200, show_default=True, help="Most broadcasts per round.")
@click.option("--min-messages", default=20, show_default=True, help="Fewest per round.")
@click.option("--round-seconds", default=2.0, show_default=True, help="Aimed length of a round.")
@click.option("--rounds", default=3, show_default=True)
@click.option("--only", default="", help="Comma list of systems (default: all).")
@click.option("--peers-dir", default=None, help="[default: bench/peers of the checkout]")
@click.option("--redis", "redis_url", default=None, help="Use this Redis [default: a private one].")
@click.option(
    "--cross-node",
    is_flag=True,
    help="Two instances per system on one Redis: subscribers on 2, trigger on 1 "
    "(only the systems that go through Redis).",
)
@click.option(
    "--latency-rate",
    type=click.FloatRange(min=0, min_open=True),
    default=2.0,
    show_default=True,
    help="Stamped msg/s of the latency phase.",
)
@click.option(
    "--latency-seconds",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="Its length (0: no latency phase).",
)
@click.option("--timeout", default=1800.0, show_default=True, help="Bound on the whole run (s).")
@click.option("--out", default="bench-out", show_default=True, help="Folder for JSON and PNG.")
def bench_peers(
    do_setup: bool,
    clients: int,
    messages: int,
    min_messages: int,
    round_seconds: float,
    rounds: int,
    only: str,
    peers_dir: str | None,
    redis_url: str | None,
    cross_node: bool,
    latency_rate: float,
    latency_seconds: float,
    timeout: float,
    out: str,
) -> None:
    """The fanout workload on roost, the raw limit and the peers, in one run.

    With --cross-node, each system runs as two instances on one Redis (written as
    peers-crossnode.json/png)."""
    from pathlib import Path

    from . import peerreport, peers, peersystems

    keys = tuple(k.strip() for k in only.split(",") if k.strip())
    unknown = [k for k in keys if k not in peersystems.BY_KEY]
    if unknown:
        raise click.UsageError(f"unknown systems {unknown}; choose from {list(peersystems.BY_KEY)}")
    cfg = peersystems.Config(
        clients=clients,
        messages=messages,
        min_messages=min_messages,
        rounds=rounds,
        round_s=round_seconds,
        only=keys,
        peers_dir=Path(peers_dir) if peers_dir else None,
        redis_url=redis_url,
        out=Path(out),
        cross_node=cross_node,
        latency_rate=latency_rate,
        latency_s=latency_seconds,
    )
    _run_scenario(
        "peers-crossnode" if cross_node else "peers",
        lambda say: peers.run(cfg, timeout, do_setup, say),
        peerreport.table,
        peerreport.plot,
        out,
        timeout,
    )


@bench.command("all")
@click.option("--quick", is_flag=True, help="Small sizes: the whole suite in a few minutes.")
@click.option("--setup", "do_setup", is_flag=True, help="Install the peers first (network).")
@click.option("--timeout", default=1800.0, show_default=True, help="Bound per scenario (s).")
@click.option("--out", default="bench-out", show_default=True, help="Folder for JSON and PNG.")
def bench_all(quick: bool, do_setup: bool, timeout: float, out: str) -> None:
    """Every scenario in turn, then issue 8's targets as ratios (summary.json).

    Exits 1 when a scenario failed to run (a missed target is a result, not a failure).
    """
    from pathlib import Path

    from . import suite

    use_uvloop()
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    try:
        _, errors = suite.run_all(
            path, quick, do_setup, timeout, lambda line: click.echo(line, err=True), click.echo
        )
    except KeyboardInterrupt:
        click.echo("interrupted; everything started was stopped", err=True)
        sys.exit(130)
    if errors:
        sys.exit(1)


@bench.command("setup")
@click.option("--peers-dir", default=None, help="[default: bench/peers of the checkout]")
def bench_setup(peers_dir: str | None) -> None:
    """Install the peers for `roost-bench peers` (network): bench/peers/.venv and npm ci.

    Does nothing for what is installed and current already.
    """
    from pathlib import Path

    from . import peersetup, peersystems

    where = Path(peers_dir) if peers_dir else peersystems.default_peers_dir()
    failures = peersetup.setup(where, lambda line: click.echo(line, err=True))
    for kind, why in failures.items():
        if why:
            click.echo(f"{kind} peers: {why}", err=True)
    if any(failures.values()):
        sys.exit(1)
    click.echo(f"peers ready in {where}")
