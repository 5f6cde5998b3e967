"""Columnar bytes per state on REAL recordings, through the observer's own pipeline (issue 15).

States come from the recorded replay as processes, exactly as documented: ``fusion sim recorded`` serves the
Binance hftbacktest BTCUSDT spot capture (depth@100ms, bookTicker, trade) and a Polymarket 1 Hz top-of-book CSV,
``fusion observe --feed replay`` turns them into states at the 0.5 s tick (raw fields by the observer's clients,
features by ``common.features.market_features``) on a private Redis. The states are archived as 10-minute windows
(:func:`archiver_svc.windows.encode_object`, as ``benchmarks.scale`` does) and compacted by
:func:`archiver_svc.compact.compact`, the real path.

Recordings: with ``FUSION_SHARED_DATA`` the full 10.9 minutes of Binance and the Borisz42 Polymarket capture
(shifted by whole windows onto the Binance hours by the replayer; only its top of book: levels 1-4 are empty);
without it the 60 s excerpt shipped in the repository and a SYNTHETIC Polymarket CSV
(``tests.fixtures.synthetic_polymarket``), which the output says. Only states inside the Binance capture are kept.

Figures: ``file_bytes_per_state`` (the Parquet file, footer included: on ~1,300 rows the footer weighs several
bytes per state, on a 172,800-row day almost nothing), ``chunk_bytes_per_state`` (sum of the column chunks'
``total_compressed_size``, no footer), ``json_gz_bytes_per_state`` (the seed's format, ``benchmarks.archive``
``_json_state`` gzipped per 1000 states) and both ratios; ``columns``: chunk bytes per state of every column, the
real states' next to one synthetic day's (``archiver_svc.synth``).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from archiver_svc import columnar
from archiver_svc.compact import compact
from archiver_svc.windows import encode_object, object_key
from common import keys
from common.redisproc import RedisServer, free_port
from common.schema import State, decode_state
from common.settings import Settings
from common.store import LocalStore

ROOT = Path(__file__).resolve().parents[1]
EXCERPT = ROOT / "tests" / "fixtures" / "real"
SPOT = "binance_raw_ws_spot__hftbacktest/spot"
BORISZ = "polymarket_btc15m_1hz_top_of_book__Borisz42"
MARKET = "BTC-15M"
WINDOW_MS = 600_000


def _poly_csv(tmp: Path, shared: Path | None) -> tuple[Path, str]:
    """The Polymarket CSV to replay (two windows: the Binance capture spans one window boundary) and its origin."""
    if shared is not None and (shared / BORISZ).is_dir():
        src = sorted((shared / BORISZ).glob("*.csv"))[-1]
        with open(src, newline="") as fh:
            rows = list(csv.reader(fh))
        starts = sorted({r[1] for r in rows[1:]})[:2]
        out = tmp / "poly.csv"
        with open(out, "w", newline="") as fh:
            csv.writer(fh).writerows([rows[0], *(r for r in rows[1:] if r[1] in starts)])
        return out, f"real: {BORISZ}/{src.name}, windows {starts[0]} and {starts[-1]} (top of book only)"
    from tests.fixtures.synthetic_polymarket import write_csv

    return write_csv(tmp / "poly.csv", windows=2), "SIMULATED: tests.fixtures.synthetic_polymarket (no real data)"


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(log.read_text()[-2000:])
        try:
            httpx.get(f"{url}/sim/status", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"sim did not start: {log.read_text()[-2000:]}")


def observe_recorded(tmp: Path, binance: Path, poly: Path, timeout: float = 900.0) -> list[State]:
    """States of ``MARKET`` from the recorded replay through the observer process (real Redis)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with RedisServer() as srv:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        sim_log = tmp / "sim.out"
        sim_cmd = [sys.executable, "-m", "observer_svc.sim", "recorded", "--port", str(port), "--binance",
                   str(binance), "--symbols", "BTCUSDT", "--polymarket", str(poly), "--speed", "0"]  # fmt: skip
        with open(sim_log, "wb") as so:
            sim = subprocess.Popen(sim_cmd, env=env, cwd=tmp, stdout=so, stderr=subprocess.STDOUT)
        try:
            _wait_http(url, sim, sim_log)
            obs_env = {**env, "FUSION_REDIS_URL": srv.url, "FUSION_BINANCE_KIND": "spot", "FUSION_METRICS_PORT": "0",
                       "FUSION_BINANCE_STREAMS": "depth@100ms,bookTicker,trade"}  # fmt: skip
            cmd = [sys.executable, "-m", "observer_svc", "--market", MARKET, "--feed", "replay", "--sim-url", url]
            with open(tmp / "obs.out", "wb") as oo:
                rc = subprocess.run(cmd, env=obs_env, cwd=tmp, stdout=oo, stderr=subprocess.STDOUT, timeout=timeout)
            if rc.returncode != 0:
                raise RuntimeError(f"observer rc={rc.returncode}: {(tmp / 'obs.out').read_text()[-2000:]}")
        finally:
            sim.terminate()
            sim.wait(10)
        r = redis.Redis.from_url(srv.url)
        states = [decode_state(p[keys.PAYLOAD_FIELD]) for _, p in r.xrange(keys.states_stream(MARKET))]
        r.close()
    return states


