"""The ``rooms`` scenario's table and chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .harness import (
    pyplot,
)
from .rooms import NODES


def _n(v: float | None, fmt: str = ",.0f") -> str:
    return "-" if v is None else format(v, fmt)


def table(res: dict[str, Any]) -> list[str]:
    cfg = res["config"]
    lines = [
        f"rooms: {cfg['rooms']} rooms x {cfg['members_per_room']} members over 2 nodes "
        f"({cfg['rooms_on_both_nodes']} rooms on both, the rest on one), "
        f"{cfg['messages_per_room_per_round']} msgs/room/round, median of {cfg['rounds']} rounds",
        f"{'mode':>6} | {'deliveries/s':>12} | {'lost':>5} | "
        f"{'n1 Redis bytes':>14} {'n1 msgs':>8} {'share':>6} | "
        f"{'n2 Redis bytes':>14} {'n2 msgs':>8} {'share':>6} | cpu n1/n2/redis/client",
    ]
    for mode, m in res["modes"].items():
        s = m["summary"]
        cells = []
        for name in NODES:
            nd = s["nodes"][name]
            cells.append(
                f"{_n(nd['subscriber_bytes']):>14} {_n(nd['messages_received_est']):>8} "
                f"{_n(nd['share_received'], '.3f'):>6}"
            )
        cpu = s["cpu"]
        cpu_s = "/".join(_n(cpu.get(k), ".0%") for k in ("n1", "n2", "redis", "bench client"))
        lines.append(
            f"{mode:>6} | {_n(s['deliveries_per_s']):>12} | {s['lost']:>5} | "
            + " | ".join(cells)
            + f" | {cpu_s}"
        )
    cmp_ = res.get("comparison") or {}
    for name in NODES:
        c = cmp_.get(name)
        if not c:
            continue
        lines.append(
            f"{name}: topic mode received {_n(c['share_received_topic'], '.3f')} of all messages "
            f"(its rooms: {_n(c['share_expected'], '.3f')}; global mode "
            f"{_n(c['share_received_global'], '.3f')}); bytes topic/global "
            f"{_n(c['bytes_topic_over_global'], '.3f')} -> target "
            f"{'met' if c['target_met'] else 'MISSED'}"
        )
    if cmp_.get("throughput_topic_over_global"):
        lines.append(f"throughput topic/global: {cmp_['throughput_topic_over_global']:.2f}")
    return lines


def plot(res: dict[str, Any], path: Path) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    modes = list(res["modes"])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.35
    top = 0.0
    for j, mode in enumerate(modes):
        s = res["modes"][mode]["summary"]
        ys = [s["nodes"][n]["messages_received_est"] or 0 for n in NODES]
        top = max(top, *ys)
        xs = [i + (j - 0.5) * width for i in range(len(NODES))]
        bars = ax1.bar(xs, ys, width, label=f"{mode} mode")
        for b, n in zip(bars, NODES, strict=True):
            nd = s["nodes"][n]
            share, nbytes = nd["share_received"], nd["subscriber_bytes"]
            if share is not None:
                ax1.annotate(
                    f"{share:.0%}\n{(nbytes or 0) / 1e6:.2f} MB",
                    (b.get_x() + b.get_width() / 2, b.get_height()),
                    ha="center",
                    va="bottom",
                    fontsize=8,
                )
    any_mode = res["modes"][modes[0]]["summary"]["nodes"]
    for i, n in enumerate(NODES):
        ax1.hlines(
            any_mode[n]["messages_for_local_rooms"], i - width, i + width, colors="black",
            linestyles="dotted", label="messages of its rooms" if i == 0 else None,
        )  # fmt: skip
    ax1.set_ylim(0, top * 1.3)
    ax1.set_xticks(range(len(NODES)))
    ax1.set_xticklabels(NODES)
    ax1.set_ylabel("messages received from Redis per round")
    ax1.set_title("per node: messages (and bytes) from Redis")
    ax1.legend(fontsize=8, loc="upper center", ncol=3)
    ax1.grid(True, axis="y", alpha=0.3)
    rates = [res["modes"][m]["summary"]["deliveries_per_s"] or 0 for m in modes]
    bars = ax2.bar(modes, rates, color=["tab:blue", "tab:orange"][: len(modes)])
    for b, r in zip(bars, rates, strict=True):
        ax2.annotate(f"{r:,.0f}/s", (b.get_x() + b.get_width() / 2, r), ha="center", va="bottom")
    cfg = res["config"]
    ax2.set_ylabel("deliveries/s")
    ax2.set_title(f"throughput, {cfg['rooms']} rooms x {cfg['members_per_room']} members")
    ax2.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
