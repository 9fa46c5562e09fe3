"""The Redis broker: Pub/Sub between nodes, node names, envelopes."""

from .broker import BrokerStats, DuplicateNodeError, RedisBroker
from .keys import Keys

__all__ = ["BrokerStats", "DuplicateNodeError", "Keys", "RedisBroker"]
