"""The docs stay true to the tree: the pictures of docs/architecture.md are
what docs/diagrams.py draws from the code, and every repository path the
docs name exists."""
from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO

DOCS = [REPO / "README.md", REPO / "benchmarks" / "README.md", *sorted((REPO / "docs").glob("*.md"))]

#: Named in the docs as planned (docs/architecture.md, "Layers"), not there yet.
PLANNED = {"isolate/network/", "isolate/oci/", "isolate/pytest_plugin.py"}

PATH = re.compile(r"(?<![/\w.-])((?:isolate|tests|_native|benchmarks|docs)/[\w./-]*\w/?)")


def test_the_pictures_are_up_to_date():
    r = subprocess.run([sys.executable, str(REPO / "docs" / "diagrams.py"), "--check"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_path_the_docs_name_exists():
    missing = []
    for doc in DOCS:
        for path in set(PATH.findall(doc.read_text())):
            if path not in PLANNED and not (REPO / path).exists():
                missing.append(f"{doc.relative_to(REPO)}: {path}")
    assert not missing, missing
