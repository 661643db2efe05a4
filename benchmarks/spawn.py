#!/usr/bin/env python3
"""Spawn-to-exit latency of /bin/true: isolate against its floor and its peers.

Usage: ``python benchmarks/spawn.py [--rounds N]`` (as root, from the repo);
1000 rounds by default, about half a minute.

Every round runs every contender once, in a freshly shuffled order, so drift
(CPU frequency, page cache, other load) hits all contenders alike.  The
contenders:

* ``floor``: benchmarks/floor.c, compiled here: clone3 with the same
  namespaces as isolate's default, id maps written by the parent, exec, wait.
  It is a server (one spawn per line on its stdin) and times itself, so the
  harness's own overhead is not in its numbers.
* ``subprocess``: ``subprocess.run(["/bin/true"])``, no isolation at all.
* ``isolate``: ``isolate.run(["/bin/true"])`` with the default isolation,
  which includes masked /proc paths and a seccomp filter bwrap does not set
  by default; ``isolate (no seccomp)`` is the same with ``seccomp=None``;
  ``isolate + limits`` adds ``limits=CgroupLimit(memory="256M", pids=64,
  cpu=1)``: a cgroup made, joined and removed per run.
* ``bwrap``: ``bwrap --unshare-all --ro-bind / / --proc /proc --dev /dev
  --tmpfs /tmp /bin/true`` through ``subprocess.run``; ``bwrap + seccomp``
  adds ``--seccomp FD`` with isolate's default filter (the same BPF).
* ``crun``: ``crun run`` of a generated OCI bundle (busybox as /bin/true in a
  read-only root, the same namespaces, uid/gid maps and /proc, /dev, /tmp
  mounts), through ``subprocess.run``; a unique container id per run and a
  private ``--root`` state directory that is removed at the end.

Contenders that are not installed are reported as such, not as errors.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TRUE = "/bin/true"
# docs/api.md: isolate's default namespaces (used when isolate can't be asked).
DOC_DEFAULT_NAMESPACES = ("user", "mount", "pid", "uts", "ipc", "net", "cgroup", "time")
OCI_NAMESPACE = {"net": "network"}
BWRAP_ARGS = ["--unshare-all", "--ro-bind", "/", "/", "--proc", "/proc",
              "--dev", "/dev", "--tmpfs", "/tmp"]
CGROUP_UNIFIED = Path("/sys/fs/cgroup/unified")


class Unavailable(Exception):
    """A contender cannot run here; the message goes into its table row."""


class Contender:
    """One way of running /bin/true; ``measure()`` returns one sample in ns."""

    name = "?"

    def setup(self) -> None:
        """Prepare and check that one run works; raise Unavailable if not."""

    def measure(self) -> int:
        """Run /bin/true once and return its spawn-to-exit time in ns."""
        raise NotImplementedError

    def close(self) -> None:
        """Release every resource the contender holds."""


def timed(fn: Callable[[], object]) -> int:
    """Call ``fn`` and return the wall time it took, in ns."""
    t0 = time.perf_counter_ns()
    fn()
    return time.perf_counter_ns() - t0


def run_checked(argv: list[str]) -> None:
    """Run a command with inherited stdio; raise RuntimeError unless it exits 0."""
    rc = subprocess.run(argv).returncode
    if rc != 0:
        raise RuntimeError(f"{argv[0]} exited with {rc}")


def check_command(argv: list[str]) -> None:
    """Run a command once, capturing output; raise Unavailable with its error."""
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if r.returncode != 0:
        lines = (r.stderr or r.stdout).strip().splitlines() or [""]
        raise Unavailable(f"failed (exit {r.returncode}): {lines[-1][:70]}")


class LineServer:
    """A child process answering one line (a number of ns) per request line."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)

    def request(self, line: str = "run") -> int:
        """Send one request and return the answer as an int (-1: it failed)."""
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer:
            raise RuntimeError(f"server {self.proc.args[0]} died")
        return int(answer)

    def close(self) -> None:
        """Close its stdin (EOF ends it) and reap it."""
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()


