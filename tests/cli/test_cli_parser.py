"""The command line's parser itself: every subcommand's --help ends with an
example that parses, no parser takes an abbreviated option (argparse's
default would read ``isolate run --root DIR`` as --rootfs DIR), and every
subcommand has a module that runs it."""
from __future__ import annotations

import os
import shlex
import subprocess
import sys

import pytest

from conftest import REPO, RUN_TIMEOUT
from isolate.cli import main as cli
from isolate.cli.completion import parsers

#: Every parser of the command line, by its subcommands ("" for isolate itself).
PARSERS = {" ".join(path): parser for path, parser in parsers(cli.build_parser()[0])}
SUBCOMMANDS = sorted(path for path in PARSERS if path)


def isolate(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "isolate", *args], capture_output=True,
                          text=True, env=env, timeout=RUN_TIMEOUT)


def test_every_command_is_checked() -> None:
    # The walk over the parser (which the shell completion uses too) found them all.
    assert set(SUBCOMMANDS) >= set(cli.build_parser()[1]) | {"image inspect", "completion"}


@pytest.mark.parametrize("path", SUBCOMMANDS)
def test_help_ends_with_an_example_that_parses(path: str) -> None:
    """`isolate X --help` ends with "example:" and a line of X's usage that
    the parser takes (shell redirections after it aside)."""
    text = PARSERS[path].format_help()
    *_, heading, example, end = text.split("\n")
    assert (heading, end) == ("example:", ""), text
    words = shlex.split(example)
    words = words[1:words.index(">")] if ">" in words else words[1:]
    assert words[:len(path.split())] == path.split(), example
    args = cli.parse_args(words)   # exits (125) if it does not parse
    parsed = " ".join(filter(None, [args.subcommand, getattr(args, "image_command", None)]))
    assert parsed.startswith(path), example


def test_help_in_a_subprocess_ends_with_the_example() -> None:
    r = isolate("stop", "--help")
    assert r.returncode == 0 and r.stdout.endswith("example:\n  isolate stop -t 5 web\n")
    r = isolate("--help")
    assert r.returncode == 0
    # Every subcommand's summary on its name's line, "completion" (the longest) too.
    assert "    completion  print a shell completion script\n" in r.stdout


@pytest.mark.parametrize("path", sorted(PARSERS))
def test_no_parser_takes_abbreviations(path: str) -> None:
    assert PARSERS[path].allow_abbrev is False


def test_run_root_is_not_rootfs() -> None:
    """The global --root after the subcommand is refused, with a hint, and
    nothing runs; before it, it is the global option."""
    r = isolate("run", "--root", "/nonexistent", "--", "sh", "-c", "echo ran")
    assert r.returncode == cli.EXIT_RUNTIME_ERROR and "ran" not in r.stdout
    assert "unrecognized arguments: --root" in r.stderr
    assert "give it before the subcommand" in r.stderr
    with pytest.raises(SystemExit) as exit_:
        cli.parse_args(["run", "--root=/x", "--", "true"])
    assert exit_.value.code == cli.EXIT_RUNTIME_ERROR
    args = cli.parse_args(["--root", "/x", "run", "--rootfs", "/y", "--", "true"])
    assert (args.root, args.rootfs, args.command) == ("/x", "/y", ["true"])


@pytest.mark.parametrize("argv", [["ps", "--al"], ["--ro", "/x", "ps"],
                                  ["stop", "--ti", "1", "w"], ["logs", "--foll", "w"],
                                  ["run", "--image=busybox", "--hostn", "h"]])
def test_prefixes_of_options_are_refused(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.parse_args(argv)
    assert exit_.value.code == cli.EXIT_RUNTIME_ERROR
    assert ": error: " in capsys.readouterr().err


def test_short_flags_still_combine() -> None:
    args = cli.parse_args(["run", "-it", "--rm", "--", "sh"])
    assert (args.tty, args.interactive, args.rm) == (True, True, True)
    assert cli.parse_args(["ps", "-a"]).all


@pytest.mark.parametrize("name", sorted(cli.build_parser()[1]))
def test_every_subcommand_has_a_handler(name: str) -> None:
    assert callable(cli.handler(name))


def test_hidden_list_option_is_not_in_help() -> None:
    # The completion script's own call (isolate/cli/completion.py), not for people.
    assert "--list" not in PARSERS["completion"].format_help()
