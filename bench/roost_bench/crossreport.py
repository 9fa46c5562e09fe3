"""The ``crossnode`` scenario's table and chart."""

from __future__ import annotations

import math
from pathlib import Path

from .crossnode import Result


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def table(res: Result) -> list[str]:
    cfg = res.config
    lines = [
        f"cross-node: publishers on n1, {cfg['subscribers']} subscribers + 1 probe on n2 "
        f"({cfg['pubsub_mode']} mode), {cfg['duration_s']:g} s per rate, "
        f"median of {cfg['rounds']} round(s); latency = send stamp -> receipt at the probe (ms)",
        f"{'rate/s':>7} | {'roost p50':>9} {'p99':>7} {'p99.9':>7} | "
        f"{'redis p50':>9} {'p99':>7} {'p99.9':>7} | {'p99 ratio':>9} | "
        f"{'sent/s':>8} {'deliveries/s':>12} | {'lost':>5}",
    ]
    for row in res.rates:
        ro, rd = row["roost"], row["redis"]
        lr, lb = ro["latency"], rd["latency"]
        ratio = row["p99_ratio"]
        lines.append(
            f"{row['rate']:>7} | {_ms(lr['p50_ms']):>9} {_ms(lr['p99_ms']):>7} "
            f"{_ms(lr['p999_ms']):>7} | {_ms(lb['p50_ms']):>9} {_ms(lb['p99_ms']):>7} "
            f"{_ms(lb['p999_ms']):>7} | {'-' if ratio is None else f'{ratio:.2f}':>9} | "
            f"{ro['send_rate'] or 0:>8,.0f} {ro['deliveries_per_s'] or 0:>12,.0f} | "
            f"{ro['lost']:>5}" + (f" (redis {rd['lost']})" if rd["lost"] else "")
        )
    sat = res.saturation
    if sat:
        ro, rd = sat["roost"], sat["redis"]
        lines.append(
            f"saturation: roost {ro['messages_per_s'] or 0:,.0f} msg/s = "
            f"{ro['deliveries_per_s'] or 0:,.0f} deliveries/s (lost {ro['lost']}); "
            f"bare redis-py {rd['messages_per_s'] or 0:,.0f} msg/s (lost {rd['lost']}); "
            f"roost/redis msg/s {sat['messages_ratio'] or 0:.3f}"
        )
    for row in res.rates:
        if row["rate"] == 5000:
            ratio = row["p99_ratio"]
            ok = ratio is not None and ratio <= 3 and row["roost"]["lost"] == 0
            lines.append(
                f"target (issue 8): p99 at 5000 msg/s <= 3 x bare Redis, no loss: "
                f"{'-' if ratio is None else f'{ratio:.2f}'} x, lost {row['roost']['lost']} "
                f"-> {'met' if ok else 'MISSED'}"
            )
    return lines


def plot(res: Result, path: Path) -> bool:
    """crossnode.png: latency percentiles and deliveries/s against the offered rate."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = [row["rate"] for row in res.rates]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for key, label, style in (("p50_ms", "p50", "o"), ("p99_ms", "p99", "s")):
        for who, ls in (("roost", "-"), ("redis", "--")):
            ys = [row[who]["latency"][key] or math.nan for row in res.rates]
            name = "roost n1→n2" if who == "roost" else "bare redis-py"
            ax1.plot(rates, ys, ls, marker=style, label=f"{name} {label}")
    ys = [row["roost"]["latency"]["p999_ms"] or math.nan for row in res.rates]
    ax1.plot(rates, ys, ":", marker="^", label="roost n1→n2 p99.9")
    ax1.set_xscale("log")
    ax1.set_yscale("log")
    ax1.set_xlabel("publish rate (msg/s)")
    ax1.set_ylabel("latency (ms)")
    ax1.set_title("send → receipt latency")
    ax1.grid(True, which="both", alpha=0.3)
    ax1.legend(fontsize=8)
    subs = res.config["subscribers"] + 1
    got = [row["roost"]["deliveries_per_s"] or 0 for row in res.rates]
    ax2.plot(rates, [r * subs for r in rates], "--", color="grey", label="offered (rate x subs)")
    ax2.plot(rates, got, "-o", label="roost deliveries/s on n2")
    if res.saturation:
        sat = res.saturation["roost"]["deliveries_per_s"] or 0
        ax2.axhline(sat, color="red", ls=":", label=f"roost saturation {sat:,.0f}/s")
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("publish rate (msg/s)")
    ax2.set_ylabel("deliveries/s")
    ax2.set_title(f"deliveries on n2 ({subs} subscribers)")
    ax2.grid(True, which="both", alpha=0.3)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
