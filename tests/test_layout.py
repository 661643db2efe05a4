"""The package's layers (docs/architecture.md): every import inside isolate/
goes down or sideways, never up, and no modules import each other in a
circle, counting imports inside functions too.  Read from the source with
ast; nothing is imported."""
from __future__ import annotations

import ast
from pathlib import Path

import isolate

PACKAGE = Path(isolate.__file__).resolve().parent

#: Layers from the bottom; a module may import its own layer and those below.
#: A module's own name decides its layer, else the first package it is in.
LAYERS: list[tuple[str, ...]] = [
    ("isolate._native", "isolate._libseccomp", "isolate._util", "isolate.errors", "isolate._spawn"),
    ("isolate._spawn.syscalls", "isolate._spawn.plan", "isolate._spawn.executor",
     "isolate._spawn.stdio", "isolate._spawn.communicate", "isolate._spawn.pid1",
     "isolate._spawn.holder", "isolate.security", "isolate.cgroups", "isolate.layers"),
    ("isolate.mounts", "isolate.overlay", "isolate.namespace", "isolate.config", "isolate.terminal"),
    ("isolate._spawn.compile", "isolate._spawn.rootfs"),
    ("isolate.process", "isolate.container"),
    ("isolate.images", "isolate.named"),
    ("isolate.cli", "isolate.__main__"),
]


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ["isolate", *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def imported(path: Path, known: dict[str, Path]) -> set[str]:
    """The isolate modules a file imports, anywhere in it but under ``if
    TYPE_CHECKING:`` (names for annotations only, never loaded)."""
    found = set()
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING",
                                                                    "typing.TYPE_CHECKING"):
            node.body = []   # not walked: ast.walk reads the children after this
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("isolate"):
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in known else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("isolate"))
    return found


def layer(module: str) -> int:
    for number, names in enumerate(LAYERS):
        if module in names:
            return number
    for number, packages in enumerate(LAYERS):
        if any(module.startswith(package + ".") for package in packages):
            return number
    raise AssertionError(f"{module} is in no layer: add it to LAYERS and docs/architecture.md")


def graph() -> dict[str, set[str]]:
    known = module_names()
    return {name: imported(path, known) - {name} for name, path in known.items()}


def test_every_module_has_a_layer():
    for name in graph():
        if name != "isolate":
            layer(name)


def test_no_module_imports_a_layer_above_its_own():
    upward = [f"{name} -> {target}" for name, targets in graph().items() if name != "isolate"
              for target in targets if layer(target) > layer(name)]
    assert not upward, upward


def test_no_import_cycles():
    edges = graph()
    cycles = []

    def visit(node: str, path: list[str], done: set[str]) -> None:
        for target in sorted(edges.get(node, ())):
            if target in path:
                cycles.append(path[path.index(target):] + [target])
            elif target not in done:
                visit(target, path + [target], done)
        done.add(node)

    done: set[str] = set()
    for start in sorted(edges):
        if start not in done:
            visit(start, [start], done)
    assert not cycles, cycles
