"""``POST /api/broadcast``: other services publish into rooms (bearer API key)."""

from __future__ import annotations

import hmac
import logging
from typing import Any

import orjson
from aiohttp import web

from ..pubsub import HistoryUnavailable
from .admission import ENDPOINT_KEY
from .body import TooLarge, read_body

log = logging.getLogger("roost.api")

API_KEY: web.AppKey[str] = web.AppKey("api_key", str)
MAX_BODY = 64 * 1024


def _error(status: int, reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=status)


async def broadcast(request: web.Request) -> web.Response:
    """``{"topic", "event", "payload"}`` → every subscriber of the topic on every node.

    401 without the right bearer key; 400 for a malformed body; 413 over 64 KiB;
    503 when the message must be stored in history and history is unavailable.
    """
    key = request.app[API_KEY]
    given = request.headers.get("Authorization", "")
    # Compared as bytes: compare_digest raises on non-ASCII str (a 500 for any client
    # that sends one); surrogateescape keeps any header text comparable.
    offered = given[7:].strip().encode("utf-8", "surrogateescape")
    if not given.startswith("Bearer ") or not hmac.compare_digest(offered, key.encode()):
        return _error(401, "missing or wrong API key")
    try:
        raw = await read_body(request, MAX_BODY)
    except TooLarge:
        return _error(413, "body too large")
    try:
        body: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _error(400, "body is not JSON")
    if not isinstance(body, dict):
        return _error(400, "body must be an object {topic, event, payload}")
    topic, event, payload = body.get("topic"), body.get("event"), body.get("payload", {})
    if not isinstance(topic, str) or not topic or not isinstance(event, str) or not event:
        return _error(400, "topic and event must be non-empty strings")
    if topic.startswith("phx:"):
        return _error(400, "topics starting with phx: are reserved")
    if event.startswith("phx_") or event in ("presence_state", "presence_diff"):
        return _error(400, f"event {event!r} is reserved")
    endpoint = request.app[ENDPOINT_KEY]
    cls = endpoint.router.match(topic)
    store = endpoint.history if cls is not None and event in cls.history_events else None
    if store is not None and not isinstance(payload, dict):
        return _error(400, "payload must be an object for events kept in history")
    try:
        await endpoint.pubsub.broadcast(topic, event, payload, store=store)
    except HistoryUnavailable:
        return _error(503, "temporarily unavailable")
    log.info("api broadcast topic=%s event=%s", topic, event)
    return web.json_response({"ok": True}, status=202)
