"""``isolate import``, ``isolate images`` and ``isolate rmi``: the image
store on the command line; also how ``isolate run --image`` finds its image
(find_image).

``isolate run`` loads this module even without --image, so the image store
(tarfile, hashlib) is imported only inside the functions that open it.
"""
from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Callable

from isolate.cli.output import note, printable
from isolate.cli.progress import ProgressBar
from isolate.errors import ImageError

if TYPE_CHECKING:
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
    """``isolate images``: one line per stored image."""
    print(f"{'NAME':<40} {'ID':<19} LAYERS")
    for image in open_store(args).images():
        for name in image.names or ("<none>",):
            print(f"{printable(name):<40} {printable(image.id[:19]):<19} {len(image.layers)}")
    return 0


def cmd_rmi(args: argparse.Namespace) -> int:
    """``isolate rmi IMAGE``."""
    store = open_store(args)
    store.remove(store.get(args.image))
    return 0


#: The subcommands this module runs (main.handler() dispatches here).
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "import": cmd_import, "images": cmd_images, "rmi": cmd_rmi}
