"""roost.js's reconnect and rejoin schedules (issue 27), run in node (tests/js/backoff.mjs).

- the schedules of 1,000 simulated clients, roost.js's beside phoenix.js 1.8's: phoenix.js
  brings every client back at the same instant, roost.js spreads them over the window;
- a long-poll open refused as roost refuses it (body status 500, Retry-After: 5): the next
  reconnect waits 5 s plus the jittered delay;
- 20 roost.js Sockets on a real node that is killed and started again: their first retries
  are spread out (phoenix.js: all at 10 ms), and all of them come back and rejoin.
"""

from __future__ import annotations

import json
import shutil
import signal
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support import ServerProcess, start_server

JS_DIR = Path(__file__).parent / "js"
SCRIPT = JS_DIR / "backoff.mjs"


@pytest.fixture(scope="module")
def node() -> str:
    path = shutil.which("node")
    if path is None:
        pytest.skip("node is not installed")
    if not (JS_DIR / "node_modules" / "phoenix" / "package.json").is_file():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("npm is not installed and tests/js/node_modules is missing")
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=JS_DIR, check=True, timeout=300)
    return path


def test_schedules_spread_where_phoenix_js_does_not(node: str) -> None:
    proc = subprocess.run(
        [node, str(SCRIPT), "schedules"], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    for kind, first_ms, window in (("reconnect", 10, 950), ("rejoin", 1000, 1750)):
        ours, theirs = out[kind]["roost"], out[kind]["phoenix"]
        # phoenix.js: 1,000 clients, one instant
        assert theirs["min"] == theirs["max"] == first_ms
        assert theirs["spread"] == 0 and theirs["peak10ms"] == 1000
        # roost.js: the middle 80% cover ~80% of the first window
        assert ours["spread"] >= 0.7 * window
        assert ours["p90"] / ours["p10"] >= 4
        assert ours["peak10ms"] <= 40  # of 1,000 in the busiest 10 ms
    assert out["reconnect"]["roost"]["spread"] / 10 >= 70  # vs phoenix.js's fixed 10 ms
    assert out["reconnectMathRandom"]["spread"] >= 0.7 * 950
    assert out["reconnectCeilings"] == [1000, 2000, 4000, 8000, 16000, 30000, 30000]
    assert out["rejoinCeilings"] == [2000, 4000, 8000, 16000, 30000]
    assert out["parsed"] == [5000, None, None]
    assert out["longpollRefusal"] == {"fetches": 1, "retryAfterMs": 5000, "nextDelay": 5050}


@pytest.fixture
def restartable(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    servers = [start_server(node="n1", log_dir=tmp_path)]
    yield servers
    for srv in servers:
        srv.stop()


def test_sockets_come_back_spread_after_a_node_restart(
    node: str, restartable: list[ServerProcess], tmp_path: Path
) -> None:
    srv = restartable[0]
    proc = subprocess.Popen(
        [node, str(SCRIPT), "restart", srv.ws_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline()
        assert json.loads(ready or "{}") == {"ready": True}, proc.stderr and proc.stderr.read()
        srv.stop(signal.SIGKILL)
        time.sleep(1.5)  # down for longer than the first window: every first retry fails
        restartable.append(start_server(port=srv.port, node="n2", log_dir=tmp_path))
        line = proc.stdout.readline()
        assert proc.wait(60) == 0, proc.stderr and proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    clients: list[dict[str, Any]] = json.loads(line)["clients"]
    assert len(clients) == 20
    assert all(c["node"] == "n2" and c["opens"] == 2 for c in clients)
    first = [c["retries"][0] for c in clients]
    # the first retry: 50 ms .. 1 s after the close (plus timer slack), and spread over it
    # (phoenix.js: all 20 at 10 ms)
    assert all(40 <= t <= 1200 for t in first), first
    assert max(first) - min(first) >= 300, first
    assert statistics.pstdev(first) >= 100, first
    # later retries: each within its window (2 s, 4 s ...) of the one before
    for c in clients:
        gaps = [b - a for a, b in zip(c["retries"], c["retries"][1:], strict=False)]
        for n, gap in enumerate(gaps, start=2):
            assert gap <= 1000 * 2 ** (n - 1) + 1500, c["retries"]  # (+ a failed attempt's time)
