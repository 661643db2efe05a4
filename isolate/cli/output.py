"""What the command line prints on the operator's terminal: text that came
from containers and images, escaped (printable()), and ``isolate: ...``
notes and errors on stderr."""
from __future__ import annotations

import sys
from collections.abc import Sequence

PROG = "isolate"


def printable(text: object) -> str:
    """`text` safe for a terminal: every character that is not printable
    (C0 and C1 controls, DEL, bidi and other format characters, line
    separators) as a Python-style escape; printable Unicode stays.

    Container-provided text (a command from an image's Cmd, image names,
    records) goes through this before it reaches the operator's terminal,
    where ESC, BEL or CR could rewrite the screen or the window title.
    Undecodable bytes (surrogate escapes from os.fsdecode) show as \\xNN.
    """
    return "".join(char if char.isprintable() else _escape(char) for char in str(text))


def _escape(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:   # os.fsdecode's stand-in for an undecodable byte
        code -= 0xDC00
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def note(message: object) -> None:
    """Print ``isolate: MESSAGE`` on stderr, escaped (see printable())."""
    print(f"{PROG}: {printable(message)}", file=sys.stderr)


def error(message: object) -> None:
    """Print a one-line error on stderr (whitespace runs become one space)."""
    note(" ".join(str(message).split()))


def print_table(rows: Sequence[Sequence[str]]) -> None:
    """`rows` in columns as docker lays them out (Go's tabwriter with
    minimum width 10 and padding 3), the first row the header."""
    widths = [max(10, max(len(cell) for cell in column) + 3) for column in zip(*rows)]
    for row in rows:
        print("".join(cell.ljust(width) for cell, width in zip(row[:-1], widths)) + row[-1])
