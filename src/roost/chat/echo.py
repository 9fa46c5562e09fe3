"""``echo:*``: a diagnostic channel that answers what it is sent (``roost serve --echo``).

``echo`` replies ok with the payload; ``bin`` with a binary payload replies with the
bytes reversed (a check that binary frames work both ways); ``broadcast`` and
``broadcast_from`` send the payload to the topic as ``echo``; ``crash`` raises, to
show ``phx_error``.
"""

from __future__ import annotations

from typing import Any

from ..channels import Channel, Reply


class EchoChannel(Channel):
    async def join(self, payload: Any) -> Any:
        if isinstance(payload, dict) and payload.get("crash"):
            raise RuntimeError("join crash requested")
        return {"node": self.node}

    async def handle_in(self, event: str, payload: Any, ref: str | None) -> Reply | None:
        if event == "echo":
            return Reply.ok(payload)
        if event == "bin":
            if not isinstance(payload, bytes):
                return Reply.error({"reason": "binary payload expected"})
            return Reply.ok(payload[::-1])
        if event == "broadcast":
            await self.broadcast("echo", payload)
            return Reply.ok()
        if event == "broadcast_from":
            await self.broadcast_from("echo", payload)
            return Reply.ok()
        if event == "crash":
            raise RuntimeError("crash requested")
        return Reply.error({"reason": "unknown event"})
