"""Code health as tests: ruff clean and formatted everywhere, mypy strict on common/, archiver_svc/, trainer_svc/
and fusion/."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_clean() -> None:
    if shutil.which("ruff") is None:
        pytest.fail("ruff not installed: the test extra installs it")
    out = subprocess.run(["ruff", "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_ruff_formatted() -> None:
    """``ruff format --check .`` (Python files and the Python blocks of the Markdown docs); a hand-wrapped
    statement keeps its layout with a trailing ``# fmt: skip``."""
    if shutil.which("ruff") is None:
        pytest.fail("ruff not installed: the test extra installs it")
    out = subprocess.run(["ruff", "format", "--check", "."], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_strict() -> None:
    cmd = [sys.executable, "-m", "mypy", "common", "archiver_svc", "trainer_svc", "fusion"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
