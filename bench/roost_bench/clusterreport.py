"""The ``cluster`` scenario's table and chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .cluster import Result
from .harness import pyplot


def _num(v: float | None, fmt: str = ",.0f") -> str:
    return "-" if v is None else format(v, fmt)


def _row(topo: dict[str, Any], phase: str) -> str:
    p = topo[phase]
    lat = p["latency"]
    ingress = " ".join(_num(x) for x in p["spublish_per_s"])
    redis_cpu = " ".join(_num(v, ".2f") for k, v in p["cpu"].items() if k.startswith("redis"))
    return (
        f"{topo['masters']:>7} | {phase:<10} | {_num(p['send_rate']):>8} "
        f"{_num(p['deliveries_per_s']):>12} {p['lost']:>6} | {_num(lat['p50_ms'], '.2f'):>7} "
        f"{_num(lat['p99_ms'], '.2f'):>7} | {ingress:<22} | {redis_cpu:<15} | "
        f"{_num(p['cpu'].get('n1'), '.2f'):>5} {_num(p['cpu'].get('n2'), '.2f'):>5} "
        f"{_num(p['cpu'].get('bench client'), '.2f'):>5}"
    )


def table(res: Result) -> list[str]:
    cfg = res.config
    lines = [
        f"cluster: {cfg['rooms']} rooms x {cfg['members']} subscribers on n2, publisher on n1, "
        f"rooms spread evenly over the masters; {cfg['duration']:g} s per phase; "
        f"latency = send stamp -> receipt (ms), over every delivery",
        f"{'masters':>7} | {'phase':<10} | {'sent/s':>8} {'deliveries/s':>12} {'lost':>6} | "
        f"{'p50':>7} {'p99':>7} | {'SPUBLISH/s per master':<22} | {'redis CPU':<15} | "
        f"{'n1':>5} {'n2':>5} {'bench':>5}  (CPU: share of one core)",
    ]
    for topo in res.topologies:
        lines += [_row(topo, "paced"), _row(topo, "saturation")]
    r = res.ratios
    for phase in ("paced", "saturation"):
        if phase in r:
            x = r[phase]
            lines.append(
                f"ratio {r['of']} ({phase}): deliveries/s {_num(x['deliveries_per_s'], '.2f')}, "
                f"p50 {_num(x['p50'], '.2f')}, p99 {_num(x['p99'], '.2f')}, busiest master's "
                f"SPUBLISH/s {_num(x['busiest_master_spublish_per_s'], '.2f')}"
            )
    return lines


def plot(res: Result, path: Path) -> bool:
    """cluster.png: deliveries/s and p99 per topology, and each master's SPUBLISH/s."""
    plt = pyplot()
    if plt is None or not res.topologies:
        return False
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(14, 4.2))
    names = [f"{t['masters']} master(s)" for t in res.topologies]
    xs = range(len(names))
    for off, phase in ((-0.2, "paced"), (0.2, "saturation")):
        ax1.bar([x + off for x in xs], [t[phase]["deliveries_per_s"] or 0 for t in res.topologies],
                width=0.4, label=phase)  # fmt: skip
        ax2.bar([x + off for x in xs], [t[phase]["latency"]["p99_ms"] or 0 for t in res.topologies],
                width=0.4, label=phase)  # fmt: skip
    for ax, title in ((ax1, "cross-node deliveries/s on n2"), (ax2, "p99 latency (ms)")):
        ax.set_xticks(list(xs), names)
        ax.set_title(title)
        ax.legend(fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
    labels, values = [], []
    for t in res.topologies:
        for i, v in enumerate(t["saturation"]["spublish_per_s"]):
            labels.append(f"{t['masters']}m:#{i + 1}")
            values.append(v or 0)
    ax3.bar(labels, values, color="tab:green")
    ax3.set_title("SPUBLISH/s per master (saturation)")
    ax3.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
