"""Binance ingest throughput per process: parse + depth book + aggregates, on recorded frames.

Replays the hftbacktest BTCUSDT spot capture (depth@100ms, bookTicker, trade): the 60 s excerpt
in tests/fixtures/real (7.3k frames), or the full 10.9 minutes (~100k frames) from a folder set
with ``FUSION_SHARED_DATA``; from memory, several passes, through exactly the client's per-frame path minus the socket:
``parse_frame`` -> ``SymbolAggregates.on_event`` (book updates, bars, flow, buckets) plus a
``fill_raw`` every 500 ms of event time. Passes after the first re-sync the book from the
recorded snapshot, like a reconnect. Figures: frames per CPU-second of this process (and per
wall second), and the same for a trades+bookTicker only mix and for parse alone.
"""

from __future__ import annotations

import gzip
import time
from pathlib import Path
from typing import Any

import numpy as np

from common.schema import N_RAW
from common.settings import Settings
from observer_svc.binance_aggregates import SymbolAggregates
from observer_svc.binance_wire import DepthSnapshot, parse_frame

#: the licensed excerpt shipped in the repository (60 s of BTCUSDT)
EXCERPT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "real"


def data_dir() -> Path:
    """``FUSION_SHARED_DATA`` (a folder of full recordings, same layout) when set, else the repository's excerpt."""
    return Path(Settings().shared_data or EXCERPT)


def load_frames(symbol: str = "btcusdt") -> list[bytes]:
    """Recorded frames of every file of the symbol (the REST snapshot line included), receive order."""
    out: list[bytes] = []
    for path in sorted((data_dir() / "binance_raw_ws_spot__hftbacktest" / "spot").glob(f"{symbol}_*.gz")):
        with gzip.open(path, "rb") as f:
            for line in f:
                line = line.rstrip(b"\n")
                if line:
                    out.append(line.partition(b" ")[2])
    return out


def _ingest(frames: list[bytes], passes: int, tick_ms: int = 500) -> tuple[float, float, int, SymbolAggregates]:
    """(frames per wall second, frames per CPU second of this process, frames, aggregates)."""
    agg = SymbolAggregates("BTCUSDT", futures=False, with_book=True)
    row = np.full(N_RAW, np.nan)
    snap = None
    n = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(passes):
        if agg.book is not None:
            agg.book.invalidate()
        if snap is not None:
            agg.apply_snapshot(snap)
        next_tick = None
        for raw in frames:
            ev = parse_frame(raw)
            if type(ev) is DepthSnapshot:
                snap = ev
            agg.on_event(ev)
            le = agg.last_event_ms
            if le is not None:
                if next_tick is None:
                    next_tick = le - le % tick_ms + tick_ms
                while le > next_tick:
                    agg.fill_raw(row, next_tick)
                    next_tick += tick_ms
            n += 1
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    return n / dt, n / dc, n, agg


def run(quick: bool = False) -> dict[str, Any]:
    frames = load_frames()
    if quick:
        frames = frames[:20_000]
    # about 500k frames in all (5 passes of the full capture; more passes of the excerpt)
    passes = 1 if quick else max(5, round(500_000 / len(frames)))
    # parse only
    c0 = time.process_time()
    for _ in range(passes):
        for raw in frames:
            parse_frame(raw)
    parse_fps = passes * len(frames) / (time.process_time() - c0)
    fps, cpu_fps, n, agg = _ingest(frames, passes)
    light = [f for f in frames if b"@depth" not in f[:40] and b"lastUpdateId" not in f[:20]]
    _, light_fps, _, _ = _ingest(light, passes)
    book = agg.book
    return {
        # per CPU-second of the process (robust to a busy machine); the wall figure is also given
        "binance_frames_per_s": round(cpu_fps, 1),
        "binance_frames_per_wall_s": round(fps, 1),
        "binance_frames_per_s_trades_bookticker_only": round(light_fps, 1),
        "binance_parse_only_frames_per_s": round(parse_fps, 1),
        "binance_us_per_frame": round(1e6 / cpu_fps, 2),
        "frames_total": n,
        "frames_per_pass": len(frames),
        "data": "FUSION_SHARED_DATA" if Settings().shared_data else "repository excerpt",
        "passes": passes,
        "mix_depth_frac": round(sum(b"@depth" in f[:40] for f in frames) / len(frames), 4),
        "book_valid_at_end": bool(book is not None and book.valid),
        "book_gaps": book.resyncs if book is not None else -1,
        "trades_applied": agg.trades,
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
