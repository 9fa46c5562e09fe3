"""Node-local PubSub with the fastlane, and the broker interface below it."""

from .broker import Broker, Counter, Deliver, Lost, Timing
from .envelope import Envelope
from .fanout import fastlane
from .history import (
    HistoryPolicy,
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
    "fastlane",
]
