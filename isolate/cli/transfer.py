"""``isolate cp`` and ``isolate commit``: files and images out of named
containers (isolate.named.copy, isolate.named.commit).

Loaded only for these subcommands.
"""
from __future__ import annotations

import argparse
from typing import Callable

from isolate.cli.images import open_store
from isolate.cli.output import printable
from isolate.errors import ConfigError
from isolate.named.state import StateDir, check_name


def split_location(text: str) -> tuple[str | None, str]:
    """(container name, path) of a cp argument: "web:/etc/hosts" is a path in
    the container web; a path starting with "/" or "." (./a:b), or one
    without a colon, is the host's (name None), as docker cp reads them."""
    if text.startswith(("/", ".")) or ":" not in text:
        return None, text
    name, _, path = text.partition(":")
    try:
        check_name(name)
    except ConfigError:
        raise ConfigError("cp", f"{text!r}: {name!r} is no container name; write a host path "
                                f"containing ':' as ./{text}") from None
    return name, path


def cmd_cp(args: argparse.Namespace) -> int:
    """``isolate cp [-L] SRC DST``, one of them NAME:PATH."""
    from isolate.named import copy
    (src_name, src), (dst_name, dst) = split_location(args.src), split_location(args.dst)
    if src_name is not None and dst_name is not None:
        raise ConfigError("cp", "copying between two containers is not supported: copy to the "
                                "host, then from it")
    if src_name is None and dst_name is None:
        raise ConfigError("cp", f"neither {args.src!r} nor {args.dst!r} names a container: one of "
                                f"SRC and DST must be NAME:PATH (isolate cp web:/etc/hosts .)")
    states = StateDir(args.root)
    if src_name is not None:
        copy.copy_from(states, src_name, src, dst, follow_link=args.follow_link)
    else:
        copy.copy_into(states, dst_name, src, dst, follow_link=args.follow_link)
    return 0


def cmd_commit(args: argparse.Namespace) -> int:
    """``isolate commit [--no-pause] NAME IMAGE``: prints the new image's id."""
    from isolate.named.commit import commit
    image = commit(StateDir(args.root), args.name, open_store(args), args.image, pause=args.pause)
    print(printable(image.id))
    return 0


#: The subcommands this module runs (main.handler() dispatches here).
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"cp": cmd_cp, "commit": cmd_commit}
