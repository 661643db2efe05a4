"""Resource limits (setrlimit) by name, checked against the caller's own.

    rlimits={"nofile": 1024, "core": 0, "as": ("1G", "2G"), "cpu": None}

A single value sets both the soft and the hard limit, a pair sets (soft,
hard), and None or "unlimited" means no limit.  Sizes take "64M" and the
like.  Raising a hard limit needs CAP_SYS_RESOURCE in the *initial* user
namespace, which a process in a new user namespace never has: so a hard
limit above the caller's is refused before anything starts, naming it.
"""
from __future__ import annotations

import resource
from collections.abc import Mapping

from isolate.errors import ConfigError
from isolate._util.units import parse_size

#: Limit names (as in prlimit(1) and Docker's --ulimit) and their numbers
#: from asm-generic/resource.h (Python's resource module lacks a few).
NAMES: dict[str, int] = {
    "cpu": 0, "fsize": 1, "data": 2, "stack": 3, "core": 4, "rss": 5, "nproc": 6,
    "nofile": 7, "memlock": 8, "as": 9, "locks": 10, "sigpending": 11, "msgqueue": 12,
    "nice": 13, "rtprio": 14, "rttime": 15,
}
#: Limits counted in bytes, which accept sizes such as "64M".
_BYTES = {"as", "core", "data", "fsize", "memlock", "msgqueue", "rss", "stack"}

Limit = tuple[str, int, int]   # (name, soft, hard)


def parse(value: Mapping[str, object] | None) -> tuple[Limit, ...]:
    """Sorted (name, soft, hard) triples; raises ConfigError naming the limit."""
    if not value:
        return ()
    if _is_triples(value):
        # Our own output (attrs.evolve converts again; a state record holds
        # it as JSON lists): read it back as a mapping.
        value = {name: (soft, hard) for name, soft, hard in value}
    if not isinstance(value, Mapping):
        raise ConfigError("rlimits", f"expected a mapping of limit names, got {value!r}")
    limits = []
    for name, spec in value.items():
        key = str(name).lower().removeprefix("rlimit_")
        if key not in NAMES:
            raise ConfigError("rlimits", f"unknown limit {name!r} (known: {', '.join(sorted(NAMES))})")
        soft, hard = spec if isinstance(spec, (tuple, list)) and len(spec) == 2 else (spec, spec)
        soft, hard = _amount(key, soft), _amount(key, hard)
        if soft > hard:
            raise ConfigError(f"rlimits.{key}", f"soft limit {soft} is above the hard limit {hard}")
        limits.append((key, soft, hard))
    return tuple(sorted(limits))


def _is_triples(value: object) -> bool:
    return isinstance(value, (tuple, list)) and all(
        isinstance(item, (tuple, list)) and len(item) == 3 and isinstance(item[0], str)
        for item in value)


def _amount(name: str, value: object) -> int:
    if value is None or value == "unlimited":
        return resource.RLIM_INFINITY
    if name in _BYTES and isinstance(value, str):
        return parse_size(value, f"rlimits.{name}")
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"rlimits.{name}", f"expected a non-negative int or None, got {value!r}")
    return value


def check_against_caller(limits: tuple[Limit, ...], may_raise: bool) -> None:
    """Refuse a hard limit above the caller's, unless the child may raise it
    (root that creates and joins no user namespace)."""
    if may_raise:
        return
    for name, _, hard in limits:
        own = resource.getrlimit(NAMES[name])[1]
        if _above(hard, own):
            raise ConfigError(f"rlimits.{name}",
                              f"hard limit {_text(hard)} is above the caller's hard limit {_text(own)}; "
                              f"only root without a user namespace may raise it")


def _above(value: int, limit: int) -> bool:
    if limit == resource.RLIM_INFINITY:
        return False
    return value == resource.RLIM_INFINITY or value > limit


def _text(value: int) -> str:
    return "unlimited" if value == resource.RLIM_INFINITY else str(value)
