"""Node-local PubSub with the fastlane, and the broker interface below it."""

from .broker import Broker, Deliver
from .envelope import Envelope
from .pubsub import PubSub, fastlane
from .wire import Subscriber, Wire, WireKind

__all__ = ["Broker", "Deliver", "Envelope", "PubSub", "Subscriber", "Wire", "WireKind", "fastlane"]
