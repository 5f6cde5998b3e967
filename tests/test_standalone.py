"""The repository stands alone: a copy of its tracked files, with nothing beside it, runs the tests
that read recorded data; no test, benchmark or doc points outside the repository; the core services
run without torch or MLX."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import RECORDED_DATA

ROOT = Path(__file__).resolve().parent.parent
#: folders and files a user's clone holds that must not refer to anything beside the repository
CHECKED = ("tests", "benchmarks", "docs", "observer_svc/sim", "common", "fusion", ".ci", "README.md", "compose")
#: what pointed outside before: the sibling ``shared`` folder, its data, the build machine's /work
OUTSIDE = re.compile(r"\.\./shared|shared/data|shared/DESIGN|/work/")


def _tracked() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    return [p for p in out.stdout.decode().split("\0") if p]


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUSION_")}
    return {**env, **extra}


def test_nothing_refers_outside_the_repository() -> None:
    me = Path(__file__).resolve().relative_to(ROOT).as_posix()
    hits = []
    for rel in _tracked():
        if rel == me or not (rel in CHECKED or rel.startswith(tuple(c + "/" for c in CHECKED))):
            continue
        p = ROOT / rel
        if not p.is_file() or p.suffix in (".gz", ".whl") or p.stat().st_size > 2_000_000:
            continue
        for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                hits.append(f"{rel}:{n}: {line.strip()}")
    assert not hits, "\n".join(hits)


def test_recorded_data_is_tracked_and_small() -> None:
    tracked = set(_tracked())
    files = [p for p in RECORDED_DATA.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    untracked = [str(p.relative_to(ROOT)) for p in files if str(p.relative_to(ROOT)) not in tracked]
    assert not untracked, f"recorded data not in git (a clone would not have it): {untracked}"
    notices = ("LICENSE", "COPYING", "COPYING.LESSER")
    data = [p for p in files if p.name not in notices and p.suffix not in (".md", ".py")]
    assert 0 < sum(p.stat().st_size for p in data) < 1_000_000
    for folder in {p.parent for p in data}:  # every source's licence sits beside its data
        src = folder if folder.parent == RECORDED_DATA else folder.parent
        assert any((src / n).exists() for n in notices), f"no licence for {src}"


def test_a_copy_with_nothing_beside_it_runs_the_recorded_data_tests(tmp_path: Path) -> None:
    """Copy the tracked files (what ``git clone`` gives) into an empty folder and run there, with no
    ``FUSION_*`` setting, every test that reads recorded data."""
    clone = tmp_path / "market-fusion"
    for rel in _tracked():
        src = ROOT / rel
        if src.is_file():
            (clone / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, clone / rel)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["market-fusion"]  # nothing beside it
    uses = re.compile(r"def test_\w+\([^)]*\b(recorded_data|synthetic_poly_csv)\b")
    files = sorted(
        str(p.relative_to(clone)) for p in (clone / "tests").rglob("test_*.py") if uses.search(p.read_text())
    )
    assert len(files) >= 5, files
    env = _clean_env(PYTHONPATH=str(clone))
    where = subprocess.run(
        [sys.executable, "-c", "import common, tests.conftest as c; print(common.__file__); print(c.RECORDED_DATA)"],
        cwd=clone, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert all(line.startswith(str(clone)) for line in where.stdout.split()), where.stdout
    skip = "not slow and not test_two_replicas and not test_rollover"  # the data-free, slower ones in test_service
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow", "-k", skip, *files],
        cwd=clone, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    tail = out.stdout[-3000:] + out.stderr[-2000:]
    assert out.returncode == 0, tail
    assert re.search(r"\b\d{2,} passed", out.stdout) and " error" not in out.stdout, tail


def test_core_services_import_no_torch_or_mlx(redis_url: str, tmp_path: Path) -> None:
    """``fusion archive`` and ``fusion label`` run and an observer is built without importing torch or MLX
    (the core install, ``pip install -e .``, has neither) nor pyarrow (only reading columnar data needs it: a
    collection instance's services stay small in memory)."""
    script = (
        "import sys\n"
        "from fusion.cli import main\n"
        "from common.markets import parse_market\n"
        "from common.settings import Settings\n"
        "assert main(['archive', '--once']) == 0\n"
        "assert main(['label', '--once']) == 0\n"
        "from observer_svc.service import Observer\n"
        "Observer(Settings(), [parse_market('BTC-15M')])\n"
        "print('heavy:', sorted(m for m in ('torch', 'mlx', 'pyarrow') if m in sys.modules))\n"
    )
    env = _clean_env(FUSION_REDIS_URL=redis_url, FUSION_STORE_URL=f"file://{tmp_path}/store", PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "heavy: []" in out.stdout, out.stdout
