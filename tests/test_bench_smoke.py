"""The benchmark harness runs end to end (tiny sizes; no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_fanout_bench_runs(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "roost_bench", "fanout"]
        + ["--clients", "20", "--messages", "5", "--rounds", "1", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "roost/raw" in out.stdout
    rows = json.loads((tmp_path / "fanout.json").read_text())
    assert rows[0]["roost"]["clients"] == 20
    assert rows[0]["ratio"] > 0


def test_cluster_bench_runs(tmp_path: Path) -> None:
    """Issue 16: 1- and 3-master clusters, rooms spread over the masters, ratios reported."""
    out = subprocess.run(
        [sys.executable, "-m", "roost_bench", "cluster", "--rooms", "6", "--members", "2"]
        + ["--rate", "200", "--duration", "0.5", "--saturation-messages", "300"]
        + ["--timeout", "90", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "3-master / 1-master" in out.stdout
    data = json.loads((tmp_path / "cluster.json").read_text())
    one, three = data["topologies"]
    assert (one["masters"], three["masters"]) == (1, 3)
    assert three["rooms_per_master"] == [2, 2, 2]
    for topo in (one, three):
        for phase in ("paced", "saturation"):
            p = topo[phase]
            assert p["sent"] > 0 and p["delivered"] == p["expected"] == p["sent"] * 2
            assert len(p["spublish_per_s"]) == topo["masters"]
            assert sum(p["spublish_calls"]) >= p["sent"]  # every broadcast went through SPUBLISH
    # each of the three masters carried its rooms' share, none of the others'
    assert all(c > 0 for c in three["saturation"]["spublish_calls"])
    assert data["ratios"]["saturation"]["deliveries_per_s"] > 0


def test_benchmarks_are_not_in_the_server_package() -> None:
    """Issue 13: the bench is its own package (bench/, roost_bench); `roost` has no trace."""
    import importlib.util

    from click.testing import CliRunner

    from roost.cli import main
    from roost_bench.peersystems import default_peers_dir

    assert importlib.util.find_spec("roost.bench") is None
    assert "bench" not in main.commands
    result = CliRunner().invoke(main, ["serve", "--bench"])
    assert result.exit_code == 2 and "No such option" in result.output
    assert (default_peers_dir() / "requirements.txt").is_file()
