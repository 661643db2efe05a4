"""Parsing of human-written sizes ("64M", "1G", 4096)."""
from __future__ import annotations

from isolate.errors import ConfigError

_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(value: int | str, field: str) -> int:
    """Bytes from an int or a string such as "256M" (binary units)."""
    if isinstance(value, bool):
        raise ConfigError(field, f"expected a size, got {value!r}")
    if isinstance(value, int):
        number, scale = value, 1
    elif isinstance(value, str):
        text = value.strip().upper().removesuffix("B").removesuffix("I")
        suffix = text[-1:] if text[-1:] in _SUFFIXES else ""
        digits = text[: len(text) - len(suffix)]
        if not digits.isdigit():
            raise ConfigError(field, f"cannot read {value!r} as a size (like 512, '64K', '256M', '1G')")
        number, scale = int(digits), _SUFFIXES[suffix]
    else:
        raise ConfigError(field, f"expected a size, got {type(value).__name__}")
    if number <= 0:
        raise ConfigError(field, f"size must be positive, got {value!r}")
    return number * scale
