"""The release the read path is measured against: the tree of a past commit with a virtualenv of
its own, built once under .bench/ and kept."""

from __future__ import annotations

from pathlib import Path
import subprocess
import sys

from bench.harness import ROOT, WORK

COMMIT = "88d728d"


def baseline_python(commit: str = COMMIT) -> tuple[Path, Path]:
    """The baseline's source tree and interpreter, built on first use."""
    tree = WORK / f"tree-{commit}"
    python = tree / ".venv" / "bin" / "python"
    if not (tree / ".venv" / ".installed").exists():
        tree.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", commit], cwd=ROOT, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
        subprocess.run([sys.executable, "-m", "venv", str(tree / ".venv")], check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, "-c", "constraints.txt", "-e", "."], cwd=tree, check=True)
        (tree / ".venv" / ".installed").touch()
    return tree, python
