"""Image references ("busybox", "example.com/app:1", "app@sha256:..."):
checked against Docker's grammar and written in full.

A reference is text from archives and users that ends up printed on a
terminal: anything outside the grammar (control characters included) is
refused, never shown as a name.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

from isolate.errors import ImageError

_DOMAIN_PART = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*(?::[0-9]+)?", re.ASCII)
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*", re.ASCII)
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", re.ASCII)
_DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}",
                     re.ASCII)

#: Docker's limit on a name (domain and path).
_MAX_NAME = 255

_DEFAULT_DOMAIN = "docker.io"
#: Other spellings of the default domain.
_DOMAIN_ALIASES = {"index.docker.io": _DEFAULT_DOMAIN}


def canonical_name(reference: str) -> str:
    """`reference` in full, as Docker understands it: "busybox" and
    "docker.io/busybox" are "docker.io/library/busybox:latest".  Raises
    ImageError for text that is not a reference."""
    name, at, digest = reference.partition("@")
    first, slash, rest = name.partition("/")
    # Docker's rule: the first component names a registry only when it
    # looks like a host name; "library/busybox" is a path.
    if slash and ("." in first or ":" in first or first == "localhost" or first.lower() != first):
        domain, path = first, rest
    else:
        domain, path = _DEFAULT_DOMAIN, name
    path, colon, tag = path.partition(":")
    if not (_DOMAIN.fullmatch(domain) and _PATH.fullmatch(path) and len(name) <= _MAX_NAME
            and (not colon or _TAG.fullmatch(tag)) and (not at or _DIGEST.fullmatch(digest))):
        raise ImageError(f"invalid image reference {reference!r}")
    domain = _DOMAIN_ALIASES.get(domain, domain)
    if domain == _DEFAULT_DOMAIN and "/" not in path:
        path = "library/" + path
    if not colon and not at:
        tag = "latest"
    return f"{domain}/{path}" + (f":{tag}" if tag else "") + (f"@{digest}" if at else "")


def is_reference(text: str) -> bool:
    """Whether `text` is a valid image reference."""
    try:
        canonical_name(text)
    except ImageError:
        return False
    return True


def names_include(names: Iterable[str], canonical: str) -> bool:
    """Whether one of `names` is the reference `canonical` (canonical_name's
    result); names that are no references match nothing."""
    return any(is_reference(name) and canonical_name(name) == canonical for name in names)
