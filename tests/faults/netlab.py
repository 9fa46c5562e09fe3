"""Hosts in network namespaces, and paths between them cut silently (issue 26).

``Net`` makes a few "hosts" on this machine, each a network namespace joined to the test's
own namespace (the machine's, where the clients stay) by a veth pair; the machine routes
between them. ``cut(a, b)`` drops every packet between two hosts with iptables (no RST, no
ICMP: the packets vanish, as on a network path that died), ``cut_one_way(a, b)`` only those
from ``a`` to ``b``, ``heal()`` takes every cut back. Processes run inside a host with
``ip netns exec``, which execs the command, so their PID is the process's own and tests
stop them by PID as everywhere else.

Addresses are 10.N.i.2 for host i (10.N.i.1 is the machine's end of its veth), in a /16 of
this Net's own; nothing leaves the machine (the namespaces have no other link). Root and
``ip`` (iproute2) and ``iptables`` are needed: ``available()`` says why not, and
scripts/test installs iptables.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
from dataclasses import dataclass, field

_COUNTER = itertools.count()


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=30, check=check)


def available() -> str | None:
    """None when namespaces and iptables can be used here, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"{tool} is missing (scripts/test installs iproute2 and iptables)"
    name = f"rnprobe{os.getpid() % 100000}"
    probe = _run("ip", "netns", "add", name, check=False)
    if probe.returncode != 0:
        return f"ip netns add failed: {probe.stderr.strip()}"
    _run("ip", "netns", "del", name, check=False)
    probe = _run("iptables", "-w", "-L", "FORWARD", "-n", check=False)
    if probe.returncode != 0:
        return f"iptables does not work here: {probe.stderr.strip()}"
    return None


@dataclass
class Host:
    name: str
    netns: str
    ip: str
    gateway: str

    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.netns]

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run(*self.exec_prefix(), *cmd, check=check)


@dataclass
class Net:
    """A small network of hosts; ``close()`` removes every namespace, link and rule."""

    tag: str = field(default_factory=lambda: f"{os.getpid() % 10000}{next(_COUNTER)}")
    hosts: dict[str, Host] = field(default_factory=dict)
    cuts: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        # A /16 of its own per Net (pid and counter), so parallel test processes never meet.
        self.octet = 100 + (os.getpid() * 7 + int(self.tag[-2:] or 0)) % 150
        self.chain = f"ROOST-{self.tag}"
        _run("sysctl", "-qw", "net.ipv4.ip_forward=1")
        _run("iptables", "-w", "-N", self.chain)
        # Our chain first in FORWARD: its DROPs are the cuts; traffic of this Net that is
        # not cut is accepted there (whatever the machine's FORWARD policy says).
        _run("iptables", "-w", "-I", "FORWARD", "1", "-j", self.chain)
        self._accept_rule()

    @property
    def subnet(self) -> str:
        return f"10.{self.octet}.0.0/16"

    def _accept_rule(self) -> None:
        _run("iptables", "-w", "-A", self.chain, "-s", self.subnet, "-d", self.subnet,
             "-j", "ACCEPT")  # fmt: skip

    def host(self, name: str) -> Host:
        index = len(self.hosts) + 1
        netns = f"roost-{self.tag}-{name}"
        outer, inner = f"rv{self.tag}h{index}", f"rv{self.tag}n{index}"
        gateway, ip = f"10.{self.octet}.{index}.1", f"10.{self.octet}.{index}.2"
        _run("ip", "netns", "add", netns)
        host = Host(name, netns, ip, gateway)
        self.hosts[name] = host
        _run("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
        _run("ip", "link", "set", inner, "netns", netns)
        _run("ip", "addr", "add", f"{gateway}/24", "dev", outer)
        _run("ip", "link", "set", outer, "up")
        host.run("ip", "link", "set", "lo", "up")
        host.run("ip", "addr", "add", f"{ip}/24", "dev", inner)
        host.run("ip", "link", "set", inner, "up")
        host.run("ip", "route", "add", "default", "via", gateway)
        return host

    def _drop(self, src: Host, dst: Host) -> None:
        _run("iptables", "-w", "-I", self.chain, "1", "-s", src.ip, "-d", dst.ip, "-j", "DROP")
        self.cuts.append((src.name, dst.name))

    def cut(self, a: Host, b: Host) -> None:
        """Every packet between ``a`` and ``b`` vanishes, both ways."""
        self._drop(a, b)
        self._drop(b, a)

    def cut_one_way(self, a: Host, b: Host) -> None:
        """Packets from ``a`` to ``b`` vanish; ``b``'s packets still reach ``a``."""
        self._drop(a, b)

    def cut_tcp(self, src: Host, dst: Host, dport: int) -> None:
        """Packets from ``src`` to ``dst``'s TCP port ``dport`` vanish: one connection's
        one direction (e.g. Redis → a node's subscriber connection), the rest flows."""
        _run("iptables", "-w", "-I", self.chain, "1", "-s", src.ip, "-d", dst.ip,
             "-p", "tcp", "--dport", str(dport), "-j", "DROP")  # fmt: skip
        self.cuts.append((src.name, f"{dst.name}:{dport}"))

    def isolate(self, a: Host) -> None:
        """``a`` is cut from every other host (the clients on the machine still reach it)."""
        for other in self.hosts.values():
            if other is not a:
                self.cut(a, other)

    def heal(self) -> None:
        _run("iptables", "-w", "-F", self.chain)
        self._accept_rule()
        self.cuts.clear()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            _run("iptables", "-w", "-D", "FORWARD", "-j", self.chain, check=False)
            _run("iptables", "-w", "-F", self.chain, check=False)
            _run("iptables", "-w", "-X", self.chain, check=False)
        for host in self.hosts.values():
            # Deleting the namespace deletes its end of the veth, and so the pair.
            _run("ip", "netns", "del", host.netns, check=False)
        self.hosts.clear()


def leftover_namespaces() -> list[str]:
    """Namespaces a Net of this process left behind (none, after ``close``)."""
    out = _run("ip", "netns", "list", check=False).stdout
    mine = f"roost-{os.getpid() % 10000}"
    return [line.split()[0] for line in out.splitlines() if line.startswith(mine)]
