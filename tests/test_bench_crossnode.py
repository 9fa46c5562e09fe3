"""`roost-bench crossnode` runs end to end at tiny sizes (no timing is asserted)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server not installed"
)


def test_crossnode_bench_runs(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "roost_bench", "crossnode", "--rates", "200",
         "--duration", "1", "--subscribers", "5", "--rounds", "1",
         "--saturation-messages", "300", "--timeout", "100", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=150,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "p99 ratio" in out.stdout and "saturation:" in out.stdout
    result = json.loads((tmp_path / "crossnode.json").read_text())
    assert set(result) == {"config", "rates", "saturation"}
    assert result["config"]["subscribers"] == 5
    (row,) = result["rates"]
    assert row["rate"] == 200
    assert {"roost", "redis", "p99_ratio", "rounds"} <= set(row)
    for side in ("roost", "redis"):
        assert {"p50_ms", "p99_ms", "p999_ms"} <= set(row[side]["latency"])
        assert row[side]["latency"]["samples"] == 200
        assert row[side]["lost"] == 0
    assert row["roost"]["subscribers"] == 6  # 5 counting clients + the probe
    assert row["roost"]["delivered"] == 200 * 6
    assert row["roost"]["deliveries_per_s"] > 0
    sat = result["saturation"]
    assert sat["roost"]["lost"] == 0 and sat["redis"]["lost"] == 0
    assert sat["roost"]["delivered"] == 300 * 6
    assert sat["roost"]["messages_per_s"] > 0 and sat["redis"]["messages_per_s"] > 0
