"""Broker adapters: memory (the embedded default) and, later, Redis."""

from .memory import MemoryBroker, MemoryHub

__all__ = ["MemoryBroker", "MemoryHub"]
