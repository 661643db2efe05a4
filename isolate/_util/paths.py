"""Path comparisons on normalized absolute paths (as text)."""
from __future__ import annotations

from collections.abc import Iterable


def within(path: str, parent: str) -> bool:
    """Whether `path` is `parent` or lies beneath it."""
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def within_any(path: str, parents: Iterable[str]) -> bool:
    """Whether `path` is or lies beneath any of `parents`."""
    return any(within(path, parent) for parent in parents)
