"""The supervisor's rules on a fake clock (no processes), and the /metrics merge."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from roost.config import usable_cores
from roost.server.siblings import merge_expositions
from roost.workers._state import BadTransition, Event, State, step
from roost.workers.supervisor import MAX_DELAY, RESTART_DELAY, STABLE, Supervisor


class FakeProc:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.code: int | None = None
        self.signals: list[int] = []

    def poll(self) -> int | None:
        return self.code

    def send_signal(self, sig: int) -> None:
        self.signals.append(sig)

    def kill(self) -> None:
        self.code = -9


class Group:
    def __init__(self, count: int = 2) -> None:
        self.now = 0.0
        self.procs: list[FakeProc] = []
        self.takeovers: list[tuple[int, str | None]] = []
        self.ready: set[int] = set()
        self.sup = Supervisor(count, self.start, lambda k: k in self.ready, clock=lambda: self.now)

    def start(self, index: int, takeover: str | None) -> tuple[FakeProc, str]:
        proc = FakeProc(100 + len(self.procs))
        self.procs.append(proc)
        self.takeovers.append((index, takeover))
        return proc, f"claim-{proc.pid}"

    def at(self, now: float) -> None:
        self.now = now
        self.sup.tick()

    def proc_of(self, index: int) -> FakeProc:
        proc = self.sup.slots[index - 1].proc
        assert isinstance(proc, FakeProc)
        return proc


def test_start_ready_and_restart_with_backoff_and_takeover() -> None:
    g = Group()
    g.at(0.0)
    assert [s.state for s in g.sup.slots] == [State.STARTING, State.STARTING]
    g.ready = {1, 2}
    g.at(0.1)
    assert all(s.state is State.RUNNING for s in g.sup.slots)
    g.proc_of(1).code = -9  # crashed after running a while
    g.at(STABLE + 5)
    slot = g.sup.slots[0]
    assert slot.state is State.BACKOFF and slot.due == STABLE + 5 + RESTART_DELAY
    g.at(STABLE + 5 + RESTART_DELAY / 2)
    assert slot.state is State.BACKOFF  # not yet
    g.at(STABLE + 5 + RESTART_DELAY)
    assert slot.state is State.STARTING
    assert g.takeovers[-1] == (1, "claim-100")  # the new process takes the dead one's name


def test_a_crash_loop_backs_off_doubling_to_the_cap() -> None:
    g = Group(1)
    g.ready = {1}
    g.at(0.0)
    g.at(0.0)
    delays = []
    for _ in range(12):
        g.proc_of(1).code = 1
        g.at(g.now + 1.0)  # each crash within STABLE of its start
        slot = g.sup.slots[0]
        delays.append(slot.due - g.now)
        g.at(slot.due)
        g.at(slot.due)  # started and ready again
    assert delays[:4] == [RESTART_DELAY, 2 * RESTART_DELAY, 4 * RESTART_DELAY, 8 * RESTART_DELAY]
    assert max(delays) == MAX_DELAY and delays[-1] == MAX_DELAY
    g.proc_of(1).code = 1
    g.at(g.now + STABLE + 1)  # a crash after a stable run starts over
    assert g.sup.slots[0].due - g.now == RESTART_DELAY


def test_a_worker_that_never_starts_is_fatal_not_a_loop() -> None:
    g = Group()
    g.at(0.0)
    g.proc_of(2).code = 2  # e.g. its port or node name is taken
    g.at(0.5)
    assert g.sup.fatal == 2 and g.sup.stopping
    assert g.proc_of(1).signals == [signal.SIGTERM]
    g.proc_of(1).code = 0
    g.at(1.0)
    assert g.sup.done and len(g.procs) == 2  # nothing restarted


def test_stop_signals_each_live_worker_once_and_kill_ends_the_rest() -> None:
    g = Group(3)
    g.ready = {1, 2, 3}
    g.at(0.0)
    g.at(0.1)
    g.proc_of(3).code = -9
    g.at(20.0)  # w3 in back-off
    g.sup.stop(signal.SIGTERM)
    g.sup.stop(signal.SIGTERM)
    assert g.proc_of(1).signals == [signal.SIGTERM] and g.proc_of(2).signals == [signal.SIGTERM]
    assert g.sup.slots[2].state is State.STOPPED
    g.at(100.0)
    assert len(g.procs) == 3  # no restart while stopping
    g.proc_of(1).code = 0
    g.at(101.0)
    assert not g.sup.done
    g.sup.kill()
    g.at(102.0)
    assert g.sup.done


def test_transitions_outside_the_table_raise() -> None:
    assert step(State.PENDING, Event.DUE) is State.STARTING
    with pytest.raises(BadTransition):
        step(State.STOPPED, Event.DUE)
    with pytest.raises(BadTransition):
        step(State.RUNNING, Event.READY)


W1 = """# HELP roost_connections Open sockets.
# TYPE roost_connections gauge
roost_connections{node="n-w1"} 3.0
# HELP roost_delivery_lag_seconds From the origin node's publish to delivery on this node.
# TYPE roost_delivery_lag_seconds histogram
roost_delivery_lag_seconds_bucket{le="0.001"} 2.0
roost_delivery_lag_seconds_bucket{le="+Inf"} 5.0
roost_delivery_lag_seconds_count 5.0
roost_delivery_lag_seconds_sum 0.25
# HELP roost_delivery_lag_seconds_created From the origin node's publish to delivery on this node.
# TYPE roost_delivery_lag_seconds_created gauge
roost_delivery_lag_seconds_created 200.0
"""
W2 = W1.replace("n-w1", "n-w2").replace("} 3.0", "} 4.0").replace("200.0", "100.0")


def test_merge_keeps_each_workers_series_and_sums_shared_ones() -> None:
    families = {f.name: f for f in merge_expositions([W1, W2])}
    conns = {s.labels["node"]: s.value for s in families["roost_connections"].samples}
    assert conns == {"n-w1": 3.0, "n-w2": 4.0}
    samples = families["roost_delivery_lag_seconds"].samples
    lag = {(s.name, s.labels.get("le")): s.value for s in samples}
    assert lag[("roost_delivery_lag_seconds_bucket", "0.001")] == 4.0
    assert lag[("roost_delivery_lag_seconds_count", None)] == 10.0
    assert lag[("roost_delivery_lag_seconds_sum", None)] == 0.5
    created = families["roost_delivery_lag_seconds_created"].samples
    assert [s.value for s in created] == [100.0]


def test_auto_counts_the_cores_a_cgroup_quota_allows(tmp_path: Path) -> None:
    limit = tmp_path / "cpu.max"
    cores = usable_cores(str(tmp_path / "missing"))
    assert cores >= 1
    limit.write_text("max 100000\n")
    assert usable_cores(str(limit)) == cores
    limit.write_text("150000 100000\n")  # 1.5 CPUs: two workers
    assert usable_cores(str(limit)) == min(cores, 2)
    limit.write_text("50000 100000\n")
    assert usable_cores(str(limit)) == 1
    limit.write_text("garbage\n")
    assert usable_cores(str(limit)) == cores
