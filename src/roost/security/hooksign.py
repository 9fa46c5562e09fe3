"""Signed hook requests: a backend can trust that a request came from roost.

``X-Roost-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 over "<t>." + body>`` with
``--hook-secret``. The backend recomputes the HMAC over the raw body and refuses a
timestamp older than a few minutes (a replayed request), as Stripe's webhooks do.
``verify`` is that check, for backends written in Python.
"""

from __future__ import annotations

import hashlib
import hmac
import time

HEADER = "X-Roost-Signature"
TOLERANCE = 300.0


def sign(secret: bytes, body: bytes, now: float | None = None) -> str:
    stamp = int(time.time() if now is None else now)
    mac = hmac.new(secret, b"%d." % stamp + body, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={mac}"


def verify(
    secret: bytes, header: str, body: bytes, now: float | None = None, tolerance: float = TOLERANCE
) -> bool:
    """True if ``header`` signs ``body`` with ``secret`` within ``tolerance`` seconds."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        stamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    current = time.time() if now is None else now
    if abs(current - stamp) > tolerance:
        return False
    want = hmac.new(secret, b"%d." % stamp + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(want, fields.get("v1", ""))
