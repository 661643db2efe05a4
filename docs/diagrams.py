"""Draw the two pictures of docs/architecture.md with Graphviz.

    python3 docs/diagrams.py           # writes docs/architecture.{dot,svg}
                                       # and docs/spawn-sequence.{dot,svg}
    python3 docs/diagrams.py --check   # exit 1 if a committed .dot file is out
                                       # of date or the sequence names a file
                                       # or function that no longer exists

`dot` comes from Graphviz (Debian: apt-get install graphviz).  --check needs
no Graphviz: it compares the .dot text, which does not depend on its version.

The layers picture is read from the code: the layers are LAYERS in
tests/test_layout.py (read with ast; nothing is imported), the modules in
each package are the files under isolate/.  The spawn sequence is written by
hand below; every file and function it names is checked to exist.
"""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
PACKAGE = REPO / "isolate"

#: What each layer of tests/test_layout.py is for, from the bottom.
LAYER_NAMES = ["base", "backends", "vocabulary", "spawn compiler", "objects", "stores",
               "front ends"]

#: Modules that do not exist yet, and the layer they would have to sit in
#: given what they will import (see "Layers" in docs/architecture.md).
PLANNED = {
    "vocabulary": [("network/", "planned: what Config will say about\n"
                                "a container's network")],
    "front ends": [("oci/", "planned: an OCI runtime,\nover named/"),
                   ("pytest_plugin.py", "planned: fixtures that\nrun containers")],
}

FONT = 'fontname="Helvetica"'


def layers() -> list[tuple[str, ...]]:
    """LAYERS of tests/test_layout.py, from the bottom."""
    tree = ast.parse((REPO / "tests" / "test_layout.py").read_text())
    for node in tree.body:
        target = getattr(node, "target", None) or (getattr(node, "targets", None) or [None])[0]
        if isinstance(target, ast.Name) and target.id == "LAYERS":
            return [tuple(layer) for layer in ast.literal_eval(node.value)]
    raise SystemExit("tests/test_layout.py has no LAYERS")


