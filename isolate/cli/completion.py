"""``isolate completion bash``: a bash completion script, generated from the
argument parser (main.build_parser), so that it offers what the command
line takes: subcommands, each one's options, the choices of an option
that has them, and what options.completes() notes on an argument (the
names of containers or images, files, directories, signals, commands).

The script carries the parser's words; names it asks for at each TAB, by
running ``isolate [--root DIR] [--store DIR] completion bash --list KIND``
with the --root and --store given on the line being completed, so that
it lists the containers and images the command will use: those of the
default state directory and store otherwise, as every command finds
them.  That listing reads the state records and the store's image records
and nothing more: it creates no missing directory (a TAB leaves no trace)
and loads neither the image store (tarfile, hashlib) nor the spawn path.

Not argcomplete: it makes the program complete itself, so every call
of ``isolate`` would import it to find out whether it is being asked to
(tests/test_startup.py keeps the CLI's start cheap), and it would be a
dependency; a script generated once costs nothing at run time.
"""
from __future__ import annotations

import argparse
import os
import shlex
from collections.abc import Iterator
from typing import Callable

from isolate.cli.images import default_store
from isolate.cli.options import CONTAINERS, FILES, IMAGES, PROGRAMS, RUNNING
from isolate.named.state import RUNNING as RUNNING_STATUS
from isolate.named.state import StateDir, default_root


def cmd_completion(args: argparse.Namespace) -> int:
    """``isolate completion bash``: print the script; with --list KIND (the
    script's own call), the names of that kind, one per line."""
    if args.list is None:
        from isolate.cli.main import build_parser
        print(bash_script(build_parser()[0]), end="")
        return 0
    names = (image_names(args.store or default_store()) if args.list == IMAGES
             else container_names(args.root, args.list))
    for name in names:
        print(name)
    return 0


def container_names(root: str | None, kind: str) -> list[str]:
    """The names of the containers in the state directory `root` (None: the
    default one): all of them (CONTAINERS), the RUNNING or the STOPPED ones."""
    # StateDir would create a missing directory: there is nothing to list in it.
    if not os.path.isdir(root or default_root()):
        return []
    return [record.name for record in StateDir(root).list()
            if kind == CONTAINERS or (record.status() == RUNNING_STATUS) == (kind == RUNNING)]


def image_names(store: str) -> list[str]:
    """The names of the images in the store `store`, as they are typed:
    "busybox:latest", "quay.io/org/app:1", "app@sha256:..."."""
    # The store's records (its images/ directory, laid out as
    # isolate.images.store says), read without an ImageStore: that would
    # create a missing store and load the archive readers.
    from isolate.images.records import Records
    from isolate.images.ref import is_reference, parse_reference
    directory = os.path.join(store, "images")
    if not os.path.isdir(directory):
        return []
    names = set()
    for record in Records(directory, os.path.join(store, "tmp")).all():
        for reference in map(parse_reference, filter(is_reference, record["names"])):
            names.add(f"{reference.familiar}:{reference.tag}" if reference.tag
                      else f"{reference.familiar}@{reference.digest}")
    return sorted(names)


# --- the script ------------------------------------------------------------------------------

def bash_script(parser: argparse.ArgumentParser) -> str:
    """The bash completion script of `parser` (isolate's)."""
    specs, values = [], []
    for path, command in parsers(parser):
        key = shlex.quote(" ".join(path))
        flags, valued, slots, rest, command_slot = [], [], [], "", -1
        for action in _visible(command):
            if action.option_strings:
                flags += action.option_strings
                if action.nargs != 0:
                    valued += action.option_strings
                    spec = _spec(action)
                    if spec:
                        patterns = "|".join(shlex.quote(f"{' '.join(path)}|{option}")
                                            for option in action.option_strings)
                        values.append(f"    {patterns}) spec={shlex.quote(spec)} ;;")
                continue
            if PROGRAMS in getattr(action, "completes", ()):
                # The command, then its arguments: files, as bash completes them.
                command_slot, rest = len(slots), f"@{FILES}"
            elif action.nargs in ("+", "*", argparse.REMAINDER):
                rest = _spec(action)
            slots.append(_spec(action))
        specs.append(
            f"    {key}) flags={shlex.quote(' '.join(flags))}; "
            f"valued={shlex.quote(' '.join(valued))}; "
            f"commands={shlex.quote(' '.join(_subcommands(command)))}; "
            f"slots=({' '.join(map(shlex.quote, slots))}); rest={shlex.quote(rest)}; "
            f"command_slot={command_slot} ;;")
    return _SCRIPT.replace("@SPECS@", "\n".join(specs)).replace("@VALUES@", "\n".join(values))


def parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = (),
             ) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """`parser` and its subcommands' parsers, each with its path of subcommands."""
    yield path, parser
    for action in _visible(parser):
        if isinstance(action, argparse._SubParsersAction):
            for name, command in action.choices.items():
                yield from parsers(command, (*path, name))


def _visible(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The arguments of `parser` that its --help shows.  (argparse offers no
    public way to list them; argcomplete and shtab read _actions too.)"""
    return [action for action in parser._actions if action.help != argparse.SUPPRESS]


def _subcommands(parser: argparse.ArgumentParser) -> list[str]:
    return [name for action in _visible(parser) if isinstance(action, argparse._SubParsersAction)
            for name in action.choices]


def _spec(action: argparse.Action) -> str:
    """What a value of `action` completes to, for the script: its choices as
    words, its options.completes() kinds as @KIND, or nothing."""
    if isinstance(action, argparse._SubParsersAction):
        return " ".join(action.choices)
    kinds: tuple[str, ...] = getattr(action, "completes", ())
    if kinds:
        return " ".join(f"@{kind}" for kind in kinds)
    return " ".join(map(str, action.choices or ()))


#: The script; @SPECS@ and @VALUES@ are the parser's, filled in by bash_script().
_SCRIPT = r"""# bash completion for isolate.  Load it with: source <(isolate completion bash)
# or save it as /etc/bash_completion.d/isolate (or in
# ~/.local/share/bash-completion/completions/isolate).  Generated by
# `isolate completion bash` from isolate's own parser: generate it again
# after an upgrade.

# What the command path $1 takes: its options (flags), those of them that
# take a value (valued), its subcommands (commands), how its positional
# arguments complete in order (slots), any further one (rest), and which
# slot is the command a run or an exec runs (command_slot, -1 if none).
_isolate_spec() {
    case $1 in
@SPECS@
    esac
}

# How the value of option $2 of the command path $1 completes (spec).
_isolate_value() {
    spec=''
    case "$1|$2" in
@VALUES@
    esac
}

# The names of kind $1 (containers, running, stopped, images), from
# `isolate completion bash --list`, with the --root and --store of the
# line: else isolate's defaults, as the command itself will use.
_isolate_list() {
    "$program" "${globals[@]}" completion bash --list "$1" 2>/dev/null
}

# A path as the shell will read it: ~ and ~/... are the home directory.
_isolate_tilde() {
    if [[ $1 == \~ || $1 == \~/* ]]; then
        printf '%s\n' "$HOME${1:1}"
    else
        printf '%s\n' "$1"
    fi
}

# COMPREPLY: what each source in $@ (a word, or @KIND) offers that starts
# with the argument at the cursor ($whole), less what comes before the
# part that bash replaces ($piece): bash splits "busybox:1.36" at the ':'.
_isolate_reply() {
    local source words='' found=()
    for source; do
        case $source in
        @flags) words+=" $flags" ;;
        @containers|@running|@stopped|@images)
            mapfile -t -O "${#found[@]}" found \
                < <(compgen -W "$(_isolate_list "${source#@}")" -- "$whole") ;;
        @container-paths)
            # NAME: of a running container; the paths inside it are not listed.
            if [[ $whole != *:* ]]; then
                mapfile -t -O "${#found[@]}" found \
                    < <(compgen -S : -W "$(_isolate_list running)" -- "$whole")
                compopt -o nospace 2>/dev/null
            fi ;;
        @files)
            mapfile -t -O "${#found[@]}" found < <(compgen -f -- "$whole")
            compopt -o filenames 2>/dev/null ;;
        @directories)
            mapfile -t -O "${#found[@]}" found < <(compgen -d -- "$whole")
            compopt -o filenames 2>/dev/null ;;
        @programs) mapfile -t -O "${#found[@]}" found < <(compgen -c -- "$whole" | sort -u) ;;
        @signals) mapfile -t -O "${#found[@]}" found < <(compgen -A signal -- "$whole") ;;
        *) words+=" $source" ;;
        esac
    done
    [[ -n $words ]] && mapfile -t -O "${#found[@]}" found < <(compgen -W "$words" -- "$whole")
    local before=${whole%"$piece"}
    COMPREPLY=("${found[@]#"$before"}")
}

_isolate() {
    local cur=${COMP_WORDS[COMP_CWORD]} program path='' flags valued commands rest spec
    local slots=() globals=() command_slot=-1
    local i word pending='' glued=0 count=0 dashdash=0
    program=$(_isolate_tilde "${COMP_WORDS[0]}")
    # The argument at the cursor: bash splits NAME:PATH and IMAGE:TAG at
    # the ':' (COMP_WORDBREAKS), so it starts at `start`; the part after
    # the last ':' (or '=') is what bash replaces.
    local piece=$cur whole=$cur start=$COMP_CWORD
    [[ $cur == [:=] ]] && piece='' whole=''
    [[ $cur == : ]] && whole=:
    while ((start > 1)) && [[ ${COMP_WORDS[start]} == : || ${COMP_WORDS[start-1]} == : ]]; do
        start=$((start - 1))
        whole=${COMP_WORDS[start]}$whole
    done
    _isolate_spec "$path"
    # The words before it: options and their values, subcommands, positionals.
    for ((i = 1; i < start; i++)); do
        word=${COMP_WORDS[i]}
        if [[ $word == [=:] ]]; then   # --opt=VALUE, NAME:PATH: one argument in pieces
            glued=1
            continue
        fi
        if [[ -z $pending && $word == --*=* ]]; then   # where '=' breaks no word
            pending=${word%%=*} word=${word#*=}
        fi
        if [[ -n $pending ]]; then     # the value of the option before
            if [[ -z $path && ( $pending == --root || $pending == --store ) ]]; then
                globals+=("$pending" "$(_isolate_tilde "$word")")
            fi
            pending='' glued=0
            continue
        fi
        if ((glued)); then
            glued=0
            continue
        fi
        if ((dashdash || (command_slot >= 0 && count > command_slot))); then
            count=$((count + 1))       # the command's own arguments
        elif [[ $word == -- && $command_slot -ge 0 ]]; then
            dashdash=1 count=$command_slot
        elif [[ $word == -* ]]; then
            [[ " $valued " == *" $word "* ]] && pending=$word
        elif ((count == 0)) && [[ " $commands " == *" $word "* ]]; then
            path=${path:+$path }$word
            _isolate_spec "$path"
        else
            count=$((count + 1))
        fi
    done
    if [[ -n $pending ]]; then
        _isolate_value "$path" "$pending"
    elif [[ $cur == = || ${COMP_WORDS[start-1]} == = ]]; then
        spec=''                        # KEY=VALUE of an option's value
    elif [[ $whole == -* ]] && ! ((dashdash || (command_slot >= 0 && count > command_slot))); then
        spec=@flags
    elif ((count < ${#slots[@]})); then
        spec=${slots[count]}
    else
        spec=$rest
    fi
    COMPREPLY=()
    # shellcheck disable=SC2086  # a spec is words
    [[ -n $spec ]] && _isolate_reply $spec
    return 0
}

complete -F _isolate isolate
"""


#: The subcommands this module runs (main.handler() dispatches here).
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"completion": cmd_completion}
