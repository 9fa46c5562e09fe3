"""The benchmark harness runs end to end (tiny sizes; no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_fanout_bench_runs(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "roost", "bench", "fanout"]
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
