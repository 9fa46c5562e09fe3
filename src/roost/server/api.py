"""``POST /api/broadcast``: other services publish into rooms (API key).

Two body shapes:

- roost's ``{"topic", "event", "payload"}``: one event to one topic;
- Supabase Realtime's ``{"messages": [{"topic", "event", "payload", "private"}]}``
  (realtime-js's REST fallback, the server's batch API): each message goes to the
  ``realtime:<topic>`` channel as a ``broadcast`` of ``{type, event, payload}``.

The key is accepted as ``Authorization: Bearer <key>`` or as the ``apikey`` header
(realtime-js sends the latter, with its user's access token as the bearer).
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

import orjson
from aiohttp import web

from ..protocol import realtime as shapes
from ..pubsub import HistoryTimeout, HistoryUnavailable
from ..security.rooms import SETTINGS_KEY, RoomPolicy
from .admission import ENDPOINT_KEY
from .body import TooLarge, read_body

log = logging.getLogger("roost.api")

API_KEY: web.AppKey[str] = web.AppKey("api_key", str)
MAX_BODY = 64 * 1024
MAX_MESSAGES = 100


def _matches(offered: str, key: str) -> bool:
    # Compared as bytes: compare_digest raises on non-ASCII str (a 500 for any client
    # that sends one); surrogateescape keeps any header text comparable.
    return hmac.compare_digest(offered.encode("utf-8", "surrogateescape"), key.encode())


def _authorized(request: web.Request, key: str) -> bool:
    given = request.headers.get("Authorization", "")
    bearer = given.startswith("Bearer ") and _matches(given[7:].strip(), key)
    apikey = request.headers.get("apikey")
    return bearer or (apikey is not None and _matches(apikey.strip(), key))


def _error(status: int, reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=status)


async def broadcast(request: web.Request) -> web.Response:
    """``{"topic", "event", "payload"}`` → every subscriber of the topic on every node.

    Or ``{"messages": [...]}`` (see the module). 401 without the right API key; 400
    for a malformed body; 413 over 64 KiB; 503 when the message must be stored in
    history and history is unavailable.
    """
    if not _authorized(request, request.app[API_KEY]):
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
        return _error(400, "body must be an object {topic, event, payload} or {messages}")
    if "messages" in body:
        return await _messages(request, body["messages"])
    topic, event, payload = body.get("topic"), body.get("event"), body.get("payload", {})
    if not isinstance(topic, str) or not topic or not isinstance(event, str) or not event:
        return _error(400, "topic and event must be non-empty strings")
    if topic.startswith(("phx:", "admin:")):
        return _error(400, "topics starting with phx: or admin: are reserved")
    if event.startswith("phx_") or event in ("presence_state", "presence_diff"):
        return _error(400, f"event {event!r} is reserved")
    endpoint = request.app[ENDPOINT_KEY]
    cls = endpoint.router.match(topic)
    store = endpoint.history if cls is not None and event in cls.history_events else None
    if store is not None and not isinstance(payload, dict):
        return _error(400, "payload must be an object for events kept in history")
    try:
        await endpoint.pubsub.broadcast(topic, event, payload, store=store)
    except HistoryTimeout:  # handed to Redis, no answer in time: it may have been stored
        return _error(504, "timeout")
    except HistoryUnavailable:
        return _error(503, "temporarily unavailable")
    log.info("api broadcast topic=%s event=%s", topic, event)
    return web.json_response({"ok": True}, status=202)


def _message(
    i: int, msg: Any, policy: RoomPolicy | None
) -> tuple[str, dict[str, Any]] | web.Response:
    """One message of the ``messages`` shape → (topic, broadcast payload), or a 400."""
    if not isinstance(msg, dict):
        return _error(400, f"messages[{i}] must be an object {{topic, event, payload}}")
    topic, event, payload = msg.get("topic"), msg.get("event"), msg.get("payload")
    private = msg.get("private", False)
    if not isinstance(topic, str) or not topic or not isinstance(event, str) or not event:
        return _error(400, f"messages[{i}]: topic and event must be non-empty strings")
    if not isinstance(payload, dict):
        return _error(400, f"messages[{i}]: payload must be an object")
    if not isinstance(private, bool):
        return _error(400, f"messages[{i}]: private must be a boolean")
    # The room's privacy is the server's (--private-rooms); a message says which
    # audience it is for, and is never delivered to the other one.
    if private != (policy is not None and policy.is_private(topic)):
        where = "private" if private else "public"
        return _error(400, f"messages[{i}]: {topic} is not a {where} channel on this server")
    return shapes.PREFIX + topic, shapes.envelope(event, payload)


async def _messages(request: web.Request, messages: Any) -> web.Response:
    """Supabase Realtime's batch: every message is checked before any is sent."""
    if not isinstance(messages, list) or not messages or len(messages) > MAX_MESSAGES:
        return _error(400, f"messages must be an array of 1 to {MAX_MESSAGES} messages")
    endpoint = request.app[ENDPOINT_KEY]
    if endpoint.router.match(shapes.PREFIX + "_") is None:
        return _error(400, "realtime channels are not enabled on this server (--realtime)")
    policy: RoomPolicy | None = endpoint.settings.get(SETTINGS_KEY)
    checked = []
    for i, msg in enumerate(messages):
        result = _message(i, msg, policy)
        if isinstance(result, web.Response):
            return result
        checked.append(result)
    try:
        for topic, payload in checked:
            await endpoint.pubsub.broadcast(topic, shapes.BROADCAST, payload)
    except HistoryUnavailable:
        return _error(503, "temporarily unavailable")
    log.info("api broadcast messages=%d", len(checked))
    return web.json_response({"ok": True}, status=202)
