"""The locks decide what the tests run, not the day (scripts/lock, docs/DEVELOPING.md).

- the environment running these tests is exactly uv.lock (scripts/test syncs it with --locked);
- every hashed lock has a hash on every requirement, and the drivers' and peers' locks hold
  what their ``.in`` files ask for;
- deploy/requirements.txt (what the image installs) is uv.lock's runtime part, exported: a
  change to uv.lock without ``scripts/lock`` is caught here;
- the image's two install steps, run into a fresh virtualenv, give a roost that starts.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOCK = tomllib.loads((ROOT / "uv.lock").read_text())
HASHED = [
    ROOT / "scripts" / "tools.txt",
    ROOT / "tests" / "clients" / "phx-events.txt",
    ROOT / "bench" / "peers" / "requirements.txt",
    ROOT / "deploy" / "requirements.txt",
]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _uv() -> str:
    for cand in (ROOT / ".tools" / "bin" / "uv", shutil.which("uv")):
        if cand and Path(cand).exists():
            return str(cand)
    pytest.fail("uv is missing: scripts/test installs it into .tools (scripts/uv.sh)")


def _requirements(path: Path) -> dict[str, str]:
    """name -> version of the ``name==version`` lines of a compiled requirements file."""
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-\[\],]+)==([^\s;\\]+)", line)
        if m:
            out[_norm(m.group(1).split("[")[0])] = m.group(2)
    return out


def test_the_running_environment_is_the_lock() -> None:
    # The lock is universal: a package may have one version per Python range (numpy, say).
    locked: dict[str, set[str]] = {}
    for p in LOCK["package"]:
        if "version" in p:
            locked.setdefault(_norm(p["name"]), set()).add(p["version"])
    installed = {_norm(d.metadata["Name"]): d.version for d in distributions()}
    wrong = {
        name: (have, sorted(locked[name]))
        for name, have in installed.items()
        if name in locked and have not in locked[name]
    }
    extra = sorted(set(installed) - set(locked) - {"pip", "setuptools", "wheel"})
    assert not wrong, f"installed != uv.lock (run scripts/test, which syncs): {wrong}"
    assert not extra, f"installed but not in uv.lock: {extra}"
    for needed in ("roost", "roost-bench", "mypy", "redis", "aiohttp", "pytest"):
        assert needed in installed, needed


def test_every_hashed_lock_has_a_hash_on_every_requirement() -> None:
    for path in HASHED:
        text = path.read_text()
        reqs = _requirements(path)
        assert reqs, path
        blocks = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[-1])
        for block in blocks:
            if "==" in block.split("\n", 1)[0]:
                first = block.splitlines()[0]
                assert "--hash=sha256:" in block, f"{path.name}: no hash for {first}"


def test_the_drivers_and_peers_locks_hold_their_pins() -> None:
    clients, peers = ROOT / "tests" / "clients", ROOT / "bench" / "peers"
    for lock, source in (
        (clients / "phx-events.txt", clients / "phx-events.in"),
        (peers / "requirements.txt", peers / "requirements.in"),
    ):
        got = _requirements(lock)
        for name, ver in _requirements(source).items():
            assert got.get(name) == ver, f"{lock.name}: {name} {got.get(name)} != {ver}"
    overrides = _requirements(ROOT / "tests" / "clients" / "phx-events.overrides")
    assert (
        _requirements(ROOT / "tests" / "clients" / "phx-events.txt")["websockets"]
        == (overrides["websockets"])
    )
    tools = _requirements(ROOT / "scripts" / "tools.txt")
    assert tools["uv"] == _requirements(ROOT / "scripts" / "tools.in")["uv"]


def test_the_image_requirements_are_the_locks_runtime_part(tmp_path: Path) -> None:
    out = tmp_path / "requirements.txt"
    subprocess.run(
        [_uv(), "export", "--frozen", "--package", "roost", "--no-dev", "--no-emit-workspace",
         "--format", "requirements-txt", "--quiet", "-o", str(out)],
        cwd=ROOT, check=True, timeout=60,
    )  # fmt: skip
    assert _requirements(out) == _requirements(ROOT / "deploy" / "requirements.txt"), (
        "deploy/requirements.txt is not uv.lock's runtime part: run scripts/lock"
    )
    runtime = {
        _norm(re.split(r"[<>=!~;\[ ]", d)[0])
        for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    }
    assert runtime <= set(_requirements(out)), runtime - set(_requirements(out))


@pytest.mark.timeout(600)
def test_the_images_install_steps_give_a_roost_that_starts(tmp_path: Path) -> None:
    """deploy/Dockerfile's two pip steps (hash-checked lock, then roost with --no-deps), run
    into a fresh virtualenv with uv's cache: no resolution happens, roost imports and answers."""
    uv = _uv()
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    venv = tmp_path / "image"
    subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)],
                   check=True, timeout=120, env=env)  # fmt: skip
    py = str(venv / "bin" / "python")
    for args in (
        ["--require-hashes", "-r", str(ROOT / "deploy" / "requirements.txt")],
        ["--no-deps", str(ROOT)],
    ):
        subprocess.run([uv, "pip", "install", "--quiet", "--python", py, *args],
                       check=True, timeout=480, env=env)  # fmt: skip
    got = subprocess.run([str(venv / "bin" / "roost"), "serve", "--help"],
                         capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert got.returncode == 0, got.stderr
    assert "--redis" in got.stdout
