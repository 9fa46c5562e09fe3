"""Each process's file limit: raised to the hard limit at start, and said in the log."""

from __future__ import annotations

import contextlib
import logging

try:
    import resource
except ImportError:  # not on Windows
    resource = None  # type: ignore[assignment]

log = logging.getLogger("roost")

#: Files a node needs besides its client sockets: Redis pools, the subscriber, logs,
#: a long-poll relay, the listening sockets.
RESERVED_FDS = 200


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard one; return the soft limit now in force."""
    if resource is None:
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if target > soft:
        with contextlib.suppress(ValueError, OSError):  # above fs.nr_open: keep what we have
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def log_capacity(max_connections: int) -> int:
    """Raise the limit and log how many connections this process can hold."""
    limit = raise_fd_limit()
    if not limit:
        return max_connections
    room = max(1, limit - RESERVED_FDS)
    can = min(room, max_connections)
    why = "--max-connections" if max_connections <= room else "the file limit"
    log.info("this process can hold %d connections (%s; file limit %d)", can, why, limit)
    return can
