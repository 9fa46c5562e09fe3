"""Backend hooks: the application's own HTTP backend decides connects, joins and client
pushes (``--hook-connect``, ``--hook-join``, ``--hook-publish``), Centrifugo-proxy style."""

from ..security.hooksign import HEADER, verify
from .client import Answer, HookClient, HookPolicy
from .guard import HttpGuard, connect_hook

__all__ = ["HEADER", "Answer", "HookClient", "HookPolicy", "HttpGuard", "connect_hook", "verify"]
