"""A presence entry as stored in Redis: JSON, size-bounded, signed with a signing key.

    {"k": key, "n": node, "m": meta}                       without a signing key
    {"k": key, "n": node, "m": meta, "s": "<hmac hex>"}    with one

``s`` is an HMAC-SHA256 (under a key derived from ``--redis-signing-key``) over the
topic, the entry's hash field (its ``phx_ref``) and the exact bytes before ``,"s":``
(key, writing node and meta): an entry cannot be forged, altered, nor moved to another
room or field. An entry is at most ``MAX_ENTRY_BYTES`` long, signature included: a
bigger meta is refused when written (``EntryTooLarge``), and a bigger value is dropped
when read, signing key or not.

Every value read from Redis (a joiner's state, a sweep, a removal, a fresh state) goes
through ``EntryCodec.read``: what fails the bound, the signature or the shape is
dropped (never listed, never broadcast), counted, and reported in a warning at most
every ``REPORT_EVERY`` seconds.
"""

from __future__ import annotations

import hmac
import logging
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from ...pubsub.presence import Entry
from . import codec

log = logging.getLogger("roost.presence")

MAX_ENTRY_BYTES = 4096  # encoded bytes per entry (key, node, meta and signature)
REPORT_EVERY = 10.0  # seconds between two warnings about dropped entries

_SIGNED = re.compile(rb',"s":"([0-9a-f]{64})"}\Z')


class EntryTooLarge(ValueError):
    """An application's presence meta encodes to more than the store takes."""


class BadEntry(ValueError):
    """A value in Redis that is not an entry this node wrote or trusts."""


class EntryCodec:
    """Encodes this node's entries and checks everyone's (see the module docstring).

    ``count`` is called with the number of entries dropped; ``timer`` (monotonic) paces
    the warnings.
    """

    def __init__(
        self,
        signing_key: bytes | None = None,
        max_bytes: int = MAX_ENTRY_BYTES,
        *,
        count: Callable[[int], None] | None = None,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.key = codec.subkey(signing_key, "presence") if signing_key is not None else None
        self.max_bytes = max_bytes
        self.count = count
        self.timer = timer
        self._unreported: dict[str, int] = {}  # reason → entries dropped since the last warning
        self._last: tuple[str, str] = ("", "")  # (topic, reason) of the latest drop
        self._report_at = 0.0

    def _mac(self, key: bytes, topic: str, ref: str, body: bytes) -> str:
        return codec.digest(key, (topic.encode(), ref.encode(), body))

    def encode(self, topic: str, node: str, entry: Entry) -> bytes:
        """The value to store; raises EntryTooLarge past ``max_bytes``."""
        value = orjson.dumps({"k": entry.key, "n": node, "m": entry.meta})
        if self.key is not None:
            mac = self._mac(self.key, topic, entry.ref, value)
            value = value[:-1] + b',"s":"' + mac.encode() + b'"}'
        if len(value) > self.max_bytes:
            raise EntryTooLarge(
                f"presence entry for {entry.key!r} on {topic!r} is {len(value)} bytes encoded, "
                f"more than the {self.max_bytes} allowed: make its meta smaller"
            )
        return value

    def decode(self, topic: str, ref: str, value: bytes) -> Entry:
        """The entry in hash field ``ref`` of ``topic``; raises BadEntry (the reason)."""
        if len(value) > self.max_bytes:
            raise BadEntry("too large")
        body = value
        if self.key is not None:
            signed = _SIGNED.search(value)
            if signed is None:
                raise BadEntry("unsigned")
            body = value[: signed.start()] + b"}"
            want = self._mac(self.key, topic, ref, body)
            if not hmac.compare_digest(want.encode(), signed.group(1)):
                raise BadEntry("bad signature")
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise BadEntry("not JSON") from None
        if not isinstance(data, dict):
            raise BadEntry("not an object")
        key, meta = data.get("k"), data.get("m")
        if not isinstance(key, str) or not isinstance(meta, dict):
            raise BadEntry("no key or meta")
        if meta.get("phx_ref") != ref:
            raise BadEntry("phx_ref is not its field")
        return Entry(ref, key, meta)

    def read(self, topic: str, pairs: Iterable[tuple[Any, Any]]) -> list[Entry]:
        """The good entries of (field, value) pairs read from Redis; the rest dropped."""
        entries = []
        for field, value in pairs:
            ref = field.decode(errors="replace") if isinstance(field, bytes) else str(field)
            try:
                if not isinstance(value, bytes):
                    raise BadEntry("not bytes")
                entries.append(self.decode(topic, ref, value))
            except BadEntry as exc:
                self._dropped(topic, str(exc))
        return entries

    def _dropped(self, topic: str, reason: str) -> None:
        if self.count is not None:
            self.count(1)
        self._unreported[reason] = self._unreported.get(reason, 0) + 1
        self._last = (topic, reason)
        now = self.timer()
        if now >= self._report_at:
            self._report_at = now + REPORT_EVERY
            counts = ", ".join(f"{n} {r}" for r, n in sorted(self._unreported.items()))
            self._unreported.clear()
            log.warning(
                "presence: dropped entries read from Redis that fail their check (%s; "
                "latest on %s: %s); at most one such warning every %.0f s",
                counts,
                *self._last,
                REPORT_EVERY,
            )
