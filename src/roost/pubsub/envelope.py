"""The unit a broker carries between nodes."""

from __future__ import annotations

from dataclasses import dataclass

from ..protocol import Encoded


@dataclass(frozen=True, slots=True)
class Envelope:
    """One broadcast: who sent it (node, per-node sequence), where, what.

    ``payload`` is already encoded (JSON bytes or binary): receiving nodes forward it
    without parsing. ``exclude`` names the subscriber a ``broadcast_from`` skips.
    """

    node: str
    seq: int
    topic: str
    event: str
    payload: Encoded
    exclude: str | None = None
    offset: int | None = None  # set when the message was stored in the topic's history
    epoch: str | None = None
    #: A stored publish whose idempotency key was already stored: this is the first copy's
    #: position, and nothing was published again (never on the wire between nodes).
    duplicate: bool = False
