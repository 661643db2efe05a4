"""``isolate completion bash``, tried in bash: the script is sourced in a
bash subprocess, which says how it registered (``complete -p isolate``)
and calls the completion function with COMP_WORDS and COMP_CWORD set as
bash sets them (``--root=DIR`` and ``IMAGE:TAG`` split at the '=' and the
':').  Container and image names come from real containers and a real
store, through the script's own call of ``isolate``.
"""
from __future__ import annotations

import contextlib
import io
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, RUN_TIMEOUT, drop_to, run_in_fork, unwrap
from image_builder import build_docker_archive, file
from isolate.cli import main as cli

ENV = dict(os.environ, PYTHONPATH=str(REPO))


@pytest.fixture(scope="module")
def script(tmp_path_factory) -> Path:
    """The script, as `isolate completion bash` prints it."""
    r = subprocess.run([sys.executable, "-m", "isolate", "completion", "bash"], capture_output=True,
                       text=True, env=ENV, timeout=RUN_TIMEOUT)
    assert r.returncode == 0, r.stderr
    path = tmp_path_factory.mktemp("completion") / "isolate.bash"
    path.write_text(r.stdout)
    return path


@pytest.fixture(scope="module")
def on_path(tmp_path_factory) -> Path:
    """A directory holding an `isolate` command (this checkout's), for PATH."""
    directory = tmp_path_factory.mktemp("bin")
    command = directory / "isolate"
    command.write_text(f"#!/bin/sh\nPYTHONPATH={shlex.quote(str(REPO))} "
                       f"exec {shlex.quote(sys.executable)} -m isolate \"$@\"\n")
    command.chmod(0o755)
    return directory


def bash(script: Path, path: Path, code: str, cwd: Path | None = None,
         home: str | None = None) -> str:
    """The output of `code` run by bash (no rc files) after sourcing `script`,
    with `path` first on PATH."""
    env = dict(os.environ, PATH=f"{path}{os.pathsep}{os.environ['PATH']}", HOME=home or "/root")
    code = f"source {shlex.quote(str(script))}\n{code}"
    r = subprocess.run(["bash", "--norc", "--noprofile", "-c", code], capture_output=True,
                       text=True, env=env, cwd=cwd, timeout=RUN_TIMEOUT)
    assert r.returncode == 0, r.stderr
    return r.stdout


def complete(script: Path, path: Path, *words: str, **kwargs) -> list[str]:
    """COMPREPLY for the command line `words`, the cursor in the last one."""
    code = (f"COMP_WORDS=({' '.join(map(shlex.quote, words))}); COMP_CWORD={len(words) - 1}\n"
            f"_isolate isolate\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n")
    return [line for line in bash(script, path, code, **kwargs).splitlines() if line]


def test_the_script_registers_the_function(script: Path, on_path: Path) -> None:
    assert bash(script, on_path, "complete -p isolate") == "complete -F _isolate isolate\n"


def test_subcommands_and_options(script: Path, on_path: Path) -> None:
    commands = complete(script, on_path, "isolate", "")
    assert {"run", "exec", "ps", "stop", "image", "completion", "cp"} <= set(commands)
    assert sorted(complete(script, on_path, "isolate", "r")) == ["restart", "rm", "rmi", "run"]
    assert complete(script, on_path, "isolate", "--ro") == ["--root"]
    # Not --root, which argparse would have taken as its abbreviation.
    assert complete(script, on_path, "isolate", "run", "--ro") == ["--rootfs"]
    assert sorted(complete(script, on_path, "isolate", "stop", "-")) == ["--help", "--time", "-h",
                                                                           "-t"]
    assert complete(script, on_path, "isolate", "image", "") == ["inspect"]
    assert complete(script, on_path, "isolate", "completion", "") == ["bash"]
    assert "--list" not in complete(script, on_path, "isolate", "completion", "--")