def binance_span(binance: Path) -> tuple[int, int]:
    """First and last event time (ms) of the Binance capture, as the replayer orders it."""
    from observer_svc.sim.recorded import RecordedDriver

    seq = RecordedDriver(binance=binance, symbols=["BTCUSDT"])._bseq
    return seq[0][0], seq[-1][0]


def column_bytes(store: LocalStore, market: str = MARKET) -> tuple[int, int, int, dict[str, int], dict[str, str]]:
    """(rows, file bytes, column-chunk bytes, chunk bytes per column, Arrow type per column) over every states
    day file of ``market`` (types of several files joined by ``|`` where they differ)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = size = chunks = 0
    per: dict[str, int] = {}
    types: dict[str, str] = {}
    for o in store.list(f"columnar/states/{market}/"):
        if not o.key.endswith(columnar.PARQUET):
            continue
        data = store.get(o.key)
        pf = pq.ParquetFile(pa.BufferReader(data))
        md = pf.metadata
        for f in pf.schema_arrow:
            t = str(f.type)
            types[f.name] = t if types.get(f.name, t) == t else f"{types[f.name]}|{t}"
        rows, size = rows + md.num_rows, size + len(data)
        for g in range(md.num_row_groups):
            rg = md.row_group(g)
            for c in range(rg.num_columns):
                cc = rg.column(c)
                per[cc.path_in_schema] = per.get(cc.path_in_schema, 0) + cc.total_compressed_size
                chunks += cc.total_compressed_size
    return rows, size, chunks, per, types


def archive_and_compact(work: Path, states: list[State], market: str = MARKET) -> LocalStore:
    """The states as 10-minute archive windows, compacted by the real ``fusion compact`` path."""
    from common.schema import encode_state

    store = LocalStore(work)
    wins: dict[int, list[tuple[str, bytes]]] = {}
    for s in states:
        wins.setdefault(s.tick_ms // WINDOW_MS * WINDOW_MS, []).append((f"{s.tick_ms}-0", encode_state(s)))
    for ws, pairs in wins.items():
        store.put(object_key("states", market, ws), encode_object("states", market, ws, WINDOW_MS, pairs))
    res = compact(store, kinds=("states",), now_ms=max(wins) + 10 * 86_400_000)
    if res.rows != len(states):
        raise RuntimeError(f"compacted {res.rows} of {len(states)}: {res.problems[:3]}")
    return store


def figures(work: Path, states: list[State]) -> dict[str, Any]:
    """Rows, bytes per state (file, chunks, JSON gz), ratios and per-column chunk bytes per state."""
    store = archive_and_compact(work, states)
    rows, size, chunks, per, types = column_bytes(store)
    from benchmarks.archive import json_gz_bytes

    n, jz = len(states), json_gz_bytes(states)
    return {"rows": rows, "day_files": sum(o.key.endswith(columnar.PARQUET) for o in store.list("columnar/")),
            "file_bytes_per_state": round(size / n, 1), "chunk_bytes_per_state": round(chunks / n, 1),
            "json_gz_bytes_per_state": round(jz / n, 1), "file_ratio_vs_json_gz": round(size / jz, 3),
            "chunk_ratio_vs_json_gz": round(chunks / jz, 3),
            "columns": {k: round(v / n, 2) for k, v in per.items()}, "types": types,
            "behaviour": behaviour(states)}  # fmt: skip


def behaviour(states: list[State]) -> dict[str, list[float]]:
    """Per raw field known on >= 3 ticks: [share of ticks whose value differs from the tick before, lag-1
    autocorrelation of the values] (NaN-free ticks only; autocorrelation NaN for a constant)."""
    import numpy as np

    from common.schema import RAW_FIELDS

    raw = np.array([s.raw for s in states])
    out: dict[str, list[float]] = {}
    for j, name in enumerate(RAW_FIELDS):
        x = raw[:, j][~np.isnan(raw[:, j])]
        if len(x) >= 3:
            ac = float(np.corrcoef(x[:-1], x[1:])[0, 1]) if x[:-1].std() > 0 and x[1:].std() > 0 else float("nan")
            out[name] = [round(float(np.mean(x[1:] != x[:-1])), 3), round(ac, 3)]
    return out


def real_states(work: Path, shared: Path | None = None) -> tuple[list[State], dict[str, Any]]:
    """The observer's states inside the Binance capture, and which recordings made them."""
    base = shared if shared is not None and (shared / SPOT).is_dir() else EXCERPT
    work.mkdir(parents=True, exist_ok=True)
    poly, origin = _poly_csv(work, shared)
    states = observe_recorded(work, base / SPOT, poly)
    first, last = binance_span(base / SPOT)
    kept = [s for s in states if first <= s.tick_ms <= last]
    info = {"binance": f"{'FUSION_SHARED_DATA' if base != EXCERPT else 'repository excerpt'}: {SPOT} BTCUSDT "
                       f"({(last - first) / 60_000:.1f} min)",
            "polymarket": origin, "observer_states": len(states), "states_in_binance_span": len(kept)}  # fmt: skip
    return kept, info


