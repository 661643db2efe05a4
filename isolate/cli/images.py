"""``isolate import``, ``isolate images``, ``isolate image inspect`` and
``isolate rmi``: the image store on the command line; also how ``isolate
run --image`` finds its image (find_image).  Every name given is looked up
by ImageStore.get (short names, tags, digests, id prefixes).

``isolate run`` loads this module even without --image, so the image store
(tarfile, hashlib) and its names (isolate.images.ref) are imported only
inside the functions that use them.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Callable

from isolate.cli.output import error, note, print_table, printable
from isolate.cli.progress import ProgressBar
from isolate.errors import ImageError

if TYPE_CHECKING:
    from isolate.images.ref import Reference
    from isolate.images.store import Image, ImageStore


def default_store() -> str:
    """Where images live unless --store says otherwise."""
    if os.geteuid() == 0:
        return "/var/lib/isolate"
    data = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return os.path.join(data, "isolate")


def open_store(args: argparse.Namespace) -> ImageStore:
    """The image store --store names, or the default one."""
    from isolate.images.store import ImageStore
    return ImageStore(args.store or default_store())


def import_archive(store: ImageStore, path: str, name: str | None = None) -> Image:
    """Import with a progress bar on a terminal."""
    bar = ProgressBar(f"importing {os.path.basename(path.rstrip('/'))}")
    try:
        return store.import_archive(path, name=name, progress=bar)
    finally:
        bar.close()


#: Endings that make an --image argument an archive's path, not a stored name.
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.zst", ".tar.xz", ".tar.bz2", ".oci")


def is_image_path(value: str) -> bool:
    """Whether --image `value` is clearly a path: absolute, starting with
    ./ or ../, or ending in an archive suffix.  Anything else (busybox,
    ghcr.io/org/app:1) is a stored image's name, even if a file of that name
    lies in the current directory: a shared directory must not decide which
    image runs."""
    return (value.startswith(("/", "./", "../")) or value in (".", "..")
            or value.endswith(ARCHIVE_SUFFIXES))


def find_image(args: argparse.Namespace) -> Image:
    """--image: a path (is_image_path) is imported first, saying so on
    stderr; anything else is looked up in the store, quietly, as docker
    and podman do."""
    store = open_store(args)
    if is_image_path(args.image):
        note(f"using image archive {args.image}")
        return import_archive(store, args.image)
    try:
        return store.get(args.image)
    except ImageError as exc:
        if os.path.exists(args.image):
            raise ImageError(f"{exc}; to run the archive {args.image!r} in this directory, "
                             f"write ./{args.image}") from None
        raise


def cmd_import(args: argparse.Namespace) -> int:
    """``isolate import ARCHIVE``: prints the image's id."""
    image = import_archive(open_store(args), args.archive, args.name)
    print(printable(image.id))
    return 0


def cmd_images(args: argparse.Namespace) -> int:
    """``isolate images``: one line per name of each stored image (an image
    without a name gets one line of <none>), newest first, as docker
    images shows them, and how many layers each image stacks."""
    now = time.time()
    rows = [("REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE", "LAYERS")]
    images = sorted(open_store(args).images(), key=lambda image: (-(image.created_at or 0), image.id))
    for image in images:
        shown = dict.fromkeys((ref.familiar, ref.tag or "<none>") for ref in _references(image.names))
        for repository, tag in shown or [("<none>", "<none>")]:
            rows.append((printable(repository), printable(tag), image.id.removeprefix("sha256:")[:12],
                         ago(image.created_at, now), human_size(image.size), str(len(image.layers))))
    print_table(rows)
    return 0


def cmd_image(args: argparse.Namespace) -> int:
    """``isolate image COMMAND``: runs the command argparse chose."""
    return IMAGE_COMMANDS[args.image_command](args)


def cmd_image_inspect(args: argparse.Namespace) -> int:
    """``isolate image inspect IMAGE...``: a JSON array of the images found,
    as docker image inspect prints it; then an error for each name that
    finds none (or several), the last raised (exit status 125)."""
    store = open_store(args)
    return print_inspected(args.names, lambda name: inspect_image(store.get(name)), ImageError)


def print_inspected(names: Sequence[str], inspect_one: Callable[[str], dict[str, Any]],
                    failure: type[Exception]) -> int:
    """docker's `inspect`: one JSON array of what was found, then an error
    line for each name that failed (the last one raised, for the exit status)."""
    found: list[dict[str, Any]] = []
    failed: list[Exception] = []
    for name in names:
        try:
            found.append(inspect_one(name))
        except failure as exc:
            failed.append(exc)
    print(json_text(found))
    for exc in failed[:-1]:
        error(exc)
    if failed:
        raise failed[-1]
    return 0


