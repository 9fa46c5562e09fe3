"""Issue 26, item 2: every Redis key and channel of a topic lands in one Cluster slot.

A Cluster hashes only the part of a name between its first ``{`` and the first ``}``
after it, when that part is not empty. roost names a topic's keys ``...:{<topic>}``: a
topic that is empty or starts with ``}`` has an empty tag, each name is then hashed
whole, and a topic's stream, meta, presence keys and channel land in different slots
(its scripts fail with CROSSSLOT). A ``{`` or ``}`` in the prefix, the app name or a
node name moves the tag too: those are refused. Slots here are redis-py's own
``key_slot`` (CRC16 with the hash-tag rule, as the server computes them).
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from click.testing import CliRunner
from redis.crc import key_slot

from roost.brokers.redis.keys import Keys, check_node
from roost.brokers.redis.presence_cluster import ClusterPresence
from roost.cli import main
from roost.config import ServeConfig

KEYS = Keys()

# Ordinary topics and every shape that plays with the hash-tag rule.
TOPICS = [
    "rooms:lobby",
    "realtime:x",
    "",
    "}",
    "}}",
    "}x",
    "}rooms:lobby",
    "a}b",
    "a}",
    "{",
    "{}",
    "{x}",
    "a{b}c",
    "x{",
    "~",
    "~{~}",
    "~{~}x",
    "~{~}}x",
    "}x}",
    "rooms:\u00e9t\u00e9",
]


def names(keys: Keys, topic: str) -> dict[str, str]:
    """Every name roost gives a topic in Redis, by kind."""
    registry = ClusterPresence(_no_client(), keys).registry(topic)
    return {
        "channel": keys.topic_channel(topic),
        "stream": keys.history_stream(topic),
        "meta": keys.history_meta(topic),
        "presence": keys.presence_hash(topic),
        "expiries": keys.presence_expiries(topic),
        "registry": registry,
    }


def _no_client() -> Any:
    return None  # ClusterPresence.registry reads no Redis


def slot(name: str) -> int:
    return int(key_slot(name.encode()))


@pytest.mark.parametrize("topic", TOPICS)
def test_every_name_of_a_topic_is_in_one_slot(topic: str) -> None:
    slots = {kind: slot(name) for kind, name in names(KEYS, topic).items()}
    assert len(set(slots.values())) == 1, (topic, slots)


def test_two_topics_never_share_a_name() -> None:
    seen: dict[str, tuple[str, str]] = {}
    for topic in TOPICS:
        for kind, name in names(KEYS, topic).items():
            if kind == "registry":
                continue  # shared by design: one per slot, holding many topics
            assert name not in seen, (topic, kind, seen.get(name))
            seen[name] = (topic, kind)


def test_ordinary_topics_keep_their_names() -> None:
    """Names already in Redis stay valid: a topic that was safe is named as before."""
    assert KEYS.topic_channel("rooms:lobby") == "roost:chat:t:{rooms:lobby}"
    assert KEYS.history_stream("a}b") == "roost:chat:h:{a}b}"
    assert KEYS.history_meta("{x") == "roost:chat:m:{{x}"
    assert KEYS.presence_hash("rooms:x") == "roost:chat:p:{rooms:x}"
    assert KEYS.presence_expiries("rooms:x") == "roost:chat:pz:{rooms:x}"


@pytest.mark.parametrize("topic", TOPICS)
def test_a_channel_names_its_topic_back(topic: str) -> None:
    assert KEYS.topic_of(KEYS.topic_channel(topic)) == topic


def test_other_channels_name_no_topic() -> None:
    for channel in ["roost:chat", "roost:chat:probe:n1", "roost:chat:t:x", "other:t:{x}"]:
        assert KEYS.topic_of(channel) is None, channel


@pytest.mark.parametrize(
    ("prefix", "app"), [("ro{ost", "chat"), ("roost", "ch}at"), ("{roost}", "chat")]
)
def test_a_prefix_or_app_with_braces_is_refused(prefix: str, app: str) -> None:
    with pytest.raises(ValueError, match=r"must not contain \{ or \}"):
        Keys(prefix, app)
    with pytest.raises(ValueError, match=r"must not contain \{ or \}"):
        ServeConfig(redis_url="redis://127.0.0.1:1", redis_prefix=prefix, app_name=app)


@pytest.mark.parametrize("node", ["n{1", "n}1", "{n1}"])
def test_a_node_name_with_braces_is_refused(node: str) -> None:
    with pytest.raises(ValueError, match="node name"):
        check_node(node)
    with pytest.raises(ValueError, match="node name"):
        ServeConfig(redis_url="redis://127.0.0.1:1", node=node)


def test_probe_channels_of_any_node_keep_their_slot_tag() -> None:
    """A cluster link's probe channel is ``<probe_channel(node)>:{<tag>}``: with braces
    refused in node names, its slot is the tag's."""
    for node, tag in itertools.product(["n1", "host-123", "a:b"], ["3f", "1a2b"]):
        check_node(node)
        assert slot(f"{KEYS.probe_channel(node)}:{{{tag}}}") == slot(f"{{{tag}}}")


@pytest.mark.parametrize(
    "args",
    [
        ["--node", "n{1}"],
        ["--redis-prefix", "ro{ost"],
        ["--app", "chat}"],
    ],
)
def test_roost_serve_refuses_braces_in_redis_names_with_exit_2(args: list[str]) -> None:
    out = CliRunner().invoke(main, ["serve", "--redis", "redis://127.0.0.1:1", *args])
    assert out.exit_code == 2, out.output
    assert "must not contain { or }" in out.output
