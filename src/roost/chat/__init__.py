"""The chat application: the ``rooms:*`` channel and the page."""

from .app import create_endpoint
from .room import RoomChannel

__all__ = ["RoomChannel", "create_endpoint"]
