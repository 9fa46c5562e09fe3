"""The Redis broker: Pub/Sub between nodes, node names, envelopes."""

from .broker import RedisBroker
from .cluster import ClusterRefused
from .keys import Keys
from .nodes import DuplicateNodeError
from .stats import BrokerStats

__all__ = ["BrokerStats", "ClusterRefused", "DuplicateNodeError", "Keys", "RedisBroker"]
