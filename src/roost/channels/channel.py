"""The Channel: what an application implements for a topic (Phoenix.Channel)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from ..protocol import Encoded, Ref
from ..pubsub import HistoryPolicy, HistoryUnavailable, Position, Recovery
from ..pubsub.history import MAX_PAGE
from .lifecycle import ChannelEvent, ChannelState, advance
from .reply import JoinError, Reply

if TYPE_CHECKING:
    from ..pubsub import Wire
    from .contracts import ChannelSocket


def parse_since(value: Any) -> Position | None:
    """A rejoining client's ``since``: ``{"offset": N >= 0, "epoch": "<= 64 chars"}``,
    or None; anything else refuses the join (``invalid since``)."""
    if value is None:
        return None
    offset = value.get("offset") if isinstance(value, dict) else None
    epoch = value.get("epoch") if isinstance(value, dict) else None
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise JoinError("invalid since")
    if not isinstance(epoch, str) or not epoch or len(epoch) > 64:
        raise JoinError("invalid since")
    return Position(offset, epoch)


#: The largest ``before`` a page request may name (JavaScript's safe integers).
MAX_OFFSET = 2**53 - 1
INVALID_PAGE = {"reason": "invalid page"}


def parse_page(value: Any) -> tuple[int, int, str] | None:
    """A page request ``{"before": N >= 1, "limit": 1..100 (50), "epoch": "..."}`` →
    (before, limit, epoch), or None when it is not one."""
    if not isinstance(value, dict):
        return None
    before, limit, epoch = value.get("before"), value.get("limit", 50), value.get("epoch")

    def whole(n: Any, low: int, high: int) -> int | None:
        ok = isinstance(n, int) and not isinstance(n, bool) and low <= n <= high
        return n if ok else None

    start, count = whole(before, 1, MAX_OFFSET), whole(limit, 1, MAX_PAGE)
    if start is None or count is None:
        return None
    if not isinstance(epoch, str) or not epoch or len(epoch) > 64:
        return None
    return start, count, epoch


class Channel:
    """One joined topic on one socket.

    Override ``join`` (return the ok response, or raise ``JoinError``), ``handle_in``
    (return a ``Reply`` or None), optionally ``after_join``, ``handle_out`` and
    ``terminate``. ``intercept`` names the broadcast events that go through
    ``handle_out`` instead of the fastlane (Phoenix's ``intercept``).
    """

    intercept: ClassVar[frozenset[str]] = frozenset()
    #: broadcast events kept in the topic's history (each gets an ``offset``)
    history_events: ClassVar[frozenset[str]] = frozenset()

    # Slots keep an idle joined channel small (a subclass may still add attributes).
    __slots__ = (
        "_assigns",
        "join_ref",
        "joined_at",
        "socket",
        "state",
        "subscribed",
        "topic",
        "wire",
    )

    def __init__(self, socket: ChannelSocket, topic: str, join_ref: Ref) -> None:
        self.socket = socket
        self.topic = topic
        self.join_ref = join_ref
        self.wire: Wire = socket.wire
        self._assigns: dict[str, Any] | None = None
        self.state = ChannelState.JOINING  # see lifecycle.TRANSITIONS
        self.subscribed = False
        #: Where the history in the join reply ends (set by ``history``): broadcasts up
        #: to it are not pushed again after the reply.
        self.joined_at: Position | None = None

    @property
    def joined(self) -> bool:
        return self.state is ChannelState.JOINED

    def move(self, event: ChannelEvent) -> None:
        """Take a transition of the lifecycle table (anything else raises)."""
        self.state = advance(self.state, event)

    @property
    def assigns(self) -> dict[str, Any]:
        """This channel's assigns: a copy of the socket's, made when first used."""
        if self._assigns is None:
            self._assigns = dict(self.socket.assigns)
        return self._assigns

    # -- callbacks ----------------------------------------------------------------------
    async def join(self, payload: Any) -> Any:
        """Decide the join. Return the ok reply's response; raise JoinError to refuse."""
        return {}

    async def after_join(self) -> None:
        """Runs after the ok reply was sent (Phoenix's ``send(self(), :after_join)``)."""

    async def handle_in(self, event: str, payload: Any, ref: Any) -> Reply | None:
        """A client push. Return a Reply, or None for no reply.

        ``ref`` is the client's ref, a ``Ref`` (any JSON scalar); typed ``Any`` here so
        that channels written for string refs still type-check."""
        return Reply.error({"reason": "unknown event"})

    def handle_out(self, event: str, payload: Encoded) -> None:
        """An intercepted broadcast; the default pushes it unchanged."""
        self.push(event, payload)

    def lost(self) -> None:
        """PubSub removed this channel: the node lost the topic's continuity. The
        channel crashes (``phx_error``); the client rejoins with ``since`` and gets
        exactly what it missed, or ``recovered: false``."""
        self.subscribed = False
        self.socket.spawn(self.socket.crash(self, ChannelEvent.LOST))

    async def terminate(self, reason: str) -> None:
        """The channel ends: ``leave``, ``closed`` (socket gone), ``crash``, ``replaced``,
        ``lost`` (the node lost the topic's continuity; the client rejoins)."""

    # -- actions -----------------------------------------------------------------------
    async def subscribe(self) -> None:
        """Start receiving the topic's broadcasts now, before ``join`` returns.

        The socket subscribes every joined channel anyway; a ``join`` that reads
        history calls this first (after its authorization checks), so nothing
        published between the subscription and the history read is missed. Until the
        join reply is written, broadcasts are held back (the socket releases them,
        minus those already in the reply's history). Raises HistoryUnavailable when
        the broker cannot subscribe.
        """
        if not self.subscribed:
            await self.socket.endpoint.pubsub.subscribe(self.topic, self, hold=not self.joined)
            self.subscribed = True

    @property
    def node(self) -> str:
        return self.socket.endpoint.node

    def push(self, event: str, payload: Any) -> None:
        """Send an event to this client only."""
        self.socket.push(self.join_ref, self.topic, event, Encoded.of(payload))

    def reply(self, ref: Ref, reply: Reply) -> None:
        """Answer a push later (when ``handle_in`` returned None)."""
        self.socket.reply(self.join_ref, ref, self.topic, reply)

    def _store(self, event: str) -> HistoryPolicy | None:
        return self.socket.endpoint.history if event in self.history_events else None

    async def broadcast(self, event: str, payload: Any, *, key: str | None = None) -> None:
        """Send to every subscriber of this topic, on every node, this client included.

        Events named in ``history_events`` are stored first; if that fails,
        HistoryUnavailable is raised and nobody got the message. Its subclass
        HistoryTimeout means the outcome is unknown (handed to Redis, no answer before the
        push deadline; or stored with too few replicas in time, ``--redis-wait-replicas``).
        ``key``, an idempotency key, makes a stored broadcast happen once however often it
        is retried while the first copy is kept in the history.
        """
        await self.socket.endpoint.pubsub.broadcast(
            self.topic, event, payload, store=self._store(event), key=key
        )

    async def broadcast_from(self, event: str, payload: Any) -> None:
        """Send to every subscriber of this topic except this client."""
        await self.socket.endpoint.pubsub.broadcast(
            self.topic, event, payload, exclude=self, store=self._store(event)
        )

    async def track(self, key: str, meta: dict[str, Any]) -> str:
        """Track this client's presence in the topic under ``key`` (see Presence)."""
        presence = self.socket.endpoint.presence
        if presence is None:
            raise RuntimeError("this endpoint has no presence")
        await presence.push_state(self)
        return await presence.track(self, key, meta)

    async def history(self, since: Position | None = None) -> Recovery:
        """The topic's history after ``since`` (or its latest messages)."""
        endpoint = self.socket.endpoint
        recovery = await endpoint.pubsub.history(self.topic, since, endpoint.history)
        if not self.joined:
            self.joined_at = recovery.position
        return recovery

    async def recover(self, payload: Any) -> dict[str, Any]:
        """A join with history: ``return await self.recover(payload)`` from ``join``.

        Subscribes first, then reads the history after the client's ``since``
        (``{"offset": N, "epoch": E}`` in the join payload; without one, the latest
        messages) and returns the reply fields roost's clients rejoin with:
        ``history`` (stored payloads, each with its ``offset``), ``offset``, ``epoch``
        and ``recovered`` (False: the history after ``since`` is gone — a new epoch —
        so the client must not assume it has everything). Refuses the join with
        ``invalid since`` or ``temporarily unavailable`` (the broker could not read).
        """
        since = parse_since(payload.get("since") if isinstance(payload, dict) else None)
        try:
            await self.subscribe()  # before reading history: nothing falls in between
            recovery = await self.history(since)
        except HistoryUnavailable:
            raise JoinError("temporarily unavailable") from None
        return {
            "history": [orjson.Fragment(m.payload) for m in recovery.messages],
            "offset": recovery.position.offset,
            "epoch": recovery.position.epoch,
            "recovered": recovery.recovered,
        }

    async def page(self, payload: Any) -> Reply:
        """Older history, a page at a time: ``return await self.page(payload)`` from
        ``handle_in`` (the chat answers its ``history`` push with it).

        ``payload``: ``{"before": N, "limit": L, "epoch": E}`` — the offset of the
        oldest message the client holds, how many to read (1-100, default 50) and the
        epoch of its join reply. The ok reply: ``history`` (up to L stored payloads
        before N, oldest first, each with its ``offset``), ``epoch`` (the topic's),
        ``beginning`` (nothing older is kept) and ``reset`` (E is no longer the topic's
        epoch: its history is gone, no messages). Errors: ``invalid page``,
        ``temporarily unavailable`` (the broker could not read). Pushes are rate-limited
        per socket (``--msg-rate``), and a page is read from the topic's stream only.
        """
        request = parse_page(payload)
        if request is None:
            return Reply.error(INVALID_PAGE)
        before, limit, epoch = request
        endpoint = self.socket.endpoint
        try:
            page = await endpoint.pubsub.page(self.topic, before, limit, epoch, endpoint.history)
        except HistoryUnavailable:
            return Reply.error({"reason": "temporarily unavailable"})
        return Reply.ok(
            {
                "history": [orjson.Fragment(m.payload) for m in page.messages],
                "epoch": page.epoch,
                "beginning": page.beginning,
                "reset": page.reset,
            }
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.topic} join_ref={self.join_ref}>"
