"""The ``workers`` scenario's table and plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .harness import pyplot


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


def _group(cpu: dict[str, float | None]) -> tuple[float, float]:
    """(workers, load clients) shares of a core, summed."""
    workers = sum(v or 0 for k, v in cpu.items() if k.startswith("w"))
    clients = sum(v or 0 for k, v in cpu.items() if k.startswith("clients") or k == "bench client")
    return workers, clients


def _cpu_line(label: str, cpu: dict[str, float | None]) -> str:
    w, c = _group(cpu)
    each = ", ".join(f"{k} {_pct(v)}" for k, v in cpu.items() if k.startswith("w"))
    extra = ""
    if "supervisor" in cpu:
        extra += f", supervisor {_pct(cpu['supervisor'])}"
    return (
        f"{label}: workers {w:.1%} of a core ({each}){extra}, redis {_pct(cpu.get('redis'))}, "
        f"load clients {c:.1%}"
    )


def table(res: dict[str, Any]) -> list[str]:
    cfg = res["config"]
    cpu = res["cpu"]
    n = res["clients"]
    split = ", ".join(f"{w} {c:,} ({c / n:.1%})" for w, c in res["split"].items())
    lines = [
        f"workers: {n:,} joined idle clients on roost serve --workers {cfg['workers']} "
        f"({res['rooms']:,} rooms {cfg['channel']}:* of {cfg['room_size']}; "
        f"{cfg['client_procs']} client processes sharing the {res['machine']['cores']} cores)",
        cfg["fd"],
        f"split by the kernel (SO_REUSEPORT): {split}",
        f"RSS per connection (sum of the workers' VmRSS deltas / clients): "
        f"{res['kib_per_connection_upgraded']:,.1f} KiB upgraded, "
        f"{res['kib_per_connection_joined']:,.1f} KiB joined; per worker: "
        + ", ".join(
            f"{w} {p['kib_per_connection']:,.1f} KiB x {p['clients']:,}"
            for w, p in res["per_worker"].items()
            if p["kib_per_connection"] is not None
        ),
        f"client processes' RSS: {sum(res.get('rss_kib_client_procs', {}).values()) / 1024:,.0f} "
        f"MiB for {n:,} clients",
        f"connect: {res['connects_per_s']:,.0f} upgrades/s ({res['connect_failed_attempts']} "
        f"failed attempts); join: {res['joins_per_s']:,.0f} joins/s "
        + (
            f"({res['join_failures']:,} joins failed and were tried again as phoenix.js does: "
            f"{_reasons(res['join_failure_reasons'])}; every client joined)"
            if res.get("join_failures")
            else "(every reply ok)"
        ),
        f"group /metrics counts {res['metrics_channels_joined']:,.0f} channels joined "
        f"({'= clients' if res['metrics_match'] else 'MISMATCH: clients ' + f'{n:,}'})",
        _cpu_line(f"CPU at rest over {cfg['rest_s']:g} s", cpu["rest"]),
    ]
    if cpu["heartbeat"]:
        lines.append(
            _cpu_line(
                f"CPU with heartbeats every {cfg['heartbeat_s']:g} s per client "
                f"({res['heartbeats_sent']:,} sent)",
                cpu["heartbeat"],
            )
        )
    st = res.get("storm")
    if st:
        after = ", ".join(f"{w} {c:,}" for w, c in st["split_after"].items())
        done = f"{st['rejoin_s']:.2f} s" if st["rejoin_s"] is not None else "NOT ALL (timed out)"
        lines += [
            f"storm: SIGKILL {st['victim']} with {st['clients_on_victim']:,} clients; "
            f"{st['lost']:,} saw their connection end; every client joined again after {done}",
            f"  worker started again after {_s(st['worker_started_s'])}, ready after "
            f"{_s(st['worker_ready_s'])} (supervisor log); /readyz 200 again "
            f"{_s(st['group_ready_after_s'])} after the last rejoin",
            f"  reconnect attempts: {st['attempts']:,}, failed {st['failed_connects']:,}; "
            f"joins failed {st['failed_joins']:,}"
            + (f" ({_reasons(st['failure_reasons'])})" if st.get("failure_reasons") else ""),
            f"  split after the storm: {after}",
        ]
        bal = st.get("balance")
        if bal:
            end = ", ".join(f"{w} {c:,}" for w, c in bal["split_end"].items())
            when = _s(bal["balanced_s"]) if bal["balanced_s"] is not None else "NOT within"
            step = max(1, len(bal["timeline"]) // 12)
            over = "; ".join(
                f"{t:g}s " + "/".join(f"{c:,}" for c in sp.values())
                for t, sp in bal["timeline"][::step]
            )
            lines += [
                f"balance: within {bal['tolerance']:.0%} of the mean {when} after the kill, "
                f"{bal['closes']:,} sockets closed for it (1012); split at the end: {end}",
                f"  split over time (s after the kill): {over}",
            ]
    return lines


def _reasons(r: dict[str, int]) -> str:
    return ", ".join(f"{k} x {v:,}" for k, v in sorted(r.items(), key=lambda kv: -kv[1]))


def _s(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f} s"


def plot(res: dict[str, Any], path: Path) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    st = res.get("storm")
    fig, axes = plt.subplots(1, 3 if st else 2, figsize=(15 if st else 10, 4.2))
    ax1, ax2 = axes[0], axes[1]
    workers = list(res["per_worker"])
    per = [res["per_worker"][w]["kib_per_connection"] or 0 for w in workers]
    bars = ax1.bar([*workers, "all"], [*per, res["kib_per_connection_joined"]], color="tab:blue")
    for b in bars:
        v = b.get_height()
        ax1.annotate(f"{v:.1f}", (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom")
    ax1.set_ylabel("KiB RSS per joined connection")
    split = "/".join(f"{res['split'].get(w, 0):,}" for w in workers)
    ax1.set_title(
        f"{res['clients']:,} clients, split {split}"
        if len(workers) <= 3
        else f"{res['clients']:,} clients over {len(workers)} workers"
    )
    ax1.grid(True, axis="y", alpha=0.3)
    phases = ["rest", "heartbeat"] if res["cpu"]["heartbeat"] else ["rest"]
    shares = [_group(res["cpu"][p]) for p in phases]
    xs = range(len(phases))
    ax2.bar([x - 0.2 for x in xs], [s[0] for s in shares], width=0.4, label="workers")
    ax2.bar([x + 0.2 for x in xs], [s[1] for s in shares], width=0.4, label="load clients")
    ax2.set_xticks(list(xs), phases)
    ax2.set_ylabel("share of one core")
    ax2.set_title(f"CPU: {res['joins_per_s']:,.0f} joins/s, {res['connects_per_s']:,.0f} upg/s")
    ax2.legend(fontsize=8)
    ax2.grid(True, axis="y", alpha=0.3)
    if st:
        ax3 = axes[2]
        ts = [t for t, _ in st["timeline"]]
        ax3.plot(ts, [j for _, j in st["timeline"]], color="tab:orange")
        if st["worker_ready_s"] is not None:
            ax3.axvline(st["worker_ready_s"], color="gray", ls="--", label="worker ready")
        ax3.set_xlabel("s after SIGKILL")
        ax3.set_ylabel("clients joined")
        ax3.set_title(f"storm: all rejoined after {_s(st['rejoin_s'])}")
        ax3.legend(fontsize=8)
        ax3.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# -- workers-fanout ------------------------------------------------------------------------


def fanout_table(res: dict[str, Any]) -> list[str]:
    cfg = res["config"]
    lines = [
        f"workers-fanout: {cfg['subscribers']:,} subscribers of one room; messages published "
        f"into Redis: burst {cfg['messages_per_round']:,} a round as fast as they go, paced "
        f"{cfg['paced_messages']:,} at {cfg['paced_rate']:g}/s; median of {cfg['rounds']} rounds",
        f"the load processes (sinks, publisher, bench) share the {res['machine']['cores']} "
        "cores with the server; their CPU is the 'load' column",
        f"{'':34} {'deliveries/s':>13}  CPU-s per 1M deliveries: "
        f"{'server':>6} {'superv.':>7} {'redis':>6} {'load':>6}  split",
    ]
    for c in res["configs"].values():
        split = "/".join(f"{v:,}" for v in c["split"].values())
        for phase in ("burst", "paced"):
            if phase not in c:
                continue
            p = c[phase]
            cpu = p["cpu_s_per_m"]
            label = f"{c['label']}, {phase}"
            lines.append(
                f"{label:34} {p['deliveries_per_s']:>13,.0f}  {'':24}"
                f"{cpu['server']:>6.2f} {cpu['supervisor']:>7.2f} {cpu['redis']:>6.2f} "
                f"{cpu['load']:>6.2f}  {split}" + (f"  LOST {p['lost']:,}" if p["lost"] else "")
            )
            per = p.get("server_per_delivery")
            if per:
                lines.append(
                    f"{'':36}server per delivery: {per['writes']:.3f} write syscalls, "
                    f"{per['user_us']:.2f} µs user + {per['sys_us']:.2f} µs system"
                )
    for phase, r in (res.get("ratios") or {}).items():
        lines.append(
            f"2 workers / 1, {phase}: deliveries/s x {_x(r['deliveries_per_s_2_over_1'])}, "
            f"server CPU-s per 1M deliveries x {_x(r['server_cpu_s_per_m_2_over_1'])}"
        )
    return lines


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def fanout_plot(res: dict[str, Any], path: Path) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    rows = [
        (f"{c['label'].replace('roost serve ', '')}\n{phase}", c[phase])
        for c in res["configs"].values()
        for phase in ("burst", "paced")
        if phase in c
    ]
    labels = [r[0] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.6))
    bars = ax1.bar(labels, [r[1]["deliveries_per_s"] for r in rows], color="tab:orange")
    for b, (_, p) in zip(bars, rows, strict=True):
        ax1.annotate(f"{p['deliveries_per_s'] / 1e6:.2f} M", (b.get_x() + b.get_width() / 2,
                     b.get_height()), ha="center", va="bottom", fontsize=8)  # fmt: skip
    ax1.set_ylabel("deliveries/s (median)")
    ax1.set_title(f"{res['config']['subscribers']:,} subscribers, one room")
    ax1.tick_params(axis="x", labelsize=7)
    ax1.grid(True, axis="y", alpha=0.3)
    bottom = [0.0] * len(rows)
    for key, color in (("server", "tab:orange"), ("supervisor", "tab:purple"),
                       ("redis", "tab:red"), ("load", "tab:gray")):  # fmt: skip
        vals = [r[1]["cpu_s_per_m"][key] for r in rows]
        ax2.bar(labels, vals, bottom=bottom, label=key, color=color)
        bottom = [a + b for a, b in zip(bottom, vals, strict=True)]
    ax2.set_ylabel("CPU-seconds per 1M deliveries")
    ax2.set_title("CPU per delivery (the load shares the cores)")
    ax2.tick_params(axis="x", labelsize=7)
    ax2.legend(fontsize=8)
    ax2.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
