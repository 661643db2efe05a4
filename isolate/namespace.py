"""Namespace kinds: their names, as users write them, and clone flags."""
from __future__ import annotations

from collections.abc import Iterable

from . import _sys
from .errors import ConfigError

#: Every namespace kind isolate can create, by the name users give it.
KINDS: dict[str, int] = {
    "user": _sys.CLONE_NEWUSER,
    "mount": _sys.CLONE_NEWNS,
    "pid": _sys.CLONE_NEWPID,
    "uts": _sys.CLONE_NEWUTS,
    "ipc": _sys.CLONE_NEWIPC,
    "net": _sys.CLONE_NEWNET,
    "cgroup": _sys.CLONE_NEWCGROUP,
    "time": _sys.CLONE_NEWTIME,
}

#: The default: a new namespace of every kind.
ALL: frozenset[str] = frozenset(KINDS)


def parse_kinds(names: Iterable[str] | str) -> frozenset[str]:
    """Validate namespace names; raises ConfigError naming a bad one."""
    if isinstance(names, str):
        raise ConfigError("namespaces", f"expected a collection of names, got the string {names!r}")
    kinds = frozenset(names)
    for name in kinds:
        if name not in KINDS:
            choices = ", ".join(KINDS)
            raise ConfigError("namespaces", f"unknown namespace {name!r} (choose from {choices})")
    return kinds


def clone_flags(kinds: Iterable[str]) -> int:
    """The CLONE_NEW* flags for a set of namespace names."""
    flags = 0
    for name in kinds:
        flags |= KINDS[name]
    return flags
