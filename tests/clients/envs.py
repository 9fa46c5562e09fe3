"""Interpreters for the PyPI client drivers: ``python tests/clients/envs.py`` prepares them.

- ``phoenix-clients`` (phxsocket, chunnel, realtime): the dev extras of pyproject.toml; the
  running interpreter is used when it has them at the pinned versions, else a virtualenv.
- ``phx-events``: always its own virtualenv. phx-events 0.4.1 pins ``websockets ~= 9.1``,
  which conflicts with realtime (``websockets >= 11``) and does not run on Python >= 3.10
  (websockets 9 passes ``loop=`` to asyncio.Lock). It is installed ``--no-deps`` next to
  websockets 10.4, the newest websockets whose legacy ``websockets.client`` API it uses.

Virtualenvs live under ``$ROOST_CLIENT_VENVS`` (default ``<repo>/.venv/clients``), one per
set of pins, so a second run needs no network.
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
PINS: dict[str, list[str]] = {
    "phoenix-clients": ["phxsocket==0.1.5", "chunnel==0.1.0", "realtime==2.34.1"],
    "phx-events": ["phx-events==0.4.1", "orjson>=3.6,<4", "websockets==10.4"],
}
NO_DEPS = {"phx-events"}


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
    if name not in NO_DEPS and _has_pins(pins):
        return sys.executable
    base = Path(os.environ.get("ROOST_CLIENT_VENVS", ROOT / ".venv" / "clients"))
    digest = hashlib.sha256(" ".join(pins).encode()).hexdigest()[:12]
    home = base / f"{name}-{digest}"
    python = home / "bin" / "python"
    stamp = home / ".roost-installed"
    if not stamp.is_file():
        venv.create(home, with_pip=True, clear=True)
        cmds = [["--no-deps", pins[0]], pins[1:]] if name in NO_DEPS else [pins]
        for args in cmds:
            subprocess.run(
                [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args],
                check=True,
                timeout=600,
            )
        stamp.write_text(" ".join(pins) + "\n")
    return str(python)


if __name__ == "__main__":
    for env_name in PINS:
        print(f"{env_name}: {python_for(env_name)}")
