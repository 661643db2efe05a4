"""Feed a process's stdin and drain its stdout/stderr without deadlock.

The same job as subprocess.Popen.communicate: one selector loop that writes
input in pipe-sized chunks while reading both outputs, so a child that fills
one pipe while we block on another cannot stall either side.  Partial output
is kept in `pending` so a call that timed out can be resumed.
"""
from __future__ import annotations

import os
import selectors
import time
from typing import Any

from isolate.errors import TimeoutExpired

_CHUNK = 64 * 1024


def communicate(proc: Any, input: bytes | None, deadline: float | None,
                pending: dict) -> tuple[bytes | None, bytes | None]:
    """Run the loop for `proc` (an isolate.Process); returns (stdout, stderr)."""
    if proc.stdin is None and proc.stdout is None and proc.stderr is None:
        return None, None   # nothing to feed or drain: the common run() case
    chunks = pending.setdefault("chunks", {})
    if proc.stdin is not None and "input" not in pending:
        pending["input"] = memoryview(input or b"")
        if not pending["input"]:
            _close(proc.stdin)
    with selectors.PollSelector() as selector:
        _register(selector, proc, pending, chunks)
        while selector.get_map():
            timeout = None if deadline is None else deadline - time.monotonic()
            if timeout is not None and timeout <= 0:
                raise TimeoutExpired(proc.args, 0, *_joined(proc, chunks))
            for key, _ in selector.select(timeout):
                _service(selector, key.fileobj, proc, pending, chunks)
    return _joined(proc, chunks)


def _register(selector: selectors.BaseSelector, proc: Any, pending: dict, chunks: dict) -> None:
    if proc.stdin is not None and not proc.stdin.closed:
        selector.register(proc.stdin, selectors.EVENT_WRITE)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None and not stream.closed:
            chunks.setdefault(stream, [])
            selector.register(stream, selectors.EVENT_READ)


def _service(selector: selectors.BaseSelector, stream: Any, proc: Any,
             pending: dict, chunks: dict) -> None:
    if stream is proc.stdin:
        data = pending["input"]
        try:
            written = os.write(stream.fileno(), data[:_CHUNK])
        except BrokenPipeError:
            written = len(data)   # the child stopped reading: drop the rest
        pending["input"] = data = data[written:]
        if not data:
            selector.unregister(stream)
            _close(stream)
        return
    data = os.read(stream.fileno(), _CHUNK)
    if data:
        chunks[stream].append(data)
    else:
        selector.unregister(stream)
        stream.close()


def _joined(proc: Any, chunks: dict) -> tuple[bytes | None, bytes | None]:
    out = b"".join(chunks.get(proc.stdout, [])) if proc.stdout is not None else None
    err = b"".join(chunks.get(proc.stderr, [])) if proc.stderr is not None else None
    return out, err


def _close(stream: Any) -> None:
    try:
        stream.close()
    except BrokenPipeError:
        pass