def synthetic_day(work: Path, n: int, t0: int) -> dict[str, Any]:
    """The same figures on ``n`` states of ``archiver_svc.synth`` from ``t0`` (a UTC day at 0.5 s for n = 172,800),
    made in 10-minute windows seeded by their offset, as ``benchmarks.scale`` makes its day."""
    from archiver_svc.synth import synth_states

    states = [s for w in range(0, n, 1200) for s in synth_states(MARKET, t0 + 500 * w, min(1200, n - w), seed=w)]
    return figures(work, states)


def run(quick: bool = False, synthetic_n: int | None = None) -> dict[str, Any]:
    """Real-recording figures, next to one synthetic day's (``synthetic_n`` states, default 172,800, quick 17,280;
    0: none) and as many synthetic states as real ones; per column: chunk bytes per state, Arrow type, per-tick
    change rate and lag-1 autocorrelation."""
    synthetic_n = (17_280 if quick else 172_800) if synthetic_n is None else synthetic_n
    sd = Settings().shared_data
    work = Path(tempfile.mkdtemp(prefix="fusion-bench-real-"))
    try:
        states, info = real_states(work / "obs", Path(sd) if sd else None)
        real = figures(work / "real", states)
        t0 = (states[-1].tick_ms // 86_400_000 + 1) * 86_400_000  # the day after the recording
        syn = synthetic_day(work / "syn", synthetic_n, t0) if synthetic_n else {}
        same = synthetic_day(work / "same", len(states), t0)  # the small-file effect, apart from the data's
        sg = syn.get
        cols = {k: {"real": v, "synthetic": sg("columns", {}).get(k), "synthetic_same_rows": same["columns"].get(k),
                    "type_real": real["types"][k], "type_synthetic": sg("types", {}).get(k),
                    "change_ac1_real": real["behaviour"].get(k), "change_ac1_synthetic": sg("behaviour", {}).get(k)}
                for k, v in real["columns"].items()}  # fmt: skip
        for d in (real, syn, same):
            for k in ("columns", "types", "behaviour"):
                d.pop(k, None)
        return {**info, "real": real, "synthetic": syn, "synthetic_same_rows": same, "columns": cols,
                "load_avg_1m": round(os.getloadavg()[0], 2)}  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
