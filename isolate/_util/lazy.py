"""Package attributes that import their module on first use (PEP 562).

A package's ``__init__`` names what it exports and where each lives; nothing
is imported until someone asks for it, so ``import isolate.cgroups`` (or
``import isolate``) stays cheap however much the package holds::

    __getattr__, __dir__ = lazy.exports(__name__, {"Stats": "stats"})
"""
from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping


def exports(package: str, names: Mapping[str, str],
            ) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for `package`.  `names` maps each
    exported name to the module (relative to the package) that defines it,
    under the same name or as ``"module:attribute"``.  Any other attribute
    is tried as a submodule, so ``isolate.cgroups.v1`` works without an
    import statement, as it would if the package imported its modules."""
    namespace = sys.modules[package].__dict__

    def __getattr__(name: str) -> object:
        if name in names:
            module, _, attribute = names[name].partition(":")
            value = getattr(importlib.import_module(f"{package}.{module}"), attribute or name)
            namespace[name] = value   # cached: the next lookup is a plain dict hit
            return value
        if not name.startswith("__"):
            try:
                return importlib.import_module(f"{package}.{name}")
            except ModuleNotFoundError as exc:
                if exc.name != f"{package}.{name}":
                    raise   # the submodule exists but something it imports does not
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(names))

    return __getattr__, __dir__
