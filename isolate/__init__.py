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
import importlib.machinery
import sys

from isolate._util import lazy

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

#: Public name -> "module" (under isolate) or "module:attribute".
_EXPORTS = {
    "Config": "config",
    "CompletedProcess": "container",
    "Container": "container",
    "exec_in": "container",
    "run": "container",
    "CalledProcessError": "errors",
    "CgroupError": "errors",
    "ConfigError": "errors",
    "ExecutableNotFound": "errors",
    "ImageError": "errors",
    "IsolateError": "errors",
    "LayerError": "errors",
    "NamespaceError": "errors",
    "SpawnError": "errors",
    "SpawnTimeout": "errors",
    "TimeoutExpired": "errors",
    "UserNamespaceError": "errors",
    "Image": "images.store",
    "ImageStore": "images.store",
    "CgroupLimit": "cgroups.limits",
    "Bind": "mounts",
    "Tmpfs": "mounts",
    "ALL_NAMESPACES": "namespace:ALL",
    "Namespace": "namespace",
    "Overlay": "overlay",
    "Process": "process",
    "Seccomp": "security.seccomp",
    "ContainerExists": "named.state",
    "ContainerNotFound": "named.state",
    "ContainerState": "named.state",
    "StateDir": "named.state",
    "StateError": "named.state",
    "DEVNULL": "_spawn.stdio",
    "PIPE": "_spawn.stdio",
    "STDOUT": "_spawn.stdio",
}

#: Documented modules that moved into a subpackage: the old name still
#: imports (``import isolate.seccomp``, ``from isolate.state import X``)
#: and is the same module object as the new one.
MOVED = {
    "idmaps": "security.idmaps",
    "limits": "cgroups.limits",
    "seccomp": "security.seccomp",
    "state": "named.state",
}

__getattr__, __dir__ = lazy.exports(__name__, {**_EXPORTS, **{
    old: f"{new.rsplit('.', 1)[0]}:{new.rsplit('.', 1)[1]}" for old, new in MOVED.items()}})


class _MovedModules:
    """Finds ``isolate.<old name>`` and loads it as the module it became (a
    meta path finder and loader, importlib.abc's protocols, duck-typed:
    importing importlib.abc would cost more than this whole file)."""

    def find_spec(self, fullname, path=None, target=None):
        old = fullname.partition(f"{__name__}.")[2]
        if old not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec):
        module = importlib.import_module(f"{__name__}.{MOVED[spec.name.rsplit('.', 1)[1]]}")
        spec.loader_state = module.__spec__
        return module

    def exec_module(self, module):
        # Already executed under its new name; the import system has just
        # set the alias spec on it: give it its own back.
        module.__spec__ = module.__spec__.loader_state


sys.meta_path.append(_MovedModules())
