"""The real Erlang runtime in tests: Python terms as Erlang source, ``erl`` evaluations,
and tests/erlang/phx_peer.escript (phoenix_pubsub_redis's side on a real Redis).

Debian's ``erlang-base`` gives ``erl`` and ``escript``; scripts/test installs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from roost.protocol.etf import Atom, ImproperList

ESCRIPT = Path(__file__).resolve().parent / "erlang" / "phx_peer.escript"


def need_erlang() -> None:
    """Skip without erl/escript, except in CI (scripts/test installs erlang-base)."""
    if shutil.which("erl") and shutil.which("escript"):
        return
    if os.environ.get("CI"):
        pytest.fail("erl/escript missing: scripts/test installs erlang-base")
    pytest.skip("erl/escript missing (scripts/test installs erlang-base)")


def literal(term: Any) -> str:
    """Erlang source for a Python term (etf's mapping; str as its UTF-8 binary)."""
    if term is None or isinstance(term, bool):
        return {None: "nil", True: "true", False: "false"}[term]
    if isinstance(term, int):
        return str(term)
    if isinstance(term, float):
        text = repr(term)
        if "e" in text:
            mantissa, exponent = text.split("e")
            text = f"{mantissa if '.' in mantissa else mantissa + '.0'}e{int(exponent)}"
        return text
    if isinstance(term, Atom):
        return "'" + term.name.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(term, str):
        term = term.encode()
    if isinstance(term, bytes):
        return "<<" + ",".join(str(b) for b in term) + ">>"
    if isinstance(term, tuple):
        return "{" + ",".join(literal(t) for t in term) + "}"
    if isinstance(term, list):
        return "[" + ",".join(literal(t) for t in term) + "]"
    if isinstance(term, ImproperList):
        return "[" + ",".join(literal(t) for t in term.items) + "|" + literal(term.tail) + "]"
    if isinstance(term, dict):
        return "#{" + ",".join(f"{literal(k)} => {literal(v)}" for k, v in term.items()) + "}"
    raise TypeError(type(term).__name__)


def erl(expr: str, timeout: float = 60) -> str:
    """Evaluate Erlang expressions (``expr``, ending without a dot) in a fresh ``erl``;
    its standard output."""
    done = subprocess.run(
        ["erl", "-noshell", "-eval", f"{expr}, halt()."],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr or done.stdout
    return done.stdout


def peer(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["escript", str(ESCRIPT), *args], capture_output=True, text=True, timeout=timeout
    )


def publish(port: int, channel: str, term_source: str, workdir: Path, level: int = 0) -> str:
    """Publish the Erlang term ``term_source`` as phoenix_pubsub_redis does."""
    path = workdir / f"publish-{os.urandom(4).hex()}.erl"
    path.write_text(term_source + ".\n")
    done = peer("publish", str(port), channel, str(path), str(level))
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


class Listener:
    """phx_peer.escript listen: subscribed once ``start`` returns."""

    def __init__(self, port: int, channel: str, node: str, wanted: list[str], workdir: Path):
        path = workdir / f"expect-{os.urandom(4).hex()}.erl"
        path.write_text("".join(w + ".\n" for w in wanted))
        self.proc = subprocess.Popen(
            ["escript", str(ESCRIPT), "listen", str(port), channel, node, str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline()
        assert first.strip() == "subscribed", first + self.proc.stdout.read()

    def result(self, timeout: float = 30) -> str:
        """Everything it printed; fails unless every wanted term matched."""
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
            raise AssertionError(f"the Erlang listener timed out:\n{out}") from None
        assert self.proc.returncode == 0, out
        assert out.rstrip().endswith("done"), out
        return out