def cmd_rmi(args: argparse.Namespace) -> int:
    """``isolate rmi IMAGE``."""
    store = open_store(args)
    store.remove(store.get(args.image))
    return 0


def inspect_image(image: Image) -> dict[str, Any]:
    """What docker image inspect says of an image, as far as isolate knows
    it: no registry digests (RepoDigests only lists names that carry a
    digest), no parent, no graph driver."""
    references = _references(image.names)
    created = image.created
    if not created and image.imported is not None:
        created = datetime.datetime.fromtimestamp(image.imported, datetime.timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%S.%fZ")
    return {
        "Id": image.id,
        "RepoTags": list(dict.fromkeys(f"{ref.familiar}:{ref.tag}" for ref in references if ref.tag)),
        "RepoDigests": list(dict.fromkeys(f"{ref.familiar}@{ref.digest}"
                                          for ref in references if ref.digest)),
        "Created": created,
        # Docker shows these five whether the image sets them or not.
        "Config": {"Env": None, "Cmd": None, "Entrypoint": None, "WorkingDir": "", "User": "",
                   **image.config},
        "Architecture": image.architecture,
        "Os": image.os,
        "Size": image.size,
        "RootFS": {"Type": "layers", "Layers": list(image.diff_ids)},
    }


def _references(names: Sequence[str]) -> list[Reference]:
    """`names` read as references.  A record's names were checked when it
    was imported; one edited by hand may hold others, which the store's
    lookups ignore too."""
    from isolate.images.ref import is_reference, parse_reference
    return [parse_reference(name) for name in names if is_reference(name)]


def ago(when: float | None, now: float) -> str:
    """How long before `now` the time `when` was, in docker's words ("3
    days ago", "About an hour ago"; go-units' HumanDuration), or "N/A"."""
    if when is None:
        return "N/A"
    seconds = now - when
    whole = int(seconds)
    if whole < 1:
        text = "Less than a second"
    elif whole < 60:
        text = f"{whole} second{'s' if whole > 1 else ''}"
    elif (minutes := int(seconds / 60)) < 60:
        text = "About a minute" if minutes == 1 else f"{minutes} minutes"
    elif (hours := int(seconds / 3600 + 0.5)) < 48:
        text = "About an hour" if hours == 1 else f"{hours} hours"
    elif hours < 24 * 7 * 2:
        text = f"{hours // 24} days"
    elif hours < 24 * 30 * 2:
        text = f"{hours // 24 // 7} weeks"
    elif hours < 24 * 365 * 2:
        text = f"{hours // 24 // 30} months"
    else:
        text = f"{int(seconds / 3600) // 24 // 365} years"
    return text + " ago"


#: Decimal units, as docker images shows sizes (go-units' HumanSize).
_UNITS = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")


def human_size(size: float) -> str:
    """`size` bytes in decimal units with three significant digits, as
    docker images writes them: "5.2MB", "977kB", "0B"."""
    unit = 0
    while size >= 1000 and unit < len(_UNITS) - 1:
        size /= 1000
        unit += 1
    text = f"{size:.3g}"
    # 999.5kB rounds to "1e+03" (go-units prints that): it is 1MB.
    if float(text) >= 1000 and unit < len(_UNITS) - 1:
        size, unit = size / 1000, unit + 1
        text = f"{size:.3g}"
    return text + _UNITS[unit]


def json_text(doc: Any) -> str:
    """`doc` as indented JSON fit for a terminal: what the image put in it
    (an Env, a Cmd) reaches the screen with every character that is not
    printable (controls, bidi and other format characters) escaped as
    JSON escapes it, \\uXXXX; printable Unicode stays."""
    text = json.dumps(doc, indent=4, ensure_ascii=False)
    # json.dumps escapes C0 controls in strings; its own layout is the only
    # newline left, and everything else not printable is inside a string.
    return "".join(char if char.isprintable() or char == "\n" else _json_escape(char)
                   for char in text)


def _json_escape(char: str) -> str:
    code = ord(char)
    if code > 0xFFFF:   # JSON spells these as a UTF-16 surrogate pair
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
    return f"\\u{code:04x}"


#: The subcommands this module runs (main.handler() dispatches here).
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "import": cmd_import, "images": cmd_images, "image": cmd_image, "rmi": cmd_rmi}

#: The subcommands of ``isolate image``.
IMAGE_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"inspect": cmd_image_inspect}
