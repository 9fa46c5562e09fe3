"""Who the client is: its address, seen through the proxies the operator trusts.

The direct peer is the client unless it is a trusted proxy (``--trusted-proxy CIDR``,
none by default). Then the client is the right-most address of ``X-Forwarded-For``
that is not itself a trusted proxy: each trusted proxy appends the address it saw, so
the entries to the right of that one were written by proxies we trust, and anything
to its left was written by the client and may be forged. ``X-Forwarded-For`` from an
untrusted peer is never read. An entry that is not an IP address ends the walk (the
proxy nearest to it is taken as the client): only a client can have written it.

Limits count clients by ``client_key``: an IPv4 address, or the /64 an IPv6 address
belongs to (one host is usually given a whole /64, so per-address IPv6 limits would be
one subnet's worth of addresses away from useless).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_address(text: str) -> Address | None:
    """An IP address (IPv4-mapped IPv6 as IPv4; ``[v6]:port``, ``v4:port`` too), or None."""
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [2001:db8::1]:443
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # 192.0.2.1:443
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_key(address: Address) -> str:
    """What per-client limits count: the IPv4 address, or the IPv6 /64."""
    if isinstance(address, ipaddress.IPv4Address):
        return str(address)
    return str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))


class TrustedProxies:
    """The proxies whose ``X-Forwarded-For`` is believed (none by default)."""

    __slots__ = ("networks",)

    def __init__(self, cidrs: Iterable[str] = ()) -> None:
        networks: list[Network] = []
        for cidr in cidrs:
            try:
                networks.append(ipaddress.ip_network(cidr.strip(), strict=False))
            except ValueError:
                raise ValueError(f"--trusted-proxy: not an address or CIDR: {cidr!r}") from None
        self.networks = tuple(networks)

    def trusts(self, address: Address) -> bool:
        return any(address in network for network in self.networks)

    def client(self, peer: str | None, forwarded_for: Iterable[str] = ()) -> Address | None:
        """The client's address: the peer, or behind trusted proxies the right-most
        untrusted ``X-Forwarded-For`` entry (``forwarded_for``: every such header, in order)."""
        address = parse_address(peer) if peer else None
        if address is None or not self.networks or not self.trusts(address):
            return address
        hops = [hop for header in forwarded_for for hop in header.split(",")]
        for hop in reversed(hops):
            seen = parse_address(hop)
            if seen is None:
                return address  # garbage: only a client writes that; the proxy after it is it
            address = seen
            if not self.trusts(address):
                return address
        return address  # every hop a trusted proxy: the farthest one is the client
