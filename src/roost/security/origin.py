"""The Origin check against cross-site WebSocket hijacking.

A request without an Origin header passes (non-browser clients). Otherwise the
Origin must be the request's own host, or match an allowed entry:
``https://chat.example.com``, ``http://localhost:4000``, ``https://*.example.com``
(any subdomain), ``*.example.com`` (any scheme), or ``*`` (anything: the check off).
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _parts(url: str) -> tuple[str, str, int | None] | None:
    try:
        split = urlsplit(url.strip())
        scheme, host = split.scheme.lower(), (split.hostname or "").lower()
        port = split.port if split.port is not None else DEFAULT_PORTS.get(scheme)
    except ValueError:
        return None
    if not scheme or not host:
        return None
    return scheme, host, port


class OriginPolicy:
    def __init__(self, allowed: Iterable[str] = (), check: bool = True) -> None:
        self.check = check
        self.any = False
        self.entries: list[tuple[str | None, str, int | None]] = []
        for entry in allowed:
            entry = entry.strip()
            if not entry:
                continue
            if entry == "*":
                self.any = True
                continue
            if "://" not in entry:  # "*.example.com" or "example.com": any scheme
                bare, _, port_text = entry.partition(":")
                self.entries.append((None, bare.lower(), int(port_text) if port_text else None))
                continue
            parts = _parts(entry.replace("://*.", "://wildcard-placeholder."))
            if parts is None:
                raise ValueError(f"not an origin: {entry!r}")
            scheme, host, port = parts
            host = host.replace("wildcard-placeholder.", "*.")
            self.entries.append((scheme, host, port))

    def allows(self, origin: str | None, request_host: str | None, secure: bool) -> bool:
        if not self.check or self.any or origin is None:
            return True
        parts = _parts(origin)
        if parts is None:
            return False
        scheme, host, port = parts
        if request_host:
            own = _parts(f"{'https' if secure else 'http'}://{request_host}")
            if own is not None and (host, port) == (own[1], own[2]):
                return True
        for e_scheme, e_host, e_port in self.entries:
            if e_scheme is not None and e_scheme != scheme:
                continue
            if e_port is not None and e_port != port:
                continue
            if e_host.startswith("*."):
                if host.endswith(e_host[1:]) and host != e_host[2:]:
                    return True
            elif host == e_host:
                return True
        return False
