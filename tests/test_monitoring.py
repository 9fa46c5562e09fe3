"""The monitoring kit in deploy/monitoring: checked by Prometheus's own promtool, and every
series it names exists on a real node (a two-worker group on a real Redis)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from support import ROOT, start_server, wait_http

KIT = ROOT / "deploy" / "monitoring"
NAME = re.compile(r"\broost_[a-z_]+")


def promtool(*args: str, cwd: Path = KIT) -> str:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool not found: scripts/test installs Debian's prometheus package")
    done = subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def dashboard_exprs() -> list[str]:
    dash = json.loads((KIT / "grafana-dashboard.json").read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def test_config_and_rules_pass_promtool() -> None:
    assert "SUCCESS" in promtool("check", "config", "prometheus.yml")
    assert "10 rules found" in promtool("check", "rules", "alerts.yaml")


def test_alerts_fire_on_their_unit_tests() -> None:
    assert "SUCCESS" in promtool("test", "rules", "alerts.test.yaml")


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses each panel query as a recording rule (Grafana's variables filled in)."""
    exprs = dashboard_exprs()
    assert len(exprs) >= 25
    rules = [
        {
            "record": f"roost:panel_{i}",
            "expr": e.replace("$__rate_interval", "5m").replace("$node", ".*"),
        }
        for i, e in enumerate(exprs)
    ]
    path = tmp_path / "panels.yaml"
    path.write_text(json.dumps({"groups": [{"name": "panels", "rules": rules}]}))
    assert f"{len(rules)} rules found" in promtool("check", "rules", str(path), cwd=tmp_path)


def test_every_series_named_exists_on_a_real_node(redis_server: Any) -> None:
    server = start_server("--workers", "2", "--redis", redis_server.url, node="mon")
    try:
        wait_http(f"{server.url}/readyz", proc=server.proc)
        with urllib.request.urlopen(f"{server.url}/metrics", timeout=5) as resp:
            exposed = {  # the name of every sample
                re.split(r"[{ ]", line, maxsplit=1)[0]
                for line in resp.read().decode().splitlines()
                if line and not line.startswith("#")
            }
    finally:
        server.stop()
    texts = "\n".join(dashboard_exprs()) + (KIT / "alerts.yaml").read_text()
    named = set(NAME.findall(texts))
    assert named, "no roost series named"
    missing = sorted(named - exposed)
    assert not missing, f"named in deploy/monitoring but not exposed by roost: {missing}"
