"""Image references ("busybox", "example.com/app:1", "app@sha256:..."):
checked against Docker's grammar, written in full, and matched against the
names of stored images.

A reference is text from archives and users that ends up printed on a
terminal: anything outside the grammar (control characters included) is
refused, never shown as a name.

Short names ("busybox", "deb:test", "org/app") name no registry.  Looking
one up among stored images follows podman's local lookup (containers/common
libimage LookupImage, containers/image shortnames.ResolveLocally), less its
configuration: a short name means ``localhost/NAME`` or ``NAME`` on Docker
Hub (`matches`), and failing both any repository whose path ends with
``/NAME`` (`matches` with loose=True).  isolate reads no registries.conf:
it pulls from no registry, so unqualified-search registries and short-name
aliases, which only add candidates, have nothing to say here.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from typing import NamedTuple

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
#: The registry podman gives images that came from none (podman import,
#: podman build), tried first for a short name.
_LOCAL_DOMAIN = "localhost"
_OFFICIAL = "library/"


class Reference(NamedTuple):
    """A reference in full, as parse_reference() reads it.

    domain: the registry ("docker.io", "localhost", "example.com:5000").
    path: the repository's path on it ("library/busybox").
    tag: "latest" unless the text gave another, or gave a digest alone ("").
    digest: "" or the digest the text gave ("sha256:...").
    short: the path as written when the text named no registry ("busybox"
        for "busybox:1"), else "".
    """

    domain: str
    path: str
    tag: str
    digest: str
    short: str = ""

    @property
    def repository(self) -> str:
        """The repository in full: "docker.io/library/busybox"."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar(self) -> str:
        """The repository as Docker shows it: "busybox" for an official
        Docker Hub image, "org/app" for another Docker Hub one, else in full
        ("localhost/deb", "quay.io/org/app")."""
        if self.domain != _DEFAULT_DOMAIN:
            return self.repository
        official = self.path.removeprefix(_OFFICIAL)
        return official if "/" not in official else self.path

    def __str__(self) -> str:
        return (self.repository + (f":{self.tag}" if self.tag else "")
                + (f"@{self.digest}" if self.digest else ""))


def parse_reference(reference: str) -> Reference:
    """`reference` in full, as Docker understands it: "busybox" and
    "docker.io/busybox" are docker.io/library/busybox, tag "latest".
    Raises ImageError for text that is not a reference."""
    name, at, digest = reference.partition("@")
    first, slash, rest = name.partition("/")
    # Docker's rule: the first component names a registry only when it
    # looks like a host name; "library/busybox" is a path.
    qualified = bool(slash) and ("." in first or ":" in first or first == _LOCAL_DOMAIN
                                 or first.lower() != first)
    domain, path = (first, rest) if qualified else (_DEFAULT_DOMAIN, name)
    path, colon, tag = path.partition(":")
    if not (_DOMAIN.fullmatch(domain) and _PATH.fullmatch(path) and len(name) <= _MAX_NAME
            and (not colon or _TAG.fullmatch(tag)) and (not at or _DIGEST.fullmatch(digest))):
        raise ImageError(f"invalid image reference {reference!r}")
    short = "" if qualified else path
    domain = _DOMAIN_ALIASES.get(domain, domain)
    if domain == _DEFAULT_DOMAIN and "/" not in path:
        path = _OFFICIAL + path
    if not colon and not at:
        tag = "latest"
    return Reference(domain, path, tag, digest, short)


def canonical_name(reference: str) -> str:
    """`reference` in full, as Docker understands it: "busybox" and
    "docker.io/busybox" are "docker.io/library/busybox:latest".  Raises
    ImageError for text that is not a reference."""
    return str(parse_reference(reference))


def is_reference(text: str) -> bool:
    """Whether `text` is a valid image reference."""
    try:
        parse_reference(text)
    except ImageError:
        return False
    return True


def names_include(names: Iterable[str], canonical: str) -> bool:
    """Whether one of `names` is the reference `canonical` (canonical_name's
    result); names that are no references match nothing."""
    return any(is_reference(name) and canonical_name(name) == canonical for name in names)


def matches(wanted: Reference, stored: Reference, image_id: str, *, loose: bool = False) -> bool:
    """Whether `stored`, a name of the image `image_id`, is one that
    `wanted` may mean.

    Repository: a name with a registry means that repository only; a short
    name means ``localhost/NAME`` or NAME on Docker Hub, or with `loose`
    any repository whose path ends with ``/NAME`` ("tool" finds
    quay.io/org/tool), podman's last resort.  Version: a digest is the
    stored name's digest or the image's id (isolate keeps no registry
    manifests, so the config's digest is the image's only one); the tag
    beside a digest is ignored, as docker and podman ignore it.  Else the
    tags are equal ("latest" when none was written).
    """
    if wanted.digest:
        if wanted.digest not in (stored.digest, image_id):
            return False
    elif stored.tag != wanted.tag:
        return False
    if not wanted.short:
        return not loose and stored.repository == wanted.repository
    if loose:
        return stored.repository.endswith("/" + wanted.short)
    return stored.repository in (wanted.repository, f"{_LOCAL_DOMAIN}/{wanted.short}")
