"""Sockets, channels and routing: the application-facing layer (Phoenix.Socket/Channel)."""

from .channel import Channel
from .endpoint import ConnectRefused, Endpoint, Limits
from .reply import JoinError, Reply
from .router import Router
from .socket import CloseSocket, InvalidFrame, Socket

__all__ = [
    "Channel",
    "CloseSocket",
    "ConnectRefused",
    "Endpoint",
    "InvalidFrame",
    "JoinError",
    "Limits",
    "Reply",
    "Router",
    "Socket",
]
