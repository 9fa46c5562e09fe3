"""Node-local PubSub with the fastlane, and the broker interface below it."""

from . import deadline
from .broker import Broker, Counter, Deliver, Lost, Timing
from .envelope import Envelope
from .fanout import fastlane
from .history import (
    HistoryPolicy,
    HistoryTimeout,
    HistoryUnavailable,
    Page,
    Position,
    Recovery,
    StoredMessage,
)
from .pubsub import PubSub
from .wire import Subscriber, Wire, WireKind

__all__ = [
    "Broker",
    "Counter",
    "Deliver",
    "Envelope",
    "HistoryPolicy",
    "HistoryTimeout",
    "HistoryUnavailable",
    "Lost",
    "Page",
    "Position",
    "PubSub",
    "Recovery",
    "StoredMessage",
    "Subscriber",
    "Timing",
    "Wire",
    "WireKind",
    "deadline",
    "fastlane",
]