class Floor(Contender):
    """benchmarks/floor.c as a spawn server with the given namespaces."""

    name = "floor (C clone+exec)"

    def __init__(self, workdir: Path, namespaces: tuple[str, ...]) -> None:
        self.workdir = workdir
        self.namespaces = namespaces
        self.server: Optional[LineServer] = None

    def setup(self) -> None:
        cc = shutil.which("cc") or shutil.which("gcc")
        if not cc:
            raise Unavailable("not installed (no C compiler)")
        exe = self.workdir / "floor"
        r = subprocess.run([cc, "-O2", "-o", str(exe), str(HERE / "floor.c")],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise Unavailable(f"failed to compile: {r.stderr.strip()[:70]}")
        self.server = LineServer([str(exe), TRUE, ",".join(self.namespaces) or "none"])
        if self.server.request() < 0:
            raise Unavailable("failed: clone/exec error (see stderr)")

    def measure(self) -> int:
        assert self.server
        ns = self.server.request()
        if ns < 0:
            raise RuntimeError("floor: spawn failed")
        return ns

    def close(self) -> None:
        if self.server:
            self.server.close()


class Call(Contender):
    """A Python callable timed in this process."""

    def __init__(self, name: str, fn: Callable[[], None],
                 prepare: Optional[Callable[[], None]] = None) -> None:
        self.name = name
        self.fn = fn
        self.prepare = prepare

    def setup(self) -> None:
        if self.prepare:
            self.prepare()
        self.fn()

    def measure(self) -> int:
        return timed(self.fn)


class Command(Call):
    """An external command run with subprocess.run, timed in this process."""

    def __init__(self, name: str, argv: list[str]) -> None:
        super().__init__(name, lambda: run_checked(argv))
        self.argv = argv

    def setup(self) -> None:
        if not shutil.which(self.argv[0]):
            raise Unavailable("not installed")
        check_command(self.argv)


def isolate_module():
    """Import isolate: the installed one, else the one in this repository."""
    try:
        import isolate
    except ImportError:
        sys.path.insert(0, str(REPO))
        sys.modules.pop("isolate", None)
        import isolate
    return isolate


def isolate_default_namespaces() -> tuple[str, ...]:
    """isolate's default namespaces, as isolate itself reports them if it can."""
    try:
        names = set(isolate_module().Config().namespaces)
    except Exception:  # not built yet, or no Config: fall back to the docs
        return DOC_DEFAULT_NAMESPACES
    order = {n: i for i, n in enumerate(DOC_DEFAULT_NAMESPACES)}
    return tuple(sorted(names, key=lambda n: (order.get(n, len(order)), n)))


def isolate_contender(namespaces: Optional[tuple[str, ...]], name: str = "isolate.run",
                      late_config: Optional[Callable[[], dict]] = None, **config: object) -> Contender:
    """isolate.run(["/bin/true"]), default config unless namespaces is given;
    late_config() adds keywords made once isolate is imported."""
    kwargs = dict(config) if namespaces is None else {"namespaces": namespaces, **config}
    state: dict = {}

    def prepare() -> None:
        try:
            state["run"] = isolate_module().run
        except Exception as e:
            raise Unavailable(f"not importable: {type(e).__name__}: {e}"[:80]) from e
        if late_config is not None:
            kwargs.update(late_config())

    def once() -> None:
        rc = state["run"]([TRUE], **kwargs).returncode
        if rc != 0:
            raise RuntimeError(f"isolate.run: /bin/true exited with {rc}")

    return Call(name, once, prepare)


def isolate_limits_contender(namespaces: Optional[tuple[str, ...]]) -> Contender:
    """isolate.run with cgroup limits (memory, pids, cpu)."""
    try:
        limits = isolate_module().CgroupLimit(memory="256M", pids=64, cpu=1)
    except Exception as e:  # not built yet: reported by the plain contender
        limits = None
        reason = f"{type(e).__name__}: {e}"[:80]
    if limits is None:
        def missing() -> None:
            raise Unavailable(reason)
        return Call("isolate + limits", lambda: None, missing)
    return isolate_contender(namespaces, "isolate + limits", limits=limits)


def busybox_root(workdir: Path) -> Path:
    """A root directory holding busybox as /bin/true, and the mount points."""
    busybox = shutil.which("busybox")
    if not busybox:
        raise Unavailable("no busybox (apt-get install busybox-static)")
    root = workdir / "busybox-root"
    if not root.exists():
        for d in ("bin", "proc", "dev", "tmp", "sys"):
            (root / d).mkdir(parents=True)
        shutil.copy2(busybox, root / "bin" / "true")
    return root


def isolate_root_contender(workdir: Path, namespaces: Optional[tuple[str, ...]],
                           overlay: bool) -> Contender:
    """isolate.run on a busybox root: bound (read-only), or as the one lower
    layer of an Overlay with an ephemeral tmpfs upper."""
    def rootfs() -> dict:
        root = busybox_root(workdir)
        if not overlay:
            return {"rootfs": str(root)}
        try:
            return {"rootfs": isolate_module().Overlay(lower=[root])}
        except AttributeError as e:
            raise Unavailable(f"{type(e).__name__}: {e}"[:80]) from e
    name = "isolate overlay root" if overlay else "isolate bind root"
    return isolate_contender(namespaces, name, late_config=rootfs)


class BwrapSeccomp(Call):
    """bwrap with isolate's default seccomp filter (``--seccomp FD``; bwrap
    reads the fd to its end, so it is opened afresh for every run)."""

    def __init__(self, workdir: Path) -> None:
        super().__init__("bwrap + seccomp", self.once)
        self.filter = workdir / "seccomp.bpf"

    def setup(self) -> None:
        if not shutil.which("bwrap"):
            raise Unavailable("not installed")
        try:
            from isolate.security import seccomp
            self.filter.write_bytes(seccomp.compile_bpf(seccomp.docker_default()))
        except Exception as e:
            raise Unavailable(f"no filter: {type(e).__name__}: {e}"[:80]) from e
        self.once()

    def once(self) -> None:
        fd = os.open(self.filter, os.O_RDONLY)
        try:
            subprocess.run(["bwrap", "--seccomp", str(fd)] + BWRAP_ARGS + [TRUE],
                           pass_fds=[fd], check=True)
        finally:
            os.close(fd)


# ---------------------------------------------------------------- crun ------

def crun_needs_hybrid_workaround() -> bool:
    """crun refuses hybrid cgroups when the v2 hierarchy holds any controller."""
    try:
        return bool((CGROUP_UNIFIED / "cgroup.controllers").read_text().strip())
    except OSError:
        return False


def oci_config(spec: dict, rootfs: Path, namespaces: tuple[str, ...]) -> dict:
    """Edit a ``crun spec`` config into the equivalent of isolate's default."""
    spec["process"].update(terminal=False, args=[TRUE])
    spec["root"] = {"path": str(rootfs), "readonly": True}
    keep = ("/proc", "/dev", "/dev/pts", "/dev/shm")
    mounts = [m for m in spec["mounts"] if m["destination"] in keep]
    for m in mounts:  # gid 5 is not mapped in a one-id user namespace
        m["options"] = [o for o in m.get("options", []) if o != "gid=5"]
    mounts.append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                   "options": ["nosuid", "nodev", "mode=1777"]})
    spec["mounts"] = mounts
    spec["hostname"] = "isolate"
    linux = spec["linux"]
    linux["namespaces"] = [{"type": OCI_NAMESPACE.get(n, n)} for n in namespaces]
    if "user" in namespaces:
        linux["uidMappings"] = [{"containerID": 0, "hostID": os.geteuid(), "size": 1}]
        linux["gidMappings"] = [{"containerID": 0, "hostID": os.getegid(), "size": 1}]
    return spec


