"""CgroupLimit: the resources a container may use, checked when built.

    CgroupLimit(memory="256M", memory_swap="256M", cpu=0.5, pids=64,
                io_weight=100, cpuset="0")

Every field is optional (None: no limit).  The values are those of cgroup
v2; the v1 backend converts them (v1.py).  A bad value raises
ConfigError naming the field ("CgroupLimit.memory") at construction.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping

import attrs

from isolate.errors import ConfigError
from isolate._util.units import parse_size

_PREFIX = "CgroupLimit."


#: Below this a container cannot even start its processes; the kernel's OOM
#: killer would fire during exec (Docker refuses less too).
MIN_MEMORY = 6 << 20


def _size(name: str):
    def convert(value: int | str | None) -> int | None:
        return None if value is None else parse_size(value, _PREFIX + name)
    return convert


def _memory(value: int | str | None) -> int | None:
    size = _size("memory")(value)
    if size is not None and size < MIN_MEMORY:
        raise ConfigError(_PREFIX + "memory", f"{value!r} is below the minimum of 6M "
                                              f"({MIN_MEMORY} bytes) a container needs to start")
    return size


def _int_in(name: str, low: int, high: int):
    def convert(value: int | None) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ConfigError(_PREFIX + name, f"expected an int from {low} to {high}, got {value!r}")
        return value
    return convert


def _cpu(value: float | int | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 4096:
        raise ConfigError(_PREFIX + "cpu", f"expected a positive number of CPUs (0.5 = half of one), "
                                           f"got {value!r}")
    return float(value)


_CPU_LIST = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")


def _cpu_list(name: str):
    def convert(value: str | int | None) -> str | None:
        if value is None:
            return None
        text = str(value).replace(" ", "")
        if isinstance(value, bool) or not _CPU_LIST.match(text):
            raise ConfigError(_PREFIX + name, f"expected a list such as '0-3,6', got {value!r}")
        for part in text.split(","):
            low, _, high = part.partition("-")
            if high and int(high) < int(low):
                raise ConfigError(_PREFIX + name, f"range {part!r} runs backwards")
        return text
    return convert


_IO_KEYS = ("rbps", "wbps", "riops", "wiops")
_DEVICE = re.compile(r"^\d+:\d+$")


def _io_max(value: Mapping[str, Mapping[str, int | str]] | None) -> tuple[tuple[str, tuple[tuple[str, int], ...]], ...]:
    """{"8:0": {"rbps": "10M", "wiops": 100}} as sorted tuples (hashable)."""
    if not value:
        return ()
    field = _PREFIX + "io_max"
    devices = []
    for device, limits in value.items():
        if not isinstance(device, str) or not _DEVICE.match(device):
            raise ConfigError(field, f"devices are 'MAJOR:MINOR', got {device!r}")
        if not isinstance(limits, Mapping) or not limits:
            raise ConfigError(field, f"expected limits for {device} such as {{'rbps': '10M'}}")
        items = []
        for key, amount in limits.items():
            if key not in _IO_KEYS:
                raise ConfigError(field, f"unknown key {key!r} for {device}; expected {', '.join(_IO_KEYS)}")
            items.append((key, parse_size(amount, f"{field}[{device}].{key}")))
        devices.append((device, tuple(sorted(items))))
    return tuple(sorted(devices))


def _on_unavailable(value: str) -> str:
    if value not in ("fail", "warn"):
        raise ConfigError(_PREFIX + "on_unavailable", f"expected 'fail' or 'warn', got {value!r}")
    return value


@attrs.frozen
class CgroupLimit:
    """Resource limits of a container's cgroup; None leaves a resource unlimited.

    memory, memory_high, memory_swap: bytes or sizes ("256M"); memory_swap
    is memory plus swap, as in Docker (equal to `memory`: no swap).
    cpu: CPUs' worth of time (0.5 = half of one CPU) per `cpu_period` µs.
    cpu_weight, io_weight: relative shares, 1 to 10000 (cgroup v2 scale).
    pids: the most processes and threads at once.
    io_max: {"MAJ:MIN": {"rbps"|"wbps"|"riops"|"wiops": amount}}.
    cpuset, cpuset_mems: CPUs and memory nodes ("0-3,6").
    on_unavailable: when a limit cannot be applied (no such controller, no
    writable cgroup for an unprivileged caller): "fail" (raise
    CgroupError) or "warn" (run without it, with a warning that says why).
    """

    memory: int | None = attrs.field(default=None, converter=_memory)
    memory_high: int | None = attrs.field(default=None, converter=_size("memory_high"))
    memory_swap: int | None = attrs.field(default=None, converter=_size("memory_swap"))
    cpu: float | None = attrs.field(default=None, converter=_cpu)
    cpu_period: int = attrs.field(default=100_000, converter=_int_in("cpu_period", 1000, 1_000_000))
    cpu_weight: int | None = attrs.field(default=None, converter=_int_in("cpu_weight", 1, 10_000))
    pids: int | None = attrs.field(default=None, converter=_int_in("pids", 1, 2**31))
    io_weight: int | None = attrs.field(default=None, converter=_int_in("io_weight", 1, 10_000))
    io_max: tuple = attrs.field(default=None, converter=_io_max)
    cpuset: str | None = attrs.field(default=None, converter=_cpu_list("cpuset"))
    cpuset_mems: str | None = attrs.field(default=None, converter=_cpu_list("cpuset_mems"))
    on_unavailable: str = attrs.field(default="fail", converter=_on_unavailable)

    def __attrs_post_init__(self) -> None:
        if self.memory_swap is not None:
            if self.memory is None:
                raise ConfigError(_PREFIX + "memory_swap", "needs memory (it is memory plus swap)")
            if self.memory_swap < self.memory:
                raise ConfigError(_PREFIX + "memory_swap",
                                  f"{self.memory_swap} is below memory ({self.memory}): it counts both")

    def controllers(self) -> frozenset[str]:
        """The cgroup controllers these limits need (v2 names)."""
        wanted = {"memory": (self.memory, self.memory_high, self.memory_swap),
                  "cpu": (self.cpu, self.cpu_weight), "pids": (self.pids,),
                  "io": (self.io_weight, self.io_max or None), "cpuset": (self.cpuset, self.cpuset_mems)}
        return frozenset(name for name, values in wanted.items() if any(v is not None for v in values))

    def check_host(self) -> None:
        """What only this host can tell: raises ConfigError for more CPUs
        than it has, or CPUs and memory nodes it does not have online."""
        cpus = os.cpu_count() or 1
        if self.cpu is not None and self.cpu > cpus:
            raise ConfigError(_PREFIX + "cpu", f"{self.cpu:g} CPUs asked for; this host has {cpus}")
        for name, online in (("cpuset", "/sys/devices/system/cpu/online"),
                             ("cpuset_mems", "/sys/devices/system/node/online")):
            wanted = getattr(self, name)
            have = _read_list(online)
            if wanted is None or have is None:
                continue
            missing = sorted(_expand(wanted) - have)
            if missing:
                raise ConfigError(_PREFIX + name, f"{wanted!r} names {', '.join(map(str, missing))}, "
                                                  f"not online on this host (online: {_text_of(online)})")

    def cpu_quota(self) -> int | None:
        """The cpu quota in µs per period, or None."""
        return None if self.cpu is None else max(1000, round(self.cpu * self.cpu_period))


def _expand(text: str) -> set[int]:
    """The numbers of a list such as "0-3,6"."""
    numbers: set[int] = set()
    for part in text.split(","):
        low, _, high = part.partition("-")
        numbers.update(range(int(low), int(high or low) + 1))
    return numbers


def _text_of(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def _read_list(path: str) -> set[int] | None:
    """The numbers listed in a sysfs file such as cpu/online, or None."""
    try:
        text = _text_of(path)
    except OSError:
        return None
    return _expand(text) if text else set()
