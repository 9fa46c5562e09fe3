"""Several processes, one node name, one port: ``roost serve --workers N``."""

from .role import Role
from .supervisor import Supervisor

__all__ = ["Role", "Supervisor"]