def make_bundle(workdir: Path, namespaces: tuple[str, ...]) -> Path:
    """Build an OCI bundle whose read-only root holds busybox as /bin/true."""
    busybox = shutil.which("busybox")
    if not busybox:
        raise Unavailable("no busybox (apt-get install busybox-static)")
    bundle = workdir / "bundle"
    rootfs = bundle / "rootfs"
    for d in ("bin", "proc", "dev", "tmp"):
        (rootfs / d).mkdir(parents=True)
    shutil.copy2(busybox, rootfs / "bin" / "true")
    subprocess.run(["crun", "spec"], cwd=bundle, check=True)
    path = bundle / "config.json"
    path.write_text(json.dumps(oci_config(json.loads(path.read_text()), rootfs, namespaces)))
    return bundle


class Crun(Contender):
    """``crun run`` of a generated bundle, timed by a helper server.

    The helper runs in a private mount namespace when the host has hybrid
    cgroups with a controller on v2, a layout crun refuses: there it hides the
    v2 controller list behind an empty file (host unaffected) and crun runs
    with its usual cgroupfs manager on the v1 controllers.
    """

    name = "crun run"
    prefix = f"isobench-{os.getpid()}"

    def __init__(self, workdir: Path, namespaces: tuple[str, ...]) -> None:
        self.workdir = workdir
        self.namespaces = namespaces
        self.server: Optional[LineServer] = None
        self.state = workdir / "crun-state"
        self.odd = ""

    def setup(self) -> None:
        if not shutil.which("crun"):
            raise Unavailable("not installed")
        bundle = make_bundle(self.workdir, self.namespaces)
        argv = [sys.executable, __file__, "--crun-server", str(bundle), str(self.state),
                self.prefix]
        if crun_needs_hybrid_workaround():
            self.odd = "hybrid cgroups: crun run in a mount ns without v2 controllers"
            argv = ["unshare", "--mount", "--propagation", "private", "--"] + argv
        self.server = LineServer(argv)
        if self.server.request("check") < 0:
            raise Unavailable("failed: crun run (its error is on stderr above)")

    def measure(self) -> int:
        assert self.server
        ns = self.server.request()
        if ns < 0:
            raise RuntimeError("crun run failed")
        return ns

    def close(self) -> None:
        if self.server:
            self.server.close()
        leftovers = sorted(p.name for p in Path("/sys/fs/cgroup").glob(f"*/{self.prefix}*"))
        if leftovers:
            print(f"warning: crun left cgroups behind: {leftovers[:3]}", file=sys.stderr)


