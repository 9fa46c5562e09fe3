"""One option of ``roost serve``: its flag, environment variable, help and bounds (the CLI
is built from these), and the small helpers the option groups share."""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Option:
    flag: str
    env: str
    help: str = ""
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    multiple: bool = False
    is_flag: bool = False
    show_default: bool = True


def opt(default: Any, flag: str, env: str, help: str = "", **kw: Any) -> Any:
    return field(default=default, metadata={"option": Option(flag, env, help, **kw)})


def default_of(function: Any, name: str) -> Any:
    """A parameter's default where it is used: defaults are never restated here."""
    return inspect.signature(function).parameters[name].default


def expand(values: tuple[str, ...]) -> list[str]:
    """Repeated options and comma lists (the env var form) alike."""
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def usable_cores(cgroup: str = "/sys/fs/cgroup/cpu.max") -> int:
    """The cores this process may run on (its CPU affinity), fewer under a cgroup v2 CPU
    quota (a container's ``cpus`` / a pod's CPU limit): ``ceil(quota / period)``."""
    if hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
    else:
        cores = os.cpu_count() or 1
    try:
        with open(cgroup) as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            cores = min(cores, -(-int(quota) // int(period)))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota here
    return max(1, cores)
