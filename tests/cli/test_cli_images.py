"""Images on the command line: `isolate images` (REPOSITORY, TAG, IMAGE ID,
CREATED, SIZE, LAYERS), `isolate image inspect`, and short names, tags,
digests and id prefixes wherever a command takes an image (run --image,
image inspect, rmi).

Archives are built by tests/image_builder.py; each test has a real store
in its tmp_path and runs ``python -m isolate`` on it.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import pytest

from conftest import REPO, require
from image_builder import (Layer, busybox_config, busybox_layers, file, hardlink, image_config, layer_tar,
                           sha256, symlink, write_tar)
from isolate.cli.images import ago, human_size

TIMEOUT = 60

#: Text an image's config may hold to attack the operator's terminal.
HOSTILE = "\x1b]0;owned\x07\r\x1b[2J\x9b1m\u202e"


def isolate(store: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m isolate --store STORE ARGS...``, output as text."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=path)
    return subprocess.run([sys.executable, "-m", "isolate", "--store", str(store), *args],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=TIMEOUT)


def archive(path: Path, name: str, layers: list[Layer], config: dict, created: str | None = None) -> str:
    """A docker-archive of one image named `name`, its config saying
    `created` (None: no such field); returns its id."""
    tars = [layer_tar(layer.entries) for layer in layers]
    doc = image_config(config, [sha256(tar) for tar in tars])
    if created is not None:
        doc["created"] = created
    data = json.dumps(doc).encode()
    files = {f"layer{number}.tar": tar for number, tar in enumerate(tars)}
    manifest = [{"Config": "config.json", "RepoTags": [name], "Layers": list(files)}]
    write_tar(path, {"config.json": data, **files, "manifest.json": json.dumps(manifest).encode()})
    return sha256(data)


def imported(store: Path, path: Path) -> None:
    r = isolate(store, "import", str(path))
    assert r.returncode == 0, r.stderr


#: 5_200_000 + 1_234 bytes of files, a hard link (counted once) and a
#: 4-byte symlink: "5.2MB".
DATA_LAYERS = [Layer([file("data", b"d" * 5_200_000)]),
               Layer([file("etc/more", b"m" * 1_234), hardlink("etc/more2", "etc/more"),
                      symlink("etc/link", "data")])]
DATA_SIZE = 5_200_000 + 1_234 + 4

THREE_DAYS_AGO = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3 * 86400 - 3600))


class Stored(NamedTuple):
    store: Path
    one: str    # the id of localhost/data:1
    two: str    # the id of data:2


@pytest.fixture
def stored(tmp_path: Path) -> Stored:
    """localhost/data:1 (5.2MB, made three days ago), and data:2, a Docker
    Hub image sharing its big layer, with no time of its own."""
    store = tmp_path / "store"
    one = archive(tmp_path / "one.tar", "localhost/data:1", DATA_LAYERS, {"Cmd": ["one"]}, THREE_DAYS_AGO)
    two = archive(tmp_path / "two.tar", "data:2", DATA_LAYERS[:1] + [Layer([file("x", b"12")])],
                  {"Cmd": ["two"]})
    imported(store, tmp_path / "one.tar")
    imported(store, tmp_path / "two.tar")
    return Stored(store, one, two)


def columns(line: str) -> list[str]:
    """A line of a table: columns are at least 3 spaces apart, words 1."""
    return re.split(r" {3,}", line.rstrip())


# --- isolate images ------------------------------------------------------------------------


def test_images_lists_repository_tag_id_created_size_and_layers(stored: Stored) -> None:
    store, one, two = stored
    r = isolate(store, "images")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert columns(lines[0]) == ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE", "LAYERS"]
    rows = [columns(line) for line in lines[1:]]
    # Newest first; docker's familiar names; the shared layer counts in both.
    assert rows[0][:3] == ["data", "2", two.removeprefix("sha256:")[:12]]
    assert re.fullmatch(r"Less than a second ago|\d+ seconds? ago", rows[0][3]), rows[0]
    assert rows[0][4:] == ["5.2MB", "2"]
    assert rows[1] == ["localhost/data", "1", one.removeprefix("sha256:")[:12], "3 days ago", "5.2MB", "2"]
    assert len(rows) == 2
    # The header and each row line up, as docker's columns do.
    starts = [lines[0].index(title) for title in ("TAG", "IMAGE ID", "CREATED", "SIZE", "LAYERS")]
    for line, row in zip(lines[1:], rows):
        assert [line.index(cell, start) for cell, start in zip(row[1:], starts)] == starts


def test_images_shows_one_line_per_name_and_none_for_no_name(tmp_path: Path) -> None:
    store = tmp_path / "store"
    # One image under three names, two of them spellings of busybox:latest.
    for name in ("busybox:latest", "docker.io/library/busybox:latest", "quay.io/org/busybox:1"):
        archive(tmp_path / "named.tar", name, DATA_LAYERS[:1], {"Cmd": ["a"]})
        imported(store, tmp_path / "named.tar")
    # x:1 moves to a newer image: the old one has no name left.
    unnamed = archive(tmp_path / "old.tar", "x:1", DATA_LAYERS[:1], {"Cmd": ["old"]})
    imported(store, tmp_path / "old.tar")
    archive(tmp_path / "new.tar", "x:1", DATA_LAYERS[:1], {"Cmd": ["new"]})
    imported(store, tmp_path / "new.tar")
    r = isolate(store, "images")
    rows = [columns(line) for line in r.stdout.splitlines()[1:]]
    assert sorted(row[:2] for row in rows) == [
        ["<none>", "<none>"], ["busybox", "latest"], ["quay.io/org/busybox", "1"], ["x", "1"]]
    assert ["<none>", "<none>", unnamed.removeprefix("sha256:")[:12]] in [row[:3] for row in rows]


@pytest.mark.parametrize("size, shown", [
    (0, "0B"), (999, "999B"), (1000, "1kB"), (1234, "1.23kB"), (999_499, "999kB"), (999_500, "1MB"),
    (5_200_000, "5.2MB"), (DATA_SIZE, "5.2MB"), (12_345_678, "12.3MB"), (1_234_567_890, "1.23GB"),
])
def test_sizes_are_shown_as_docker_shows_them(size: int, shown: str) -> None:
    assert human_size(size) == shown


@pytest.mark.parametrize("seconds, shown", [
    (0, "Less than a second ago"), (-5, "Less than a second ago"), (1, "1 second ago"),
    (59, "59 seconds ago"), (60, "About a minute ago"), (3599, "59 minutes ago"),
    (3600, "About an hour ago"), (47 * 3600, "47 hours ago"), (3 * 86400 + 3600, "3 days ago"),
    (20 * 86400, "2 weeks ago"), (90 * 86400, "3 months ago"), (3 * 365 * 86400, "3 years ago"),
])
def test_ages_are_shown_as_docker_shows_them(seconds: int, shown: str) -> None:
    assert ago(1_700_000_000 - seconds, 1_700_000_000) == shown
    assert ago(None, 1_700_000_000) == "N/A"


# --- isolate image inspect -----------------------------------------------------------------------


def test_image_inspect_prints_docker_fields(tmp_path: Path) -> None:
    store = tmp_path / "store"
    config = {"Env": ["PATH=/bin", f"EVIL={HOSTILE}"], "Entrypoint": ["/bin/tool"], "Cmd": ["--flag"],
              "WorkingDir": "/srv", "User": "daemon", "Labels": {"team": "é"}}
    image_id = archive(tmp_path / "app.tar", "localhost/app:1", DATA_LAYERS, config, THREE_DAYS_AGO)
    imported(store, tmp_path / "app.tar")
    r = isolate(store, "image", "inspect", "app:1")
    assert (r.returncode, r.stderr) == (0, "")
    # What the image put there reaches the terminal escaped, as JSON escapes
    # it; printable Unicode stays.
    assert not [c for c in r.stdout if not c.isprintable() and c != "\n"]
    assert "\\u001b]0;owned\\u0007\\r\\u001b[2J\\u009b1m\\u202e" in r.stdout and '"é"' in r.stdout
    [doc] = json.loads(r.stdout)
    assert doc == {
        "Id": image_id, "RepoTags": ["localhost/app:1"], "RepoDigests": [], "Created": THREE_DAYS_AGO,
        "Config": config, "Architecture": doc["Architecture"], "Os": "linux", "Size": DATA_SIZE,
        "RootFS": {"Type": "layers", "Layers": [sha256(layer_tar(layer.entries)) for layer in DATA_LAYERS]},
    }
    assert doc["Architecture"] and doc["Architecture"] in r.stdout


def test_image_inspect_without_a_config_time_gives_the_import_time(stored: Stored) -> None:
    store, _, _ = stored
    r = isolate(store, "image", "inspect", "data:2", "localhost/data:1")
    assert r.returncode == 0, r.stderr
    two, one = json.loads(r.stdout)
    assert (two["RepoTags"], one["RepoTags"]) == (["data:2"], ["localhost/data:1"])
    assert one["Created"] == THREE_DAYS_AGO
    assert two["Config"] == {"Env": None, "Cmd": ["two"], "Entrypoint": None, "WorkingDir": "", "User": ""}
    record = json.loads((store / "images" / (two["Id"].removeprefix("sha256:") + ".json")).read_text())
    created = datetime.datetime.strptime(two["Created"], "%Y-%m-%dT%H:%M:%S.%fZ")
    created = created.replace(tzinfo=datetime.timezone.utc)
    assert created.timestamp() == pytest.approx(record["imported"], abs=1e-6)
    assert (two["Size"], one["Size"]) == (5_200_002, DATA_SIZE)


def test_image_inspect_of_an_unknown_name_fails_naming_it(stored: Stored) -> None:
    store = stored.store
    r = isolate(store, "image", "inspect", "nothing:1")
    assert (r.returncode, json.loads(r.stdout)) == (125, [])
    assert r.stderr == f"isolate: {store}: no image 'nothing:1'\n"
    # The images found are printed, each name found none said.
    r = isolate(store, "image", "inspect", "gone", "data:1", "missing")
    assert r.returncode == 125
    assert [doc["RepoTags"] for doc in json.loads(r.stdout)] == [["localhost/data:1"]]
    assert r.stderr.splitlines() == [f"isolate: {store}: no image 'gone'",
                                     f"isolate: {store}: no image 'missing'"]


def test_image_inspect_usage_and_help(stored: Stored) -> None:
    store = stored.store
    for args in (["image"], ["image", "inspect"], ["image", "nothing"]):
        r = isolate(store, *args)
        assert r.returncode == 125 and "usage: isolate image" in r.stderr, (args, r.stderr)
    for args, example in ((["image", "--help"], "isolate image inspect busybox"),
                          (["image", "inspect", "--help"], "isolate image inspect busybox ")):
        r = isolate(store, *args)
        assert r.returncode == 0 and f"example:\n  {example}" in r.stdout, r.stdout


# --- names wherever a command takes an image ----------------------------------------------------


def test_names_tags_digests_and_id_prefixes_reach_the_same_image(stored: Stored) -> None:
    store, one, _ = stored
    hexdigits = one.removeprefix("sha256:")
    for name in ("data:1", "localhost/data:1", f"data@{one}", hexdigits[:12], one):
        r = isolate(store, "image", "inspect", name)
        assert r.returncode == 0 and json.loads(r.stdout)[0]["Id"] == one, (name, r.stderr)


def test_an_ambiguous_short_name_is_an_error_listing_the_images(stored: Stored, tmp_path: Path) -> None:
    """data:1 is localhost/data:1; once docker.io/library/data:1 is stored
    too, it is either: the error lists both and nothing is picked."""
    store = stored.store
    hub = archive(tmp_path / "hub.tar", "data:1", DATA_LAYERS[:1], {"Cmd": ["hub"]})
    imported(store, tmp_path / "hub.tar")
    for args in (["image", "inspect", "data:1"], ["rmi", "data:1"],
                 ["run", "--image", "data:1", "--", "true"]):
        r = isolate(store, *args)
        assert r.returncode == 125, (args, r.stderr)
        assert "'data:1' is ambiguous" in r.stderr and f"{stored.one[:19]} (localhost/data:1)" in r.stderr
        assert f"{hub[:19]} (docker.io/library/data:1)" in r.stderr
    r = isolate(store, "rmi", "docker.io/library/data:1")
    assert r.returncode == 0, r.stderr
    r = isolate(store, "image", "inspect", "data:1")
    assert r.returncode == 0 and json.loads(r.stdout)[0]["RepoTags"] == ["localhost/data:1"]


def test_rmi_takes_a_short_name(stored: Stored) -> None:
    store = stored.store
    r = isolate(store, "rmi", "data:2")
    assert r.returncode == 0, r.stderr
    r = isolate(store, "images")
    assert [columns(line)[:2] for line in r.stdout.splitlines()[1:]] == [["localhost/data", "1"]]


def test_run_image_takes_short_names_and_id_prefixes(tmp_path: Path) -> None:
    """`run --image deb:test` runs localhost/deb:test, `--image busybox`
    Docker Hub's busybox, and an id prefix as images shows it its image."""
    require(shutil.which("busybox") is not None, "busybox is not installed")
    store = tmp_path / "store"
    for name, word in (("localhost/deb:test", "deb"), ("busybox:latest", "hub"),
                       ("quay.io/org/tool:2", "quay")):
        archive(tmp_path / f"{word}.tar", name, busybox_layers(),
                busybox_config(Cmd=["sh", "-c", f"echo {word}"]))
        imported(store, tmp_path / f"{word}.tar")
    ids = {columns(line)[0]: columns(line)[2] for line in isolate(store, "images").stdout.splitlines()[1:]}
    for image, shown in (("deb:test", "deb"), ("busybox", "hub"), ("tool:2", "quay"),
                         (ids["quay.io/org/tool"], "quay")):
        r = isolate(store, "run", "--image", image)
        assert (r.returncode, r.stdout, r.stderr) == (0, f"{shown}\n", ""), image
