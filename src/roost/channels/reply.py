"""What a channel answers: ``Reply`` for a push, ``JoinError`` to refuse a join."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Reply:
    status: str
    response: Any = field(default_factory=dict)

    @classmethod
    def ok(cls, response: Any = None) -> Reply:
        return cls("ok", {} if response is None else response)

    @classmethod
    def error(cls, response: Any = None) -> Reply:
        return cls("error", {} if response is None else response)


class JoinError(Exception):
    """Raise from ``Channel.join`` to refuse; the client gets an error reply.

    ``JoinError("unauthorized")`` answers ``{"reason": "unauthorized"}``; pass a dict
    for any other response.
    """

    def __init__(self, response: str | dict[str, Any]) -> None:
        self.response = {"reason": response} if isinstance(response, str) else response
        super().__init__(str(self.response))
