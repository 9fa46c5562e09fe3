"""phoenix_pubsub_redis's messages: what Phoenix nodes PUBLISH on ``phx:<adapter>``.

Version 3 (phoenix_pubsub_redis 3.x, on Phoenix.PubSub 2.x), on the channel
``phx:Elixir.<PubSub name>.Adapter`` (``Phoenix.PubSub`` names its adapter
``<name>.Adapter`` and the Redis adapter publishes on ``"phx:#{adapter_name}"``)::

    {3, :except | :only, node_name, topic, message, dispatcher}

``:except`` (``broadcast``): every node but ``node_name`` (the origin) delivers;
``:only`` (``direct_broadcast``): only ``node_name`` does. ``node_name`` is the
adapter's ``:node_name`` option (a binary, or an atom, ``node()`` by default),
compared as a term. A channel broadcast's ``message`` is a
``%Phoenix.Socket.Broadcast{topic, event, payload}`` (a map whose ``:__struct__`` is
``Phoenix.Socket.Broadcast``) and its dispatcher ``Phoenix.Channel.Server`` (it
encodes once per serializer and fastlanes). ``payload`` must be a map or
``{:binary, data}`` (Phoenix's serializers raise on anything else). The whole term may
be zlib-compressed (``:compression_level``, tag 80).

Version 1 (phoenix_pubsub_redis 2.1.x, on Phoenix.PubSub 1.x; the article's), on
``phx:Elixir.<PubSub name>``::

    {1, node_ref, fastlane, pool_size, from_pid, topic, message}

``node_ref`` is 24 random bytes per node; every node delivers (its own node skips
``from_pid``). roost reads it (``parse``) and never writes it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import orjson

from ...protocol import Encoded
from ...protocol.etf import DEFAULT, Atom, EtfError, Limits, decode, encode
from ...pubsub import Envelope

VSN = 3
LEGACY_VSN = 1
BROADCAST = Atom("Elixir.Phoenix.Socket.Broadcast")
CHANNEL_SERVER = Atom("Elixir.Phoenix.Channel.Server")
EXCEPT, ONLY = Atom("except"), Atom("only")
STRUCT = Atom("__struct__")
_TOPIC, _EVENT, _PAYLOAD = Atom("topic"), Atom("event"), Atom("payload")
_BINARY = Atom("binary")


class WireError(EtfError):
    """A term that is not a phoenix_pubsub_redis message, or a payload with no JSON."""


def module(name: str) -> str:
    """``Chat.PubSub`` -> ``Elixir.Chat.PubSub`` (an Elixir alias as its atom)."""
    return name if name.startswith("Elixir.") else f"Elixir.{name}"


def channel_for(pubsub: str) -> str:
    """The Redis channel of phoenix_pubsub_redis 3.x for a PubSub ``name:``."""
    return f"phx:{module(pubsub)}.Adapter"


def legacy_channel(pubsub: str) -> str:
    """The channel of phoenix_pubsub_redis 2.1.x (the article's ``phx:Elixir.Chat.PubSub``)."""
    return f"phx:{module(pubsub)}"


@dataclass(frozen=True, slots=True)
class PhoenixMessage:
    vsn: int
    mode: str  # "except", "only", or "all" (version 1)
    node: Any  # the node_name term (version 3); the node_ref bytes (version 1)
    topic: str
    message: Any  # the term as decoded
    dispatcher: Any

    def for_node(self, name: str) -> bool:
        """Would a phoenix_pubsub_redis node called ``name`` deliver it locally?"""
        if self.mode == "all":
            return True
        ours = node_text(self.node) == name
        return ours if self.mode == "only" else not ours


def parse(data: bytes, limits: Limits = DEFAULT) -> PhoenixMessage:
    """Decode one message (either version); raises EtfError/WireError."""
    term = decode(data, limits)
    if isinstance(term, tuple) and len(term) == 6 and term[0] == VSN:
        _, mode, node, topic, message, dispatcher = term
        if mode not in (EXCEPT, ONLY):
            raise WireError(f"unknown mode {mode!r}")
        return PhoenixMessage(VSN, mode.name, node, _text(topic, "topic"), message, dispatcher)
    if isinstance(term, tuple) and len(term) == 7 and term[0] == LEGACY_VSN:
        _, ref, fastlane, _pool, _from, topic, message = term
        return PhoenixMessage(LEGACY_VSN, "all", ref, _text(topic, "topic"), message, fastlane)
    raise WireError("not a phoenix_pubsub_redis message (version 3 or 1 tuple)")


def node_text(term: Any) -> str | None:
    """A node name as text (a binary or an atom); None for anything else."""
    if isinstance(term, Atom):
        return term.name
    if isinstance(term, bytes):
        return term.decode("utf-8", "replace")
    return None


def broadcast_of(message: Any) -> tuple[str, str, Any] | None:
    """(topic, event, payload term) of a ``%Phoenix.Socket.Broadcast{}``; None for any
    other message (Phoenix.Tracker's, LiveView's, an application's own)."""
    if not isinstance(message, dict) or message.get(STRUCT) != BROADCAST:
        return None
    topic, event = message.get(_TOPIC), message.get(_EVENT)
    if not isinstance(topic, bytes) or not isinstance(event, bytes):
        raise WireError("Phoenix.Socket.Broadcast without a binary topic and event")
    return _text(topic, "topic"), _text(event, "event"), message.get(_PAYLOAD)


def payload_of(term: Any) -> Encoded:
    """The payload as roost forwards it: the JSON Phoenix's serializer would write
    (Jason: atom and binary keys as strings, nil/true/false, other atoms as strings),
    or the bytes of ``{:binary, data}``."""
    if isinstance(term, tuple) and len(term) == 2 and term[0] == _BINARY:
        if not isinstance(term[1], bytes):
            raise WireError("{:binary, data} whose data is not a binary")
        return Encoded(term[1], True)
    if not isinstance(term, dict):
        raise WireError("a broadcast payload must be a map or {:binary, data}")
    value = to_json(term)
    try:
        return Encoded(orjson.dumps(value))
    except TypeError:  # an integer past 64 bits: JSON has it (Jason writes it), orjson not
        return Encoded(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


def to_json(term: Any) -> Any:
    if term is None or isinstance(term, bool | int | float):
        return term
    if isinstance(term, bytes):
        return _text(term, "payload string")
    if isinstance(term, Atom):
        return term.name
    if isinstance(term, list):
        return [to_json(item) for item in term]
    if isinstance(term, dict):
        if STRUCT in term:
            raise WireError("a struct in a payload (its JSON needs its Jason.Encoder)")
        return {_key(k): to_json(v) for k, v in term.items()}
    raise WireError(f"no JSON for a {type(term).__name__} in a payload")


def _key(term: Any) -> str:
    if isinstance(term, bytes):
        return _text(term, "payload key")
    if isinstance(term, Atom):
        return term.name
    if isinstance(term, int) and not isinstance(term, bool):
        return str(term)
    raise WireError(f"no JSON key for a {type(term).__name__}")


def _text(value: Any, what: str) -> str:
    if not isinstance(value, bytes):
        raise WireError(f"{what} is not a binary")
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise WireError(f"{what} is not UTF-8") from None


def from_json(value: Any, atom_keys: bool = False) -> Any:
    """A JSON value as Phoenix holds a decoded one: strings as binaries, string keys
    (or atom keys, ``atom_keys``, as an Elixir application's own maps), null as nil."""
    if isinstance(value, dict):
        return {
            (Atom(k) if atom_keys else k.encode()): from_json(v, atom_keys)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [from_json(v, atom_keys) for v in value]
    if isinstance(value, str):
        return value.encode()
    return value


def broadcast_term(topic: str, event: str, payload: Encoded, atom_keys: bool = False) -> Any:
    """``%Phoenix.Socket.Broadcast{}`` for a roost broadcast; WireError for a payload
    Phoenix cannot fastlane (JSON that is not an object)."""
    if payload.binary:
        body: Any = (_BINARY, payload.data)
    else:
        try:
            body = from_json(orjson.loads(payload.data), atom_keys)
        except orjson.JSONDecodeError as exc:
            raise WireError(f"payload is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise WireError("Phoenix broadcasts carry a JSON object (or binary) payload")
    return {
        STRUCT: BROADCAST,
        _TOPIC: topic.encode(),
        _EVENT: event.encode(),
        _PAYLOAD: body,
    }


def encode_broadcast(
    node: str,
    topic: str,
    event: str,
    payload: Encoded,
    *,
    mode: str = "except",
    compressed: int = 0,
    atom_keys: bool = False,
) -> bytes:
    """The bytes phoenix_pubsub_redis 3.x publishes for ``Endpoint.broadcast``
    (``mode="except"``, ``node`` the origin) or a direct broadcast (``"only"``,
    ``node`` the target)."""
    term = (
        VSN,
        EXCEPT if mode == "except" else ONLY,
        node.encode(),
        topic.encode(),
        broadcast_term(topic, event, payload, atom_keys),
        CHANNEL_SERVER,
    )
    return encode(term, compressed=compressed)


def envelope_of(msg: PhoenixMessage) -> Envelope | None:
    """The roost envelope for a Broadcast message (None: some other message)."""
    found = broadcast_of(msg.message)
    if found is None:
        return None
    topic, event, payload = found
    if topic != msg.topic:
        raise WireError("a Broadcast whose topic is not the one it was published on")
    origin = node_text(msg.node) if msg.mode == "except" else None
    return Envelope(origin or "phoenix", 0, topic, event, payload_of(payload))


def describe(msg: PhoenixMessage, found: tuple[str, str, Any] | None) -> dict[str, Any]:
    """A message for ``roost inspect --wire phoenix --json``: its fields, the payload
    as the JSON a browser would get (None when it has none), the message as Elixir
    prints it."""
    from ...protocol.elixir_inspect import inspect

    payload: Any = None
    if found is not None:
        try:
            encoded = payload_of(found[2])
            payload = (
                encoded.data.decode("latin-1") if encoded.binary else orjson.loads(encoded.data)
            )
        except WireError:
            payload = None
    node = (
        node_text(msg.node)
        if msg.vsn == VSN
        else msg.node.hex()
        if isinstance(msg.node, bytes)
        else None
    )
    return {
        "vsn": msg.vsn,
        "mode": msg.mode,
        "node": node,
        "topic": msg.topic,
        "event": found[1] if found is not None else None,
        "payload": payload,
        "binary": bool(found is not None and isinstance(found[2], tuple)),
        "dispatcher": inspect(msg.dispatcher),
        "message": inspect(msg.message),
    }
