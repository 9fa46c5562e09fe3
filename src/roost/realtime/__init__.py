"""Supabase Realtime-compatible channels: ``realtime:<name>`` (Broadcast, Presence).

Enabled by ``roost serve --realtime``; see ``channel.RealtimeChannel``.
"""

from __future__ import annotations

from ..channels import Router
from ..protocol.realtime import PREFIX
from .channel import RealtimeChannel


def route(router: Router) -> Router:
    """Serve ``realtime:*`` on ``router``."""
    return router.channel(f"{PREFIX}*", RealtimeChannel)


__all__ = ["RealtimeChannel", "route"]
