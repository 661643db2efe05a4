"""The child's stdin/stdout/stderr, chosen the way subprocess chooses them.

Each stream is None (inherit), PIPE, DEVNULL, STDOUT (stderr only), an fd
or a file object.  `open_stdio` returns the fds the child gets and the
parent's ends of any pipes; the caller closes the child's copies once the
child has started.
"""
from __future__ import annotations

import fcntl
import os
import subprocess
from typing import IO, Any

import attrs

PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL
STDOUT = subprocess.STDOUT


@attrs.define
class Stdio:
    """Child fds for 0, 1, 2 (-1 = inherit) and the parent's pipe ends."""

    child: list[int] = attrs.field(factory=lambda: [-1, -1, -1])
    parent: list[int | None] = attrs.field(factory=lambda: [None, None, None])
    _to_close: list[int] = attrs.field(factory=list)

    def close_child_ends(self) -> None:
        """Close what only the child needed (call after spawn or on error)."""
        for fd in self._to_close:
            os.close(fd)
        self._to_close.clear()

    def close_all(self) -> None:
        """Close everything, parent ends included (spawn failed)."""
        self.close_child_ends()
        for fd in self.parent:
            if fd is not None:
                os.close(fd)
        self.parent = [None, None, None]


def open_stdio(stdin: Any, stdout: Any, stderr: Any) -> Stdio:
    """Resolve the three stream choices; raises ValueError for a bad one."""
    stdio = Stdio()
    try:
        for target, choice in enumerate((stdin, stdout, stderr)):
            _resolve(stdio, target, choice)
    except BaseException:
        stdio.close_all()
        raise
    return stdio


def _resolve(stdio: Stdio, target: int, choice: Any) -> None:
    if choice is None:
        return
    if choice == PIPE:
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        child, parent = (read_end, write_end) if target == 0 else (write_end, read_end)
        stdio.parent[target] = parent
        stdio._to_close.append(child)
        stdio.child[target] = _high(stdio, child, target)
    elif choice == DEVNULL:
        fd = os.open(os.devnull, (os.O_RDONLY if target == 0 else os.O_WRONLY) | os.O_CLOEXEC)
        stdio._to_close.append(fd)
        stdio.child[target] = _high(stdio, fd, target)
    elif choice == STDOUT:
        if target != 2:
            raise ValueError("STDOUT is only valid for stderr")
        stdio.child[2] = stdio.child[1] if stdio.child[1] >= 0 else _high(stdio, 1, 2)
    else:
        fd = choice if isinstance(choice, int) else _fileno(choice)
        stdio.child[target] = _high(stdio, fd, target)


def _high(stdio: Stdio, fd: int, target: int) -> int:
    """A copy of fd numbered >= 3 unless fd is already `target`.

    The child dup2()s into 0, 1, 2 in order; a source below 3 could be
    overwritten by an earlier dup2, so it gets a safe number first."""
    if fd >= 3 or fd == target:
        return fd
    copy = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    stdio._to_close.append(copy)
    return copy


def _fileno(stream: IO) -> int:
    try:
        return stream.fileno()
    except (AttributeError, OSError) as exc:
        raise ValueError(f"expected PIPE, DEVNULL, a file descriptor or a file object, got {stream!r}") from exc
