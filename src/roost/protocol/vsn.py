"""The choice of serializer by the client's ``vsn``: the one place that knows every serializer."""

from __future__ import annotations

from .errors import ProtocolError
from .json_v1 import V1
from .json_v2 import V2
from .serializer import Serializer


def for_vsn(vsn: str | None) -> Serializer:
    """The serializer a client asked for: none or ``1.x`` → V1, ``2.x`` → V2.

    Raises ProtocolError for anything else (the server answers 403).
    """
    if vsn is None or vsn == "" or vsn.split(".")[0] == "1":
        return V1
    if vsn.split(".")[0] == "2":
        return V2
    raise ProtocolError(f"unsupported protocol version {vsn!r}")