def crun_server(bundle: str, state: str, prefix: str) -> int:
    """Helper mode: one ``crun run`` per stdin line, answering its time in ns."""
    if crun_needs_hybrid_workaround():
        empty = Path(state).with_name("empty")
        empty.write_text("")
        subprocess.run(["mount", "--bind", str(empty),
                        str(CGROUP_UNIFIED / "cgroup.controllers")], check=True)
    base = ["crun", "--root", state, "run", "--bundle", bundle]
    for n, line in enumerate(sys.stdin):
        argv = base + [f"{prefix}-{n}"]
        kw = {"stdin": subprocess.DEVNULL, "stdout": sys.stderr.fileno()}
        if line.strip() == "check":
            r = subprocess.run(argv, **kw, stderr=subprocess.PIPE, text=True)
            if r.returncode != 0:
                print(f"crun: {r.stderr.strip()}", file=sys.stderr)
            print(-1 if r.returncode else 0, flush=True)
            continue
        t0 = time.perf_counter_ns()
        rc = subprocess.run(argv, **kw).returncode
        ns = time.perf_counter_ns() - t0
        print(-1 if rc else ns, flush=True)
    left = subprocess.run(["crun", "--root", state, "list", "-q"],
                          capture_output=True, text=True).stdout.split()
    for cid in left:  # should not happen: crun run deletes its container
        subprocess.run(["crun", "--root", state, "delete", "-f", cid])
    return 0


# ---------------------------------------------------------------- report ----

def percentile(sorted_ns: list[int], q: float) -> float:
    """The q-quantile (0..1) of sorted samples, nearest-rank, in ms."""
    k = min(len(sorted_ns) - 1, max(0, round(q * (len(sorted_ns) - 1))))
    return sorted_ns[k] / 1e6


def report(contenders: list[Contender], samples: dict[str, list[int]],
           unavailable: dict[str, str]) -> str:
    """Format the results table and the isolate ratios."""
    med = {n: statistics.median(s) / 1e6 for n, s in samples.items() if s}
    floor = next((med[c.name] for c in contenders if isinstance(c, Floor) and c.name in med), None)
    lines = [f"{'contender':<22} {'median ms':>10} {'p90 ms':>8} {'x floor':>8}"]
    for c in contenders:
        if c.name in unavailable:
            lines.append(f"{c.name:<22} {unavailable[c.name]}")
            continue
        s = sorted(samples[c.name])
        ratio = f"{med[c.name] / floor:8.2f}" if floor else f"{'-':>8}"
        lines.append(f"{c.name:<22} {med[c.name]:10.3f} {percentile(s, 0.9):8.3f} {ratio}")
    iso = med.get("isolate.run")
    if iso and floor:
        lines.append(f"isolate / floor median: {iso / floor:.2f}  (target <= 2)")
    if iso and med.get("isolate + limits"):
        lines.append(f"isolate + limits / isolate.run: {med['isolate + limits'] / iso:.2f} "
                     f"(+{med['isolate + limits'] - iso:.3f} ms for the cgroup)")
    bind, overlay = med.get("isolate bind root"), med.get("isolate overlay root")
    if bind and overlay:
        lines.append(f"isolate overlay root / bind root: {overlay / bind:.2f} "
                     f"(+{overlay - bind:.3f} ms for the overlay)")
    for bwrap, isolate in (("bwrap", "isolate (no seccomp)"), ("bwrap + seccomp", "isolate.run")):
        bw, iso = med.get(bwrap), med.get(isolate)
        if iso and bw:
            lines.append(f"{bwrap} / {isolate}: {bw / iso:.2f}  (target >= 2)")
    return "\n".join(lines)


