"""isolate: run commands in Linux containers, from Python.

    >>> import isolate
    >>> isolate.run(["hostname"], capture_output=True, hostname="box").stdout
    b'box\\n'

See docs/api.md for the whole public API.

``import isolate`` loads nothing but this file: each public name is imported
from its module the first time it is asked for (PEP 562 ``__getattr__``
below), so ``isolate ps`` or a script that only needs ``isolate.run`` does not
pay for the image store, tarfile, hashlib or the seccomp compiler.
``from isolate import X`` and ``isolate.X`` work as if everything had been
imported here; tests/test_startup.py checks that the heavy modules stay out.
"""
import importlib

__version__ = "0.1.0"

__all__ = [
    "ALL_NAMESPACES", "Bind", "CalledProcessError", "CgroupError", "CgroupLimit",
    "CompletedProcess", "Config",
    "ConfigError", "Container", "ContainerExists", "ContainerNotFound",
    "ContainerState", "DEVNULL", "ExecutableNotFound", "Image", "ImageError", "ImageStore",
    "IsolateError", "LayerError", "Namespace",
    "NamespaceError", "Overlay", "PIPE", "Process", "STDOUT", "Seccomp", "SpawnError", "SpawnTimeout",
    "StateDir", "StateError", "TimeoutExpired", "Tmpfs", "UserNamespaceError", "exec_in", "run",
]

#: Public name -> (module under isolate, name in that module).
_LAZY = {
    "Config": ("config", "Config"),
    "CompletedProcess": ("container", "CompletedProcess"),
    "Container": ("container", "Container"),
    "exec_in": ("container", "exec_in"),
    "run": ("container", "run"),
    "CalledProcessError": ("errors", "CalledProcessError"),
    "CgroupError": ("errors", "CgroupError"),
    "ConfigError": ("errors", "ConfigError"),
    "ExecutableNotFound": ("errors", "ExecutableNotFound"),
    "ImageError": ("errors", "ImageError"),
    "IsolateError": ("errors", "IsolateError"),
    "LayerError": ("errors", "LayerError"),
    "NamespaceError": ("errors", "NamespaceError"),
    "SpawnError": ("errors", "SpawnError"),
    "SpawnTimeout": ("errors", "SpawnTimeout"),
    "TimeoutExpired": ("errors", "TimeoutExpired"),
    "UserNamespaceError": ("errors", "UserNamespaceError"),
    "Image": ("images", "Image"),
    "ImageStore": ("images", "ImageStore"),
    "CgroupLimit": ("limits", "CgroupLimit"),
    "Bind": ("mounts", "Bind"),
    "Tmpfs": ("mounts", "Tmpfs"),
    "ALL_NAMESPACES": ("namespace", "ALL"),
    "Namespace": ("namespace", "Namespace"),
    "Overlay": ("overlay", "Overlay"),
    "Process": ("process", "Process"),
    "Seccomp": ("seccomp", "Seccomp"),
    "ContainerExists": ("state", "ContainerExists"),
    "ContainerNotFound": ("state", "ContainerNotFound"),
    "ContainerState": ("state", "ContainerState"),
    "StateDir": ("state", "StateDir"),
    "StateError": ("state", "StateError"),
    "DEVNULL": ("_stdio", "DEVNULL"),
    "PIPE": ("_stdio", "PIPE"),
    "STDOUT": ("_stdio", "STDOUT"),
}


def __getattr__(name: str):
    """A public name on first use (then cached here), or a submodule
    (``isolate.seccomp``, ``isolate.named``...) imported on first use."""
    if name in _LAZY:
        module, attribute = _LAZY[name]
        value = getattr(importlib.import_module(f"{__name__}.{module}"), attribute)
        globals()[name] = value
        return value
    if not name.startswith("__"):
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise   # the submodule exists but something it imports does not
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
