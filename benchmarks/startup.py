#!/usr/bin/env python3
"""Start-up cost of whole processes: Python, ``import isolate``, the CLI, and its peers.

Usage: ``python benchmarks/startup.py [--rounds N]`` (as root, from the repo);
100 rounds by default, well under a minute.

Every contender is a whole process started with ``subprocess.run`` and timed
from before the fork to after the reap, so interpreter start-up and imports
count, as they do for a user typing the command.  Every round runs every
contender once, in a freshly shuffled order (as spawn.py does).  The
contenders:

* ``python -c pass``: this interpreter doing nothing (with its site and .pth
  files: an editable install adds its import finder there);
* ``python -c "import isolate"``;
* ``isolate --help``, ``isolate ps`` (an empty state directory via --root);
* ``runc list``, ``crun list`` (each with an empty --root);
* ``isolate run -- /bin/true``, ``bwrap ... /bin/true`` (spawn.py's line) and
  ``crun run`` of spawn.py's bundle: a container's whole life, command to exit.

Python contenders run with the bytecode cache on, in a private
PYTHONPYCACHEPREFIX (removed at the end), even if PYTHONDONTWRITEBYTECODE is
set here: without it every run would compile isolate's sources again, which
no installed isolate does (``--no-pycache`` keeps the environment as it is).

After the table, ``python -X importtime`` shows where the import time of
``python -c pass``, ``import isolate``, ``isolate ps`` and ``isolate run``
goes (two levels of the import tree).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import spawn  # noqa: E402  (its contender classes, bundle and interleaved loop)
from spawn import BWRAP_ARGS, Contender, Unavailable, measure_all, percentile  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TRUE = "/bin/true"


class Process(Contender):
    """A whole command, run by subprocess.run and timed fork to reap."""

    def __init__(self, name: str, argv: list[str], env: Optional[dict[str, str]] = None) -> None:
        self.name = name
        self.argv = argv
        self.env = env

    def setup(self) -> None:
        if not shutil.which(self.argv[0]):
            raise Unavailable("not installed")
        r = subprocess.run(self.argv, env=self.env, stdin=subprocess.DEVNULL,
                           capture_output=True, text=True)
        if r.returncode != 0:
            lines = (r.stderr or r.stdout).strip().splitlines() or [""]
            raise Unavailable(f"failed (exit {r.returncode}): {lines[-1][:70]}")

    def measure(self) -> int:
        t0 = time.perf_counter_ns()
        rc = subprocess.run(self.argv, env=self.env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL).returncode
        ns = time.perf_counter_ns() - t0
        if rc != 0:
            raise RuntimeError(f"{' '.join(self.argv)} exited with {rc}")
        return ns


def isolate_command() -> list[str]:
    """The ``isolate`` console script next to this interpreter, else ``python -m isolate``."""
    script = Path(sys.executable).parent / "isolate"
    if script.exists():
        return [str(script)]
    found = shutil.which("isolate")
    return [found] if found else [sys.executable, "-m", "isolate"]


def python_env(workdir: Path, pycache: bool) -> dict[str, str]:
    """The environment of the Python contenders (see the module docstring)."""
    env = dict(os.environ)
    if pycache:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")
    if (REPO / "isolate").is_dir():   # the repository's isolate if none is installed
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(REPO)]))
    return env


def empty_dir(workdir: Path, name: str) -> str:
    path = workdir / name
    path.mkdir(mode=0o700)
    return str(path)


def build_contenders(workdir: Path, env: dict[str, str]) -> list[Contender]:
    """Every contender, in table order."""
    py, iso = sys.executable, isolate_command()
    return [
        Process("python -c pass", [py, "-c", "pass"], env),
        Process("import isolate", [py, "-c", "import isolate"], env),
        Process("isolate --help", iso + ["--help"], env),
        Process("isolate ps", iso + ["--root", empty_dir(workdir, "isolate-state"), "ps"], env),
        Process("runc list", ["runc", "--root", empty_dir(workdir, "runc-state"), "list"]),
        Process("crun list", ["crun", "--root", empty_dir(workdir, "crun-state"), "list"]),
        Process("isolate run -- true", iso + ["run", "--", TRUE], env),
        Process("bwrap ... true", ["bwrap"] + BWRAP_ARGS + [TRUE]),
        spawn.Crun(workdir, spawn.isolate_default_namespaces()),
    ]


def report(contenders: list[Contender], samples: dict[str, list[int]],
           unavailable: dict[str, str]) -> str:
    """The table (median, p90, x bare python) and the target ratios."""
    med = {n: statistics.median(s) / 1e6 for n, s in samples.items() if s}
    bare = med.get("python -c pass")
    lines = [f"{'contender':<22} {'median ms':>10} {'p90 ms':>8} {'x python':>9}"]
    for c in contenders:
        if c.name in unavailable:
            lines.append(f"{c.name:<22} {unavailable[c.name]}")
            continue
        ratio = f"{med[c.name] / bare:9.2f}" if bare else f"{'-':>9}"
        lines.append(f"{c.name:<22} {med[c.name]:10.3f} "
                     f"{percentile(sorted(samples[c.name]), 0.9):8.3f} {ratio}")
    targets = (("import isolate", "python -c pass", "<= 2"), ("isolate ps", "python -c pass", "<= 3"),
               ("isolate ps", "runc list", None), ("isolate ps", "crun list", None),
               ("isolate run -- true", "bwrap ... true", "< 1"),
               ("isolate run -- true", "crun run", None))
    for a, b, target in targets:
        if med.get(a) and med.get(b):
            goal = f"  (target {target})" if target else ""
            lines.append(f"{a} / {b}: {med[a] / med[b]:.2f} (+{med[a] - med[b]:.1f} ms){goal}")
    return "\n".join(lines)


def importtime(code: str, env: dict[str, str], runs: int = 5) -> list[tuple[str, float, list]]:
    """``python -X importtime -c code``, two levels deep: each top-level
    import's cumulative ms (median of `runs`) with its direct imports', biggest first."""
    tops: dict[str, list[float]] = {}
    children: dict[str, dict[str, list[float]]] = {}
    for _ in range(runs):
        r = subprocess.run([sys.executable, "-X", "importtime", "-c", code], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        pending: dict[str, float] = {}   # a module's imports are listed before it
        for line in r.stderr.splitlines():
            if not line.startswith("import time:") or "cumulative" in line:
                continue
            _, cumulative, name = line.split("|")
            depth = (len(name) - len(name.lstrip()) - 1) // 2
            ms = int(cumulative) / 1000
            if depth == 1:
                pending[name.strip()] = ms
            elif depth == 0:
                tops.setdefault(name.strip(), []).append(ms)
                for child, child_ms in pending.items():
                    children.setdefault(name.strip(), {}).setdefault(child, []).append(child_ms)
                pending = {}
    rows = []
    for name, values in tops.items():
        kids = sorted(((c, statistics.median(v)) for c, v in children.get(name, {}).items()),
                      key=lambda item: -item[1])
        rows.append((name, statistics.median(values), kids))
    return sorted(rows, key=lambda row: -row[1])


def importtime_report(title: str, code: str, env: dict[str, str], least: float = 0.5) -> str:
    """The importtime tree of `code`: entries of `least` ms or more."""
    rows = importtime(code, env)
    total = sum(ms for _, ms, _ in rows)
    lines = [f"{title}: {total:.1f} ms of imports (python -X importtime: cumulative ms, "
             f"median of 5; top level and what each imports directly)"]
    for name, ms, kids in rows:
        if ms < least:
            continue
        lines.append(f"  {ms:6.1f}  {name}")
        lines += [f"  {kid_ms:6.1f}      {kid}" for kid, kid_ms in kids if kid_ms >= least]
    small = [ms for _, ms, _ in rows if ms < least]
    lines.append(f"  {sum(small):6.1f}  ({len(small)} imports under {least} ms each)")
    return "\n".join(lines)


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=100, help="measured rounds (default 100)")
    p.add_argument("--warmup", type=int, default=3, help="unrecorded rounds first (default 3)")
    p.add_argument("--seed", type=int, help="seed for the per-round shuffle")
    p.add_argument("--no-pycache", dest="pycache", action="store_false",
                   help="leave PYTHONDONTWRITEBYTECODE and the bytecode cache as they are")
    p.add_argument("--no-importtime", dest="importtime", action="store_false",
                   help="skip the python -X importtime breakdown")
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="isolate-bench-") as tmp:
        workdir = Path(tmp)
        env = python_env(workdir, args.pycache)
        contenders = build_contenders(workdir, env)
        with spawn.prepared(contenders) as (active, unavailable):
            cache = "bytecode cache on (private prefix)" if args.pycache else "environment as is"
            print(f"whole processes, {args.rounds} interleaved rounds (+{args.warmup} warmup), "
                  f"{cache}; python: {sys.executable}", flush=True)
            t0 = time.monotonic()
            try:
                samples = measure_all(active, args.rounds, args.warmup, args.seed)
            except spawn.Hung as e:
                print(f"error: {e}", file=sys.stderr)
                return 1
            print(report(contenders, samples, unavailable))
            for note in (c.odd for c in contenders if getattr(c, "odd", "")):
                print(f"note: {note}")
            if args.importtime:
                print()
                print(importtime_report("python -c pass", "pass", env))
                print(importtime_report("import isolate", "import isolate", env))
                state = empty_dir(workdir, "importtime-state")
                print(importtime_report("isolate ps", "from isolate.cli.main import main; "
                                        f"main(['--root', {state!r}, 'ps'])", env))
                print(importtime_report("isolate run -- true", "from isolate.cli.main import main; "
                                        f"main(['run', '--', {TRUE!r}])", env))
            print(f"({time.monotonic() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