def native_sources() -> list[str]:
    """The C files _native/build.py compiles into isolate._native."""
    tree = ast.parse((REPO / "_native" / "build.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "SOURCES" for t in node.targets):
            return list(ast.literal_eval(node.value))
    return []


def tracked() -> set[Path] | None:
    """The files git tracks under isolate/ (None outside a git checkout):
    the picture shows the committed modules, not files lying about."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "isolate"], cwd=REPO, capture_output=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return {REPO / name for name in out.decode().split("\0") if name}


TRACKED = tracked()


def modules_in(package: Path) -> list[str]:
    return sorted(p.stem for p in package.glob("*.py")
                  if p.stem != "__init__" and (TRACKED is None or p in TRACKED))


def wrap(names: list[str], width: int = 34) -> str:
    return "\\n".join(textwrap.wrap(", ".join(names), width))


def quote(text: str) -> str:
    return '"' + text.replace('"', '\\"') + '"'


def layer_nodes(number: int, entries: tuple[str, ...], split: set[str]) -> list[tuple[str, str]]:
    """(node id, label) for the entries of one layer: the modules of one
    package that LAYERS names one by one share a node."""
    nodes: list[tuple[str, str]] = []
    grouped: dict[str, list[str]] = {}
    ignored = set((REPO / ".gitignore").read_text().split())
    for name in entries:
        relative = name.removeprefix("isolate.").replace(".", "/")
        path = PACKAGE / relative
        parent, _, last = name.rpartition(".")
        if parent in split and parent != "isolate":
            if parent not in grouped:
                grouped[parent] = []
                nodes.append((f"{parent}@{number}", ""))   # labelled below, in this place
            grouped[parent].append(last)
        elif name in split:
            nodes.append((name, f"{relative}/__init__.py"))
        elif path.is_dir():
            nodes.append((name, f"{relative}/\\n{wrap(modules_in(path))}"))
        elif f"isolate/{relative}.py" in ignored:
            nodes.append((name, f"{relative}.py\\n(written at build time)"))
        elif path.with_suffix(".py").is_file():
            nodes.append((name, f"{relative}.py"))
        else:   # a compiled extension
            nodes.append((name, f"{relative} (cffi extension)\\nfrom _native/: "
                                f"{wrap(native_sources(), 26)}"))
    labels = {f"{parent}@{number}": f"{parent.removeprefix('isolate.').replace('.', '/')}/\\n"
                                    f"{wrap(names, 30)}" for parent, names in grouped.items()}
    return [(ident, labels.get(ident, label)) for ident, label in nodes]


def layers_dot() -> str:
    found = layers()
    if len(found) != len(LAYER_NAMES):
        raise SystemExit(f"tests/test_layout.py has {len(found)} layers, LAYER_NAMES "
                         f"{len(LAYER_NAMES)}: name the new layer in docs/diagrams.py")
    every = {name for layer in found for name in layer}
    # A package whose modules LAYERS places one by one (isolate._spawn).
    split = {name for name in every
             if any(other.startswith(name + ".") for other in every)}
    lines = [
        "// Generated by docs/diagrams.py from LAYERS in tests/test_layout.py: do not edit.",
        "digraph layers {",
        f"  graph [rankdir=TB, compound=true, nodesep=0.25, ranksep=0.45, {FONT}, fontsize=12,",
        '         label="An arrow: may import. A module may import its own layer and any layer '
        'below it, never one above,\\nand no modules import each other in a circle '
        '(tests/test_layout.py, counting imports inside functions).\\nDashed: planned.",',
        "         labelloc=b];",
        f"  node [shape=box, style=\"rounded,filled\", fillcolor=white, {FONT}, fontsize=10];",
        f"  edge [{FONT}, fontsize=9];",
    ]
    anchors = []
    for number in reversed(range(len(found))):
        title = LAYER_NAMES[number]
        nodes = layer_nodes(number, found[number], split)
        nodes += [(f"planned:{name}", f"{name}\\n{what}".replace("\n", "\\n"))
                  for name, what in PLANNED.get(title, [])]
        lines.append(f"  subgraph cluster_{number} {{")
        lines.append(f"    label={quote(f'{number}  {title}')}; labeljust=l; labelloc=t; "
                     f"style=filled; fillcolor=\"#eef2f7\"; color=\"#8899aa\";")
        for ident, label in nodes:
            extra = (', style="rounded,dashed", color="#777777", fontcolor="#555555"'
                     if ident.startswith("planned:") else "")
            lines.append(f"    {quote(ident)} [label={quote(label)}{extra}];")
        # Left to right in the order LAYERS lists them.
        idents = " ".join(quote(ident) for ident, _ in nodes)
        lines.append(f"    {{ rank=same; {idents}; }}")
        if len(nodes) > 1:
            lines.append(f"    {' -> '.join(quote(i) for i, _ in nodes)} [style=invis];")
        lines.append("  }")
        anchors.append((number, nodes[len(nodes) // 2][0]))
    # One arrow from each layer to the one below it: the allowed direction.
    for (upper, upper_node), (lower, lower_node) in zip(anchors, anchors[1:]):
        lines.append(f"  {quote(upper_node)} -> {quote(lower_node)} "
                     f"[ltail=cluster_{upper}, lhead=cluster_{lower}, penwidth=1.6];")
    lines.append("}")
    return "\n".join(lines) + "\n"


# --- the spawn sequence ------------------------------------------------------

#: Who runs each part of a spawn: (cluster id, title, steps); a step is
#: (node id, text, [(file, name it contains), ...]).  Text lines end in \l
#: (left-justified) when written out.
SEQUENCE = [
    ("caller", "the caller's thread, Python", [
        ("config", "Config(**keywords)   isolate/config.py\n"
                   "every field converted and checked: ConfigError(field)",
         [("isolate/config.py", "class Config")]),
        ("start", "Container.start()   isolate/container.py\n"
                  "stdio fds (_spawn/stdio.py open_stdio)",
         [("isolate/container.py", "def start"), ("isolate/_spawn/stdio.py", "def open_stdio")]),
        ("prepare", "_spawn/compile.py prepare()\n"
                    "check_host(): what only the host can tell (cwd, mount targets,\n"
                    "  the executable, pass_fds, rlimits, limits.check_host())\n"
                    "compile_plan(): a Plan, a flat list of steps, each described;\n"
                    "  id maps; cached by config, argv and stdio",
         [("isolate/_spawn/compile.py", "def prepare"),
          ("isolate/_spawn/compile.py", "def check_host"),
          ("isolate/_spawn/compile.py", "def compile_plan"),
          ("isolate/_spawn/rootfs.py", "def add_rootfs_steps")]),
        ("native", "_spawn/plan.py NativePlan(plan)\n"
                   "the Plan laid out as struct iso_plan (_native/plan.h)",
         [("isolate/_spawn/plan.py", "class NativePlan"), ("_native/plan.h", "struct iso_plan")]),
        ("resources", "layers/in_use.py hold(): shared flocks on an Overlay's layers\n"
                      "cgroups/interface.py create(): the cgroup, with limits=",
         [("isolate/layers/in_use.py", "def hold"), ("isolate/cgroups/interface.py", "def create")]),
        ("executor", "_spawn/executor.py spawn()\n"
                     "lib.iso_spawn(plan, cgroup.procs fds, timeout)",
         [("isolate/_spawn/executor.py", "def spawn"), ("isolate/_spawn/executor.py", "iso_spawn")]),
    ]),
    ("parent", "parent side, C: _native/spawn.c iso_spawn (same thread)", [
        ("p_setup", "two stacks (mmap); sync and report pipes; every signal blocked;\n"
                    "a root caller's memory undumpable from here",
         [("_native/spawn.c", "int iso_spawn"), ("_native/spawn.c", "sigfillset"),
          ("_native/spawn.c", "hold_before_maps")]),
        ("p_clone", "clone(iso_child_main, CLONE_NEW* | CLONE_VM | CLONE_PIDFD)\n"
                    "with join=: clone iso_joiner_main, which runs the setns steps\n"
                    "  and clones the child with CLONE_PARENT (ISO_OP_CLONE_CHILD)",
         [("_native/spawn.c", "clone_child"), ("_native/child.c", "int iso_joiner_main"),
          ("_native/child.c", "void iso_clone_child")]),
        ("p_release", "release_child(): write setgroups, uid_map, gid_map;\n"
                      "the child's pid to cgroup.procs (not in init mode with limits=);\n"
                      "an unprivileged caller's memory undumpable now;\n"
                      "\"g\" on the sync pipe",
         [("_native/spawn.c", "static int release_child"), ("_native/spawn.c", "write_maps"),
          ("_native/spawn.c", "hold_undumpable")]),
        ("p_wait", "wait_report(): poll the report pipe in 50 ms slices;\n"
                   "child stopped by a signal, or timeout: SIGKILL, the spawn fails\n"
                   "ERROR(step, errno) -> SpawnError naming the step",
         [("_native/spawn.c", "static int wait_report"), ("isolate/_spawn/executor.py", "def _error")]),
        ("p_done", "signal mask and dumpable flag restored;\n"
                   "returns pid, pidfd, report pipe, stacks",
         [("_native/spawn.c", "release_undumpable")]),
    ]),
    ("child", "the child: _native/child.c, in the caller's memory, on its own stack", [
        ("c_sync", "iso_child_main(): closes the parent's pipe ends;\n"
                   "PR_SET_PDEATHSIG(SIGKILL) (die_with_parent);\n"
                   "reads the sync pipe (EOF: the parent gave up or died: exit)",
         [("_native/child.c", "int iso_child_main")]),
        ("c_steps", "iso_run_steps(), the plan in order:\n"
                    "unshare(CLONE_NEWTIME): clone(2) has no room for it;\n"
                    "  with limits= and no init, unshare(CLONE_NEWCGROUP) too\n"
                    "mount namespace: / made private; open_tree of every bind source\n"
                    "  (with the caller's ids)\n"
                    "setresgid/setresuid to mapped ids if the caller's are not mapped\n"
                    "the root bound (or the overlay mounted) at its stage and opened:\n"
                    "  from here paths resolve in it (openat2 RESOLVE_IN_ROOT)\n"
                    "mount_setattr of the root; /proc, /sys, /dev, /tmp;\n"
                    "  masked and read-only paths; hidden host dirs; extra mounts\n"
                    "pivot_root(\".\", \".\"), umount2(\".\", MNT_DETACH)\n"
                    "sethostname; loopback up",
         [("_native/child.c", "void iso_run_steps"), ("_native/child.c", "do_open_tree"),
          ("_native/child.c", "do_open_root"), ("_native/child.c", "do_mask"),
          ("_native/child.c", "do_pivot"), ("_native/child.c", "do_loopback_up")]),
        ("c_init", "init mode (pid namespace, init=True)?",
         [("isolate/_spawn/compile.py", "def uses_init")]),
        ("c_fork", "ISO_OP_FORK_WORKLOAD, _native/workload.c:\n"
                   "clone(CLONE_VM | CLONE_VFORK) the workload;\n"
                   "once it has exec'd, execveat the sealed pid1 memfd",
         [("_native/workload.c", "void iso_start_workload"), ("_native/workload.c", "execveat"),
          ("isolate/_spawn/pid1.py", "def init_fd")]),
        ("c_self", "no init: the child runs the\n"
                   "workload steps itself",
         [("_native/child.c", "iso_run_steps")]),
    ]),
    ("workload", "the workload's steps (child.c), in the vfork child or the child", [
        ("w_steps", "with limits= in init mode: join the cgroup, unshare CLONE_NEWCGROUP\n"
                    "setsid; drop capabilities; setrlimit; setgroups, setresgid, setresuid;\n"
                    "  (without init: PR_SET_PDEATHSIG again)\n"
                    "with tty=True: a pty of the container's /dev/ptmx as controlling\n"
                    "  terminal and fds 0-2, its master sent back over a socket\n"
                    "dup2 stdio; close every other fd but pass_fds; chdir in the root;\n"
                    "no_new_privs; default signal dispositions; the seccomp filter\n"
                    "execve along PATH",
         [("_native/child.c", "do_close_fds"), ("_native/child.c", "do_chdir"),
          ("_native/child.c", "do_seccomp"), ("_native/child.c", "do_exec"),
          ("_native/child.c", "do_capbset_drop"), ("_native/child.c", "int iso_join_cgroups"),
          ("_native/child.c", "do_pty")]),
    ]),
    ("pid1", "PID 1: _native/pid1.c, a static program of its own", [
        ("i_start", "undumpable; joins the cgroup itself (with limits=);\n"
                    "reports EXECED on the report pipe",
         [("_native/pid1.c", "PR_SET_DUMPABLE"), ("_native/pid1.c", "static int join_cgroups"),
          ("_native/pid1.c", "ISO_REPORT_EXECED")]),
        ("i_loop", "closes all but the report pipe; forwards every signal\n"
                   "to the workload, reaps every child; writes the workload's\n"
                   "wait status (EXIT) to the report pipe, then exits",
         [("_native/pid1.c", "sigwaitinfo"), ("_native/pid1.c", "ISO_REPORT_EXIT")]),
    ]),
    ("after", "the caller again", [
        ("process", "Process   isolate/process.py\n"
                    "wait/poll on the pidfd; signals with pidfd_send_signal;\n"
                    "returncode: the workload's status from the report pipe\n"
                    "  (init mode), else PID 1's own",
         [("isolate/process.py", "class Process"), ("isolate/process.py", "def _read_exit_report"),
          ("isolate/process.py", "pidfd_send_signal")]),
    ]),
]

#: (from, to, label, style) between the steps above.
FLOW = [
    ("config", "start", "", ""), ("start", "prepare", "", ""), ("prepare", "native", "", ""),
    ("native", "resources", "", ""), ("resources", "executor", "", ""),
    ("executor", "p_setup", "", ""),
    ("p_setup", "p_clone", "", ""), ("p_clone", "p_release", "", ""),
    ("p_release", "p_wait", "", ""), ("p_wait", "p_done", "", ""),
    ("p_clone", "c_sync", "clone", "dashed"),
    ("p_release", "c_sync", "\"g\" (sync pipe)", "dashed"),
    ("c_sync", "c_steps", "", ""), ("c_steps", "c_init", "", ""),
    ("c_init", "c_fork", "yes", ""), ("c_init", "c_self", "no", ""),
    ("c_fork", "w_steps", "vfork child", "dashed"), ("c_self", "w_steps", "", ""),
    ("c_fork", "i_start", "execveat", ""),
    ("i_start", "i_loop", "", ""),
    ("i_start", "p_wait", "EXECED", "dotted"),
    ("c_self", "p_wait", "EOF at exec: started", "dotted"),
    ("c_steps", "p_wait", "ERROR(step, errno), from any step", "dotted"),
    ("p_done", "process", "", ""),
    ("i_loop", "process", "EXIT(status)", "dotted"),
]


def sequence_dot() -> str:
    lines = [
        "// Generated by docs/diagrams.py: do not edit.",
        "digraph spawn {",
        f"  graph [rankdir=TB, nodesep=0.3, ranksep=0.35, newrank=true, {FONT}, fontsize=12,",
        '         label="Solid: the order of steps. Dashed: a new process. '
        'Dotted: a record on the report pipe.",',
        "         labelloc=b];",
        f"  node [shape=box, style=\"rounded,filled\", fillcolor=white, margin=\"0.16,0.06\", "
        f"{FONT}, fontsize=10];",
        f"  edge [{FONT}, fontsize=9];",
    ]
    for cluster, title, steps in SEQUENCE:
        lines.append(f"  subgraph cluster_{cluster} {{")
        lines.append(f"    label={quote(title)}; labeljust=l; labelloc=t; style=filled; "
                     f"fillcolor=\"#eef2f7\"; color=\"#8899aa\";")
        for ident, text, _ in steps:
            shape = ", shape=diamond, style=filled" if ident == "c_init" else ""
            # Indents in the text above are for reading this file only.
            text = "\n".join(line.strip() for line in text.splitlines())
            label = text.replace("\n", "\\l") + "\\l" if not shape else text
            lines.append(f"    {ident} [label={quote(label)}{shape}];")
        lines.append("  }")
    for source, target, label, style in FLOW:
        attrs = []
        if label:
            attrs.append(f"label={quote(label)}")
        if style:
            attrs.append(f"style={style}")
        if style == "dotted":
            attrs.append("constraint=false")
        lines.append(f"  {source} -> {target}" + (f" [{', '.join(attrs)}]" if attrs else "") + ";")
    lines.append("}")
    return "\n".join(lines) + "\n"


def missing_references() -> list[str]:
    """Every (file, name) the sequence cites that is not in that file."""
    missing = []
    for _, _, steps in SEQUENCE:
        for ident, _, refs in steps:
            for path, name in refs:
                file = REPO / path
                if not file.is_file() or name not in file.read_text():
                    missing.append(f"{ident}: {path} has no {name!r}")
    return missing


PICTURES = {"architecture": layers_dot, "spawn-sequence": sequence_dot}


def main(argv: list[str]) -> int:
    missing = missing_references()
    for line in missing:
        print(f"docs/diagrams.py: the spawn sequence is out of date: {line}", file=sys.stderr)
    if "--check" in argv:
        stale = [name for name, make in PICTURES.items()
                 if not (DOCS / f"{name}.dot").is_file()
                 or (DOCS / f"{name}.dot").read_text() != make()]
        for name in stale:
            print(f"docs/{name}.dot is out of date: run python3 docs/diagrams.py", file=sys.stderr)
        return 1 if stale or missing else 0
    dot = shutil.which("dot")
    if dot is None:
        print("docs/diagrams.py: needs Graphviz's dot (apt-get install graphviz)", file=sys.stderr)
        return 1
    for name, make in PICTURES.items():
        source = DOCS / f"{name}.dot"
        source.write_text(make())
        subprocess.run([dot, "-Tsvg", str(source), "-o", str(DOCS / f"{name}.svg")], check=True)
        print(f"wrote docs/{name}.dot, docs/{name}.svg")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