class Hung(Exception):
    """A contender did not finish within the watchdog's limit."""


def measure_all(contenders: list[Contender], rounds: int, warmup: int,
                seed: Optional[int], limit: int = 60) -> dict[str, list[int]]:
    """The interleaved loop: each round runs every contender once, shuffled.

    A watchdog (SIGALRM, armed outside the timed calls) turns a contender that
    hangs for ``limit`` seconds into an error naming it, not a silent hang.
    """
    rng = random.Random(seed)
    samples: dict[str, list[int]] = {c.name: [] for c in contenders}
    order = list(contenders)
    current = [""]

    def expire(_signum: int, _frame: object) -> None:
        raise Hung(f"{current[0]} did not finish within {limit} s")

    previous = signal.signal(signal.SIGALRM, expire)
    try:
        for r in range(warmup + rounds):
            rng.shuffle(order)
            gc.collect()
            for c in order:
                current[0] = c.name
                signal.alarm(limit)
                ns = c.measure()
                signal.alarm(0)
                if r >= warmup:
                    samples[c.name].append(ns)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return samples


def build_contenders(workdir: Path, namespaces: Optional[tuple[str, ...]]) -> list[Contender]:
    """Every contender, in table order."""
    ns = namespaces if namespaces is not None else isolate_default_namespaces()
    return [
        Floor(workdir, ns),
        Command("subprocess.run", [TRUE]),
        isolate_contender(namespaces),
        isolate_contender(namespaces, "isolate (no seccomp)", seccomp=None),
        isolate_limits_contender(namespaces),
        isolate_root_contender(workdir, namespaces, overlay=False),
        isolate_root_contender(workdir, namespaces, overlay=True),
        Command("bwrap", ["bwrap"] + BWRAP_ARGS + [TRUE]),
        BwrapSeccomp(workdir),
        Crun(workdir, ns),
    ]


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=1000, help="measured rounds (default 1000)")
    p.add_argument("--warmup", type=int, default=5, help="unrecorded rounds first (default 5)")
    p.add_argument("--seed", type=int, help="seed for the per-round shuffle")
    p.add_argument("--namespaces", help="comma-separated namespaces for floor, isolate and "
                   "crun (default: isolate's default)")
    p.add_argument("--crun-server", nargs=3, help=argparse.SUPPRESS)
    return p.parse_args(argv)


@contextlib.contextmanager
def prepared(contenders: list) -> Iterator[tuple[list, dict[str, str]]]:
    """Set every contender up and yield those that can run and why the others
    cannot (a contender that breaks is a row of the table, not a crash);
    close them all at the end."""
    unavailable: dict[str, str] = {}
    try:
        for c in contenders:
            try:
                c.setup()
            except Unavailable as e:
                unavailable[c.name] = str(e)
            except Exception as e:
                unavailable[c.name] = f"failed: {type(e).__name__}: {e}"[:80]
        yield [c for c in contenders if c.name not in unavailable], unavailable
    finally:
        for c in contenders:
            c.close()


def main(argv: Optional[list[str]] = None) -> int:
    """Set up every contender, run the interleaved rounds, print the table."""
    args = parse_args(argv)
    if args.crun_server:
        return crun_server(*args.crun_server)
    namespaces = None
    if args.namespaces is not None:
        namespaces = tuple(n for n in args.namespaces.split(",") if n and n != "none")
    with tempfile.TemporaryDirectory(prefix="isolate-bench-") as tmp:
        contenders = build_contenders(Path(tmp), namespaces)
        with prepared(contenders) as (active, unavailable):
            ns = contenders[0].namespaces  # type: ignore[attr-defined]
            print(f"/bin/true spawn-to-exit, {args.rounds} interleaved rounds "
                  f"(+{args.warmup} warmup), namespaces: {','.join(ns) or 'none'}",
                  flush=True)
            t0 = time.monotonic()
            try:
                samples = measure_all(active, args.rounds, args.warmup, args.seed)
            except Hung as e:
                print(f"error: {e}", file=sys.stderr)
                return 1
            print(report(contenders, samples, unavailable))
            odd = [c.odd for c in contenders if getattr(c, "odd", "")]
            for note in odd:
                print(f"note: {note}")
            print(f"({time.monotonic() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
