"""Run the project's benchmarks and print one JSON report (``fusion bench`` / ``python -m benchmarks.run``).

A benchmark is a module ``benchmarks/<name>.py`` exposing ``run(quick: bool = False) -> dict``
that returns its figures (numbers, with units in the key names). ``--quick`` shrinks sizes for a
smoke run; figures worth quoting come from the full run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import platform
import sys
import time
from pathlib import Path
from typing import Any

import benchmarks


def discover() -> list[str]:
    names = [m.name for m in pkgutil.iter_modules(benchmarks.__path__) if m.name not in ("run", "__init__")]
    return sorted(n for n in names if not n.startswith("_"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="fusion bench", description=__doc__)
    ap.add_argument("names", nargs="*", help=f"benchmarks to run (default: all of {discover()})")
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    ap.add_argument("--out", default="bench-results/report.json", help="also write the JSON report here")
    ap.add_argument("--no-table", action="store_true", help="no summary table on stderr")
    a = ap.parse_args(argv)
    names = a.names or discover()
    report: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "cpus": __import__("os").cpu_count(),
            "platform": platform.platform(),
        },
        "quick": a.quick,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": {},
    }
    for name in names:
        mod = importlib.import_module(f"benchmarks.{name}")
        t0 = time.perf_counter()
        try:
            res = mod.run(quick=a.quick)
        except Exception as e:  # a failing benchmark is reported, the others still run
            res = {"error": f"{type(e).__name__}: {e}"}
        res["wall_s"] = round(time.perf_counter() - t0, 2)
        report["results"][name] = res
        print(f"[bench] {name}: done in {res['wall_s']} s", file=sys.stderr)
    text = json.dumps(report, indent=2, default=float)
    print(text)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text)
    if not a.no_table:
        from rich.console import Console
        from rich.table import Table

        t = Table(title="market-fusion benchmarks")
        t.add_column("benchmark")
        t.add_column("figure")
        t.add_column("value", justify="right")
        for name, res in report["results"].items():
            for k, v in res.items():
                t.add_row(name, k, f"{v:,.3f}" if isinstance(v, float) else str(v))
        Console(stderr=True).print(t)
    failed = [n for n, r in report["results"].items() if "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