def test_option_values(script: Path, on_path: Path, tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("")
    assert sorted(complete(script, on_path, "isolate", "run", "--share", "u")) == ["user", "uts"]
    assert complete(script, on_path, "isolate", "run", "--seccomp", "") == ["default", "unconfined"]
    assert complete(script, on_path, "isolate", "kill", "-s", "SIGKI") == ["SIGKILL"]
    # Directories only for --rootfs, files for --env-file; after '=' as well.
    assert complete(script, on_path, "isolate", "run", "--rootfs", "", cwd=tmp_path) == ["dir"]
    assert sorted(complete(script, on_path, "isolate", "run", "--env-file", "=", cwd=tmp_path)) \
        == ["dir", "file"]
    assert complete(script, on_path, "isolate", "run", "--env-file", "=", "f", cwd=tmp_path) \
        == ["file"]
    # A value never completes as an option or a command.
    assert complete(script, on_path, "isolate", "run", "--name", "") == []
    assert complete(script, on_path, "isolate", "run", "-e", "KEY", "=", "") == []


def test_the_command_of_run_and_exec(script: Path, on_path: Path, tmp_path: Path) -> None:
    """After --, a command from the PATH, then files; no options any more."""
    (tmp_path / "data.txt").write_text("")
    assert "bash" in complete(script, on_path, "isolate", "run", "--rm", "--", "bas")
    assert complete(script, on_path, "isolate", "run", "--", "cat", "da", cwd=tmp_path) \
        == ["data.txt"]
    assert complete(script, on_path, "isolate", "run", "--", "ls", "--ro") == []
    assert complete(script, on_path, "isolate", "exec", "web", "-e", "A=1", "--", "cat", "da",
                    cwd=tmp_path) == ["data.txt"]


# --- names of containers and images ------------------------------------------------------------

@pytest.fixture
def state(tmp_path: Path, on_path: Path):
    """A state directory holding "web" and "worker" (running) and "done"
    (stopped); they are removed after the test."""
    root = tmp_path / "state"

    def isolate(*args: str) -> str:
        r = subprocess.run([str(on_path / "isolate"), "--root", str(root), *args],
                           capture_output=True, text=True, timeout=RUN_TIMEOUT)
        assert r.returncode == 0, r.stderr
        return r.stdout
    try:
        for name, command in (("web", "sleep 1000"), ("worker", "sleep 1000"), ("done", "true")):
            isolate("run", "-d", "--name", name, "--", *command.split())
        assert isolate("wait", "done") == "0\n"
        yield root
    finally:
        for name in ("web", "worker", "done"):
            subprocess.run([str(on_path / "isolate"), "--root", str(root), "rm", "-f", name],
                           capture_output=True, timeout=RUN_TIMEOUT)


def test_container_names(script: Path, on_path: Path, state: Path) -> None:
    """The running ones where a verb takes those, the stopped ones for
    start, all of them for rm and inspect; from the --root of the line,
    given as a word of its own or after '='."""
    def names(*words: str) -> list[str]:
        return sorted(complete(script, on_path, "isolate", "--root", str(state), *words))
    assert names("stop", "") == ["web", "worker"]
    assert names("exec", "w") == ["web", "worker"]
    assert names("kill", "-s", "TERM", "we") == ["web"]
    assert names("stop", "web", "") == ["web", "worker"]       # NAME...
    assert names("start", "") == ["done"]
    assert names("rm", "") == ["done", "web", "worker"]
    assert names("inspect", "d") == ["done"]
    assert names("cp", "w") == ["web:", "worker:"]
    assert names("cp", "web", ":", "/et") == []                # paths inside are not listed
    assert sorted(complete(script, on_path, "isolate", "--root", "=", str(state), "rm", "")) \
        == ["done", "web", "worker"]


def test_names_of_another_state_directory_are_not_offered(script: Path, on_path: Path, state: Path,
                                                          tmp_path: Path) -> None:
    assert complete(script, on_path, "isolate", "--root", str(tmp_path / "empty"), "rm", "") == []
    assert not (tmp_path / "empty").exists()   # a TAB creates nothing


@pytest.fixture
def store(tmp_path: Path, on_path: Path) -> Path:
    """A store holding app:1 and quay.io/org/tool:2.0."""
    archive = tmp_path / "images.tar"
    build_docker_archive(archive, [[file("hello", "hi\n")]], {"Cmd": ["/hello"]},
                         ["app:1", "quay.io/org/tool:2.0"])
    root = tmp_path / "store"
    r = subprocess.run([str(on_path / "isolate"), "--store", str(root), "import", str(archive)],
                       capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert r.returncode == 0, r.stderr
    return root


def test_image_names(script: Path, on_path: Path, store: Path) -> None:
    """As they are typed; after the ':' of a tag (a word of its own for
    bash) only what follows it, which is what bash replaces."""
    def names(*words: str) -> list[str]:
        return sorted(complete(script, on_path, "isolate", "--store", str(store), *words))
    assert names("rmi", "") == ["app:1", "quay.io/org/tool:2.0"]
    assert names("image", "inspect", "app:1", "q") == ["quay.io/org/tool:2.0"]
    assert names("rmi", "app", ":") == ["1"]
    assert names("rmi", "quay.io/org/tool", ":", "2") == ["2.0"]
    assert names("commit", "web", "a") == ["app:1"]
    assert "app:1" in names("run", "--image", "")


def test_the_script_passes_only_the_root_and_store_of_the_line(script: Path,
                                                               tmp_path: Path) -> None:
    """Without --root and --store the listing runs with neither, so that
    isolate finds its default state directory and store as every command
    does; with them, their values (~ expanded, as the shell would)."""
    log = tmp_path / "calls"
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "isolate").write_text(f"#!/bin/sh\necho \"$*\" >> {shlex.quote(str(log))}\n"
                                  f"echo listed\n")
    (fake / "isolate").chmod(0o755)
    assert complete(script, fake, "isolate", "stop", "") == ["listed"]
    assert complete(script, fake, "isolate", "--root", "~/state", "--store=/s", "rmi", "",
                    home="/home/someone") == ["listed"]
    assert log.read_text().splitlines() == [
        "completion bash --list running",
        "--root /home/someone/state --store /s completion bash --list images"]


def test_the_listing_reads_the_default_places(rootless_ids, host_dir: Path) -> None:
    """`isolate completion bash --list` without --root and --store lists the
    containers of the default state directory and the images of the
    default store: a user's, below $XDG_RUNTIME_DIR and $XDG_DATA_HOME."""
    from isolate.images.store import ImageStore
    runtime, data = host_dir / "run", host_dir / "data"
    archive = host_dir / "image.tar"
    build_docker_archive(archive, [[file("hello", "hi\n")]], {"Cmd": ["/hello"]}, ["mine:1"])
    ImageStore(data / "isolate").import_archive(archive)
    for directory in (runtime, data):
        directory.mkdir(mode=0o700, exist_ok=True)
        for path in [directory, *directory.rglob("*")]:
            os.chown(path, *rootless_ids, follow_symlinks=False)

    def listed() -> tuple[str, str]:
        from isolate.named.state import ContainerState, StateDir
        os.environ.update(XDG_RUNTIME_DIR=str(runtime), XDG_DATA_HOME=str(data))
        # This very process stands for a running container of the user's.
        StateDir().save(ContainerState.for_process("mine", os.getpid(), ["sleep", "1"]))
        out = []
        for kind in ("running", "images"):
            with contextlib.redirect_stdout(io.StringIO()) as text:
                assert cli.main(["completion", "bash", "--list", kind]) == 0
            out.append(text.getvalue())
        return out[0], out[1]
    assert unwrap(run_in_fork(listed, setup=drop_to(*rootless_ids))) == ("mine\n", "mine:1\n")


def test_the_listing_of_a_missing_store_is_empty(tmp_path: Path) -> None:
    with contextlib.redirect_stdout(io.StringIO()) as text:
        assert cli.main(["--store", str(tmp_path / "none"), "completion", "bash", "--list",
                         "images"]) == 0
    assert text.getvalue() == "" and not (tmp_path / "none").exists()
