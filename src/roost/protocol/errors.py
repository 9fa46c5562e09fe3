"""The one error type the protocol layer raises."""

from __future__ import annotations

from .message import Ref


class ProtocolError(Exception):
    """A frame that is not a valid Phoenix message.

    ``reason`` says what is wrong in words a client developer understands. When the
    frame was shaped well enough to know where it came from, ``topic``/``ref``/
    ``join_ref`` are set so the server can answer with an error reply instead of
    closing the connection.
    """

    def __init__(
        self,
        reason: str,
        *,
        join_ref: Ref = None,
        ref: Ref = None,
        topic: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.join_ref = join_ref
        self.ref = ref
        self.topic = topic

    @property
    def answerable(self) -> bool:
        """True when an error reply can be addressed to the sender."""
        return self.topic is not None and self.ref is not None
