"""Installing the peers (``roost-bench peers --setup``) and telling whether they are."""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path


def _stamp(*files: Path) -> str:
    h = hashlib.sha256()
    for f in files:
        with contextlib.suppress(OSError):
            h.update(f.read_bytes())
    return h.hexdigest()


def python_ready(peers: Path) -> str | None:
    """None when the Python peers' venv is installed and current, else why not."""
    py = peers / ".venv" / "bin" / "python"
    if not py.exists():
        return "bench/peers/.venv missing: run `roost-bench peers --setup`"
    stamp = peers / ".venv" / ".roost-peers-stamp"
    want = _stamp(peers / "requirements.txt")
    if not stamp.exists() or stamp.read_text().strip() != want:
        return "bench/peers/.venv out of date: run `roost-bench peers --setup`"
    return None


def node_ready(peers: Path) -> str | None:
    if shutil.which("node") is None:
        return "node is not on PATH"
    mods = peers / "node" / "node_modules"
    if not mods.is_dir():
        return "bench/peers/node/node_modules missing: run `roost-bench peers --setup`"
    want = _stamp(peers / "node" / "package.json", peers / "node" / "package-lock.json")
    stamp = mods / ".roost-stamp"
    if not stamp.exists() or stamp.read_text().strip() != want:
        return "bench/peers/node/node_modules out of date: run `roost-bench peers --setup`"
    return None


def setup(peers: Path, say: Callable[[str], None]) -> dict[str, str | None]:
    """Install the peers (Python venv, npm ci); return each kind's failure, if any."""
    failures: dict[str, str | None] = {"python": None, "node": None}
    if python_ready(peers) is not None:
        venv = peers / ".venv"
        say(f"installing the Python peers into {venv}")
        try:
            if not (venv / "bin" / "python").exists():
                subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
            pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--require-hashes"]
            subprocess.run(
                [*pip, "-r", str(peers / "requirements.txt")],
                check=True, timeout=900, capture_output=True,
            )  # fmt: skip
            (venv / ".roost-peers-stamp").write_text(_stamp(peers / "requirements.txt"))
        except (subprocess.SubprocessError, OSError) as exc:
            failures["python"] = f"pip install failed: {_why(exc)}"
    if shutil.which("npm") is None:
        failures["node"] = "npm is not on PATH"
    elif node_ready(peers) is not None:
        say(f"npm ci in {peers / 'node'}")
        try:
            subprocess.run(
                ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=peers / "node", check=True, timeout=900, capture_output=True,
            )  # fmt: skip
            (peers / "node" / "node_modules" / ".roost-stamp").write_text(
                _stamp(peers / "node" / "package.json", peers / "node" / "package-lock.json")
            )
        except (subprocess.SubprocessError, OSError) as exc:
            failures["node"] = f"npm ci failed: {_why(exc)}"
    return failures


def _why(exc: BaseException) -> str:
    if isinstance(exc, subprocess.CalledProcessError):
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
        tail = err.strip().splitlines()[-3:]
        return f"exit {exc.returncode}" + (": " + " | ".join(tail) if tail else "")
    return repr(exc)
