"""``isolate info``, ``isolate version`` and ``isolate --version``: what this
host offers isolate, and which isolate, Python and kernel these are.

Everything is read from the host as it is now (/proc, /sys/fs/cgroup, the
PATH, the dynamic loader); nothing is changed and no container is started.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import platform
import shutil
import sys
from typing import Callable

from isolate.cli.images import default_store

def package_version() -> str:
    """isolate.__version__.  The package is loaded before any of its
    modules, this one included; it is read from sys.modules because the
    layers (tests/test_layout.py) forbid importing the package itself,
    which re-exports every layer."""
    return sys.modules["isolate"].__version__


#: The network helpers a rootless container's network may use, by name.
NETWORK_HELPERS = ("pasta", "slirp4netns")


class _SeccompVersion(ctypes.Structure):
    """libseccomp's struct scmp_version."""
    _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]


def version_line() -> str:
    """One line: isolate's version, Python's and the kernel's (--version)."""
    return (f"isolate {package_version()} (Python {platform.python_version()}, "
            f"Linux {platform.release()})")


def cmd_version(_args: argparse.Namespace) -> int:
    """``isolate version``: one line per component, as docker version lists them."""
    for label, value in (("isolate", package_version()),
                         ("Python", f"{platform.python_version()} "
                                    f"({platform.python_implementation()})"),
                         ("Kernel", f"Linux {platform.release()} {platform.machine()}")):
        print(f"{label + ':':<10} {value}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """``isolate info``: "Key: value" lines, as docker info prints them."""
    from isolate.named.state import default_root
    version, controllers = cgroups()
    for label, value in (
        ("Kernel", f"Linux {platform.release()} {platform.machine()}"),
        ("Operating system", operating_system()),
        ("Cgroup version", version),
        ("Cgroup controllers", " ".join(controllers) or "none"),
        ("Rootless", "yes" if os.geteuid() != 0 else "no"),
        ("User namespaces", user_namespaces()),
        ("Image store", args.store or default_store()),
        ("Container records", args.root or default_root()),
        ("Seccomp", seccomp()),
        *((f"Network helper {name}", shutil.which(name) or "not installed")
          for name in NETWORK_HELPERS),
        ("isolate", package_version()),
        ("Python", platform.python_version()),
    ):
        print(f"{label}: {value}")
    return 0


def cgroups() -> tuple[str, list[str]]:
    """The cgroup version ("2", or "1" with v1 controllers, hybrid or not)
    and the controllers available to containers."""
    from isolate.cgroups import interface, v1
    if interface.unified():
        path = os.path.join(interface.CGROUP_ROOT, "cgroup.controllers")
        try:
            with open(path) as f:
                return "2", sorted(f.read().split())
        except OSError:
            return "2", []
    # A v1 mount's options name its controllers among others ("rw", "name=systemd"):
    # the kernel's own list says which are controllers.
    with open("/proc/cgroups") as f:
        known = {line.split()[0] for line in f if not line.startswith("#")}
    return "1", sorted(set(v1.hierarchies()) & known)


def operating_system() -> str:
    """The distribution's PRETTY_NAME (/etc/os-release), or "unknown"."""
    try:
        return platform.freedesktop_os_release().get("PRETTY_NAME", "unknown")
    except OSError:
        return "unknown"


def user_namespaces() -> str:
    """Whether this caller may make user namespaces, by the limit on them."""
    try:
        with open("/proc/sys/user/max_user_namespaces") as f:
            limit = int(f.read())
    except (OSError, ValueError):
        return "unknown"
    return f"available (at most {limit})" if limit else "disabled (user.max_user_namespaces=0)"


def seccomp() -> str:
    """Whether the kernel filters system calls and libseccomp, which compiles
    isolate's profiles, can be loaded (and its version)."""
    with open("/proc/self/status") as f:
        if not any(line.startswith("Seccomp:") for line in f):
            return "not supported by this kernel"
    try:
        library = ctypes.CDLL("libseccomp.so.2")
    except OSError:
        return "kernel only: libseccomp.so.2 is missing (apt-get install libseccomp2)"
    library.seccomp_version.restype = ctypes.POINTER(_SeccompVersion)
    found = library.seccomp_version().contents
    return f"available (libseccomp {found.major}.{found.minor}.{found.micro})"


#: The subcommands this module runs (main.handler() dispatches here).
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"info": cmd_info,
                                                            "version": cmd_version}
