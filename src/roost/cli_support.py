"""Small helpers shared by the command-line modules."""

from __future__ import annotations

import asyncio


def use_uvloop() -> bool:
    """Run asyncio on uvloop when it is installed; say whether it is."""
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True
