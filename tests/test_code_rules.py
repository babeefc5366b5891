"""The project's code rules: import-linter contracts (the layers, GPU extras only in aetdask.backend)
and ruff, both configured in pyproject.toml. Each check reads the source only (about a second)."""

import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _tool(name):
    """The executable installed next to this Python (the test extra's), else the one on PATH."""
    here = pathlib.Path(sys.executable).with_name(name)
    path = str(here) if here.exists() else shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[test]' installs it)")
    return path


def _run(args):
    r = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        pytest.fail(f"{' '.join(args)} exited with {r.returncode}:\n{r.stdout}\n{r.stderr}", pytrace=False)


def test_import_contracts():
    _run([_tool("lint-imports"), "--no-cache"])


def test_ruff():
    _run([_tool("ruff"), "check", "--no-cache", "--output-format", "concise", "aetdask", "tests", "benchmarks"])
