"""The rooms, connections and workers benchmarks run end to end (tiny sizes; no timing asserted).

The peers scenario runs in test_bench_all.py (which installs the peers).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def _bench(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [sys.executable, "-m", "roost_bench", *args, "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return out


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_rooms_bench_runs(tmp_path: Path) -> None:
    out = _bench(
        tmp_path, "rooms", "--rooms", "20", "--members", "3", "--messages", "5", "--rounds", "1"
    )
    assert "deliveries/s" in out.stdout
    res = json.loads((tmp_path / "rooms.json").read_text())
    assert set(res["modes"]) == {"global", "topic"}
    for mode in res["modes"].values():
        assert mode["summary"]["lost"] == 0
        assert mode["members"] == 60
    # topic mode: each node gets the messages of its rooms only (12 of 20 rooms here)
    for node in ("n1", "n2"):
        share = res["modes"]["topic"]["summary"]["nodes"][node]["share_received"]
        assert share is not None and 0.45 < share < 0.75, share


def test_connections_bench_runs(tmp_path: Path) -> None:
    out = _bench(tmp_path, "connections", "--clients", "200", "--rest", "0.5")
    assert "RSS per connection" in out.stdout
    res = json.loads((tmp_path / "connections.json").read_text())
    assert res["clients"] == 200
    assert res["node_metrics"].get("roost_channels_joined") == 200
    assert res["kib_per_connection_joined"] > 0
    assert res["joins_per_s"] > 0


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_workers_bench_runs(tmp_path: Path) -> None:
    out = _bench(
        tmp_path, "workers", "--clients", "300", "--client-procs", "2", "--rest", "0.5",
        "--heartbeat", "5", "--storm-timeout", "60",
    )  # fmt: skip
    assert "RSS per connection" in out.stdout and "storm:" in out.stdout
    res = json.loads((tmp_path / "workers.json").read_text())
    assert res["clients"] == 300
    assert res["metrics_channels_joined"] == 300
    assert sum(res["split"].values()) == 300 and set(res["split"]) <= {"w1", "w2"}
    assert res["heartbeats_sent"] > 0
    storm = res["storm"]
    assert storm["lost"] == storm["clients_on_victim"] == res["split"].get("w1", 0)
    assert storm["rejoined_all"] and sum(storm["split_after"].values()) == 300
    assert storm["worker_ready_s"] is not None
    assert (tmp_path / "workers.png").exists()


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_workers_fanout_bench_runs(tmp_path: Path) -> None:
    out = _bench(
        tmp_path, "workers-fanout", "--subscribers", "60", "--messages", "50", "--rounds", "1",
        "--rate", "100", "--paced-seconds", "0.5", "--raw",
    )  # fmt: skip
    assert "2 workers / 1" in out.stdout
    res = json.loads((tmp_path / "workers-fanout.json").read_text())
    assert set(res["configs"]) == {"raw", "w1", "w2"}
    for c in res["configs"].values():
        assert sum(c["split"].values()) == 60
        for phase in ("burst", "paced"):
            if phase in c:
                assert c[phase]["lost"] == 0
                assert c[phase]["deliveries_per_s"] > 0, c[phase]
    assert set(res["ratios"]) == {"burst", "paced"}


@pytest.mark.parametrize(
    "args",
    [
        ["peers", "--latency-rate", "0"],
        ["peers", "--latency-seconds", "-1"],
        ["peers", "--only", "nosuchpeer"],
        ["connections", "--clients", "-5"],
        ["all", "--timeout", "soon"],
    ],
)
def test_bench_options_refuse_bad_values(args: list[str]) -> None:
    """A bad option is a usage error (exit 2, the option named), before anything starts."""
    from click.testing import CliRunner

    from roost_bench.commands import bench

    result = CliRunner().invoke(bench, args)
    assert result.exit_code == 2, result.output
    assert "Error" in result.output
