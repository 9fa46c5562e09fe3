"""The ``peers`` scenario's table and charts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .harness import (
    pyplot,
)


def table(res: dict[str, Any]) -> list[str]:
    cfg = res["config"]
    cross = bool(cfg.get("cross_node"))
    lines = [
        f"peers{' --cross-node' if cross else ''}: one room, {cfg['clients']} subscribers, "
        f"small chat messages; median of {cfg['rounds']} rounds; same counting clients for "
        "every server"
        + (
            "; two instances per system on one Redis, subscribers on instance 2, trigger "
            "on instance 1 (server CPU = instance 2, n1 CPU = instance 1)"
            if cross
            else ""
        ),
        f"{'server':<64} | {'deliveries/s':>12} | {'msgs/rnd':>8} | {'frame':>5} | "
        f"{'lost':>5} | {'server CPU':>10} | "
        + (f"{'n1 CPU':>6} | " if cross else "")
        + f"{'client CPU':>10} | "
        + ("" if cross else f"{'roost/x':>7} | ")
        + f"{'roost+Redis/x':>13}",
    ]
    rat = res["ratios"]
    for r in res["systems"]:
        if r["status"] != "ok":
            lines.append(f"{r['label']:<64} | skipped: {r['reason']}")
            continue
        cells = []
        for ours in ("roost", "roost-redis"):
            x = rat.get(ours, {}).get(r["system"])
            cells.append("-" if x is None else f"{x['ratio']:.2f}")
        cpu = r["cpu"]
        lines.append(
            f"{r['label']:<64} | {r['median']:>12,.0f} | {r['messages_per_round']:>8} | "
            f"{r['frame_bytes']:>5} | {r['lost']:>5} | {cpu.get('server', 0):>10.0%} | "
            + (f"{cpu.get('server n1', 0):>6.0%} | " if cross else "")
            + f"{cpu.get('bench client', 0):>10.0%} | "
            + ("" if cross else f"{cells[0]:>7} | ")
            + f"{cells[1]:>13}"
        )
    for ours in ("roost", "roost-redis"):
        row = rat.get(ours, {})
        parts = [
            f"{k} {v['ratio']:.2f} x (>= {v['target']:g}: {'met' if v['met'] else 'MISSED'})"
            for k, v in row.items()
            if "target" in v
        ]
        if parts and not cross:  # the targets are scenario 1's (one node)
            lines.append(f"targets, {ours}: " + "; ".join(parts))
    timed = [r for r in res["systems"] if r["status"] == "ok" and r.get("latency")]
    if timed:
        lat0 = timed[0]["latency"]
        lines.append(
            f"latency at {lat0['rate']:g} msg/s for {lat0['duration_s']:g} s, "
            f"{lat0['subscribers']} subscribers: send stamp -> the message at every subscriber "
            "(and at the first), ms"
        )
        for r in timed:
            lat = r["latency"]
            a, f = lat["all_subscribers_ms"], lat["first_subscriber_ms"]
            lines.append(
                f"{r['label']:<64} | all p50 {_ms(a['p50']):>8} p90 {_ms(a['p90']):>8} "
                f"max {_ms(a['max']):>8} | first p50 {_ms(f['p50']):>8} | lost {lat['lost']}"
            )
    return lines


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def plot(res: dict[str, Any], path: Path) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    ok = [r for r in res["systems"] if r["status"] == "ok"]
    if not ok:
        return False
    ok.sort(key=lambda r: r["median"])
    fig, ax = plt.subplots(figsize=(11, 0.55 * len(ok) + 1.6))
    colors = [
        "tab:orange" if r["system"].startswith("roost") else
        "tab:gray" if r["system"] == "raw" else "tab:blue"
        for r in ok
    ]  # fmt: skip
    bars = ax.barh([r["label"] for r in ok], [r["median"] for r in ok], color=colors)
    top = max(r["median"] for r in ok)
    for b, r in zip(bars, ok, strict=True):
        errs = r["rates"]
        ax.annotate(
            f" {r['median']:,.0f}/s  ({min(errs):,.0f}-{max(errs):,.0f})",
            (b.get_width(), b.get_y() + b.get_height() / 2),
            va="center",
            fontsize=8,
        )
    ax.set_xlim(0, top * 1.5)
    ax.set_xlabel("deliveries/s (median of rounds; range in brackets)")
    cross = res["config"].get("cross_node")
    where = "\ntwo instances on one Redis: trigger on 1, subscribers on 2" if cross else ""
    ax.set_title(
        f"fan-out to {res['config']['clients']} subscribers in one room, same clients{where}"
    )
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    timed = [r for r in ok if r.get("latency") and r["latency"]["all_subscribers_ms"]["p50"]]
    if timed:
        plot_latency(res, timed, path.with_name(path.stem + "-latency.png"))
    return True


def plot_latency(res: dict[str, Any], timed: list[dict[str, Any]], path: Path) -> None:
    """Bars: the time until every subscriber had a message (p50, and the worst)."""
    plt = pyplot()
    assert plt is not None
    timed = sorted(timed, key=lambda r: -r["latency"]["all_subscribers_ms"]["p50"])
    fig, ax = plt.subplots(figsize=(11, 0.55 * len(timed) + 1.6))
    labels = [r["label"] for r in timed]
    p50 = [r["latency"]["all_subscribers_ms"]["p50"] for r in timed]
    worst = [r["latency"]["all_subscribers_ms"]["max"] for r in timed]
    colors = ["tab:orange" if r["system"].startswith("roost") else "tab:blue" for r in timed]
    ax.barh(labels, worst, color="lightgray", label="max")
    ax.barh(labels, p50, color=colors, label="p50")
    for y, (a, w) in enumerate(zip(p50, worst, strict=True)):
        ax.annotate(f" {a:.2f} ms (max {w:.1f})", (w, y), va="center", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(min(p50) / 2, max(worst) * 8)
    lat = timed[0]["latency"]
    cross = "two instances on one Redis, " if res["config"].get("cross_node") else ""
    ax.set_xlabel("ms from the send stamp until every subscriber had the message (log)")
    ax.set_title(
        f"latency at {lat['rate']:g} msg/s, {lat['subscribers']} subscribers\n"
        f"({cross}{lat['sent']} stamped messages)"
    )
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(True, axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
