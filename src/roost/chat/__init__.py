"""The chat application: the ``rooms:*`` channel and the page."""

from .app import ChatSettings, application, create_endpoint
from .room import RoomChannel

__all__ = ["ChatSettings", "RoomChannel", "application", "create_endpoint"]
