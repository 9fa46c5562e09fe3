"""Interpreters for the PyPI client drivers: ``python tests/clients/envs.py`` prepares them.

- ``phoenix-clients`` (phxsocket, chunnel, realtime): the dev extras of pyproject.toml; the
  running interpreter is used when it has them at the pinned versions, else a virtualenv.
- ``phx-events``: always its own virtualenv. phx-events 0.4.1 pins ``websockets ~= 9.1``,
  which conflicts with realtime (``websockets >= 11``) and does not run on Python >= 3.10
  (websockets 9 passes ``loop=`` to asyncio.Lock). Its lock, ``phx-events.txt`` (exact versions
  and hashes, made by ``scripts/lock`` from ``phx-events.in`` with websockets overridden to 10.4,
  the newest websockets whose legacy ``websockets.client`` API it uses), is installed exactly.

Virtualenvs live under ``$ROOST_CLIENT_VENVS`` (default ``<repo>/.venv/clients``), one per
lock content, so a second run needs no network.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
PINS: dict[str, list[str]] = {
    "phoenix-clients": ["phxsocket==0.1.5", "chunnel==0.1.0", "realtime==2.34.1"],
    "phx-events": ["phx-events==0.4.1"],
}
# Drivers that always get a virtualenv of their own, installed from a hashed lock.
LOCKS: dict[str, Path] = {"phx-events": HERE / "phx-events.txt"}


def _has_pins(pins: list[str]) -> bool:
    for pin in pins:
        if "==" not in pin:
            continue
        name, want = pin.split("==")
        try:
            if version(name) != want:
                return False
        except PackageNotFoundError:
            return False
    return True


def python_for(name: str) -> str:
    """The interpreter that runs the drivers of ``name``, creating its virtualenv if needed."""
    pins = PINS[name]
    lock = LOCKS.get(name)
    if lock is None and _has_pins(pins):
        return sys.executable
    if lock is not None:
        content = lock.read_bytes()
        args = ["--require-hashes", "--no-deps", "-r", str(lock)]
    else:  # the dev lock does not have them (an environment of one's own): the pins alone
        content = " ".join(pins).encode()
        args = pins
    base = Path(os.environ.get("ROOST_CLIENT_VENVS", ROOT / ".venv" / "clients"))
    digest = hashlib.sha256(content).hexdigest()[:12]
    home = base / f"{name}-{digest}"
    python = home / "bin" / "python"
    stamp = home / ".roost-installed"
    if not stamp.is_file():
        venv.create(home, with_pip=True, clear=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args],
            check=True,
            timeout=600,
        )
        stamp.write_text(digest + "\n")
    return str(python)


if __name__ == "__main__":
    for env_name in PINS:
        print(f"{env_name}: {python_for(env_name)}")
