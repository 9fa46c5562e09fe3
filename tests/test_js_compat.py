"""Compatibility tests against the real, official ``phoenix`` npm client.

Each test runs one node script from ``tests/js`` (phoenix 1.8.x speaking V2, or
phoenix 1.2.x speaking V1) against a running roost server. A script prints one
JSON line and exits 0 on success; on failure it exits non-zero and writes the
reason plus a trace of every WebSocket frame to stderr, which ends up in the
assertion message here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

JS_DIR = Path(__file__).parent / "js"
NODE = shutil.which("node")
NPM = shutil.which("npm")
# the node scripts stop themselves after ~15 s; this is only a backstop
SCRIPT_TIMEOUT_S = 40
CLIENTS = ["1.8", "1.2"]
EXPECTED_VERSION_PREFIX = {"1.8": "1.8.", "1.2": "1.2."}
EXPECTED_VSN = {"1.8": "2.0.0", "1.2": "1.0.0"}


def _deps_installed() -> bool:
    modules = JS_DIR / "node_modules"
    return all(
        (modules / name / "package.json").is_file() for name in ("phoenix", "phoenix12", "ws")
    )


@pytest.fixture(scope="session")
def node_client() -> str:
    """Path to node, with tests/js dependencies installed (``npm ci`` on first use)."""
    if NODE is None:
        pytest.skip("node is not installed")
    if not _deps_installed():
        if NPM is None:
            pytest.skip("npm is not installed and tests/js/node_modules is missing")
        proc = subprocess.run(
            [NPM, "ci", "--no-audit", "--no-fund"],
            cwd=JS_DIR,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if proc.returncode != 0 or not _deps_installed():
            pytest.fail(f"npm ci in {JS_DIR} failed:\n{proc.stdout}\n{proc.stderr}")
    return NODE


def run_js(node: str, script: str, url: str, client: str) -> dict[str, Any]:
    cmd = [node, str(JS_DIR / script), url, client]
    try:
        proc = subprocess.run(
            cmd,
            cwd=JS_DIR,
            capture_output=True,
            text=True,
            timeout=SCRIPT_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(
            f"{' '.join(cmd)} hung for {SCRIPT_TIMEOUT_S} s\n"
            f"stdout:\n{e.stdout!r}\nstderr:\n{e.stderr!r}"
        )
    detail = (
        f"{' '.join(cmd)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    )
    assert proc.returncode == 0, detail
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert lines, detail
    result: dict[str, Any] = json.loads(lines[-1])
    assert result.get("ok") is True, detail
    assert result["client"] == client
    assert result["version"].startswith(EXPECTED_VERSION_PREFIX[client]), result["version"]
    assert result["vsn"] == EXPECTED_VSN[client]
    return result


def test_js_dependencies_pinned() -> None:
    """phoenix 1.8.x, phoenix12 -> phoenix@1.2.x and ws are pinned to exact versions."""
    deps = json.loads((JS_DIR / "package.json").read_text())["dependencies"]
    assert deps["phoenix"].startswith("1.8.")
    assert deps["phoenix12"].startswith("npm:phoenix@1.2.")
    for name, spec in deps.items():
        version = spec.rsplit("@", 1)[-1]
        assert version[:1].isdigit() and not any(c in version for c in "^~<>=* "), (name, spec)
    assert (JS_DIR / "package-lock.json").is_file()


@pytest.mark.parametrize("client", CLIENTS)
def test_chat_flow(roost_server: Any, node_client: str, client: str) -> None:
    r = run_js(node_client, "chat.mjs", roost_server.ws_url, client)
    assert isinstance(r["node"], str) and r["node"]
    assert r["join_response"]["history"] == []
    assert r["msg_id"] not in (None, "")
    for received in (r["broadcast"], r["bob_received"]):
        assert received["body"] == "hello"
        assert received["user"] == "alice"
        assert str(received["id"]) == str(r["msg_id"])
        assert received["at"]
        assert received["node"]
    assert r["validation"] == {
        "empty": {"reason": "empty body"},
        "too_long": {"reason": "body too long"},
    }
    assert r["join_errors"] == {
        "unmatched": {"reason": "unmatched topic"},
        "invalid_room": {"reason": "invalid room"},
    }
    assert r["phx_close"]["topic"] == r["topic"]
    assert r["channel_close_count"] >= 1


@pytest.mark.parametrize("client", CLIENTS)
def test_heartbeat_survives(roost_server: Any, node_client: str, client: str) -> None:
    r = run_js(node_client, "heartbeat.mjs", roost_server.ws_url, client)
    assert r["heartbeat_interval_ms"] == 500
    assert r["elapsed_ms"] >= 2900
    assert r["opens"] == 1
    assert r["closes"] == 0
    assert r["errors"] == 0
    assert r["heartbeat_replies"] >= 3


def test_binary_push_reply(roost_server: Any, node_client: str) -> None:
    r = run_js(node_client, "binary.mjs", roost_server.ws_url, "1.8")
    assert r["topic"].startswith("echo:")
    assert [c["bytes"] for c in r["binary"]] == [9, 1, 1000, 60000]
    assert r["oversize"]["close_code"] == 1009
    assert r["oversize"]["reconnected"] is True
    assert r["echo"] == {
        "a": 1,
        "s": "h\u00e9llo \u2603 \U0001f426",
        "n": [1, 2.5, None, True],
        "o": {"k": "v"},
    }
