"""Archiver benchmark: states archived per second per process, archive size, reader load time.

* ``archive_states_per_s``: one Archiver process draining a local Redis (started here) of states:
  XREADGROUP (COUNT 5000) + validation + msgpack + gzip + LocalStore put (fsync) + XACK.
* ``archive_bytes_per_state`` vs ``json_gz_bytes_per_state``: the seed's format (one JSON object
  per state with named fields, gzipped per 1000 states) on the same states.
* ``reader_*_s``: ``load_market`` of one week of one market at 0.5 s ticks (1.2 M states; quick: 120 k)
  from the msgpack windows (``*_cpu_s``: CPU of this process); loads from the compacted Parquet days are
  measured by benchmarks/scale.py (the per-object column cache was replaced by them).
"""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import redis

from archiver_svc.reader import load_market
from archiver_svc.service import Archiver
from archiver_svc.synth import synth_payloads, synth_states
from archiver_svc.windows import encode_object, object_key
from common import keys
from common.redisproc import RedisServer
from common.schema import RAW_FIELDS, State
from common.store import LocalStore
from common.streams import publish_states

T0 = 1_763_856_000_000
MARKET = "BTC-15M"


def _json_state(s: State) -> bytes:
    d: dict[str, Any] = {"market": s.market, "tick_ms": s.tick_ms}
    d.update({k: (None if v != v else v) for k, v in zip(RAW_FIELDS, s.raw.tolist(), strict=True)})
    d["features"] = s.features.tolist()
    d["feature_set"] = s.feature_set
    d["flags"] = s.flags
    if s.pm is not None:
        d["pm"] = {
            "slug": s.pm.slug,
            "condition_id": s.pm.condition_id,
            "up_token": s.pm.up_token,
            "down_token": s.pm.down_token,
            "start_ms": s.pm.start_ms,
            "end_ms": s.pm.end_ms,
        }
    return orjson.dumps(d)


def json_gz_bytes(states: list[State]) -> int:
    """Bytes of ``states`` in the seed's format: one JSON object per state, gzipped per 1000 states."""
    return sum(len(gzip.compress(b"\n".join(_json_state(s) for s in states[i : i + 1000])))
               for i in range(0, len(states), 1000))  # fmt: skip


def bench_archive(n: int, work: Path) -> dict[str, float]:
    with RedisServer() as srv:
        r = redis.Redis.from_url(srv.url, socket_timeout=120)
        stream = keys.states_stream(MARKET)
        for i in range(0, n, 20_000):
            pairs = synth_payloads(MARKET, T0 + 500 * i, min(20_000, n - i), seed=i)
            for j in range(0, len(pairs), 2000):
                publish_states(r, [(stream, e, b) for e, b in pairs[j : j + 2000]])
        store = LocalStore(work / "store")
        arch = Archiver(r, store, consumer="bench", count=5000, block_ms=10)
        t, c = time.perf_counter(), time.process_time()
        stats = arch.run(once=True, final=True)
        dt, cpu = time.perf_counter() - t, time.process_time() - c
        pending = int(r.xpending(stream, keys.ARCHIVER_GROUP)["pending"])
        if stats.archived != n or pending:
            raise RuntimeError(f"archived {stats.archived} of {n}, {pending} pending")
        size = sum(o.size for o in store.list("market-data/"))
        r.close()
    # the seed's format on a sample of the same states
    sample = synth_states(MARKET, T0, min(n, 12_000))
    json_per_state = json_gz_bytes(sample) / len(sample)
    return {
        "archive_states": n,
        "archive_s": round(dt, 3),
        "archive_states_per_s": round(n / dt),
        "archive_cpu_s": round(cpu, 3),  # the archiver process only (all threads), not redis-server
        "archive_states_per_cpu_s": round(n / cpu),
        "load_avg_1m": round(os.getloadavg()[0], 2),  # other work on the machine skews wall-clock figures
        "archive_objects": len(list(store.list("market-data/"))),
        "archive_bytes_per_state": round(size / n, 1),
        "json_gz_bytes_per_state": round(json_per_state, 1),
        "archive_size_ratio_vs_json_gz": round(size / n / json_per_state, 3),
    }


def build_week(n: int, root: Path, window_ms: int = 600_000) -> None:
    store = LocalStore(root)
    per = window_ms // 500
    for w in range(0, n, per):
        ws = T0 + 500 * w
        pairs = synth_payloads(MARKET, ws, min(per, n - w), seed=w)
        store.put(object_key("states", MARKET, ws), encode_object("states", MARKET, ws, window_ms, pairs))


def bench_reader(n: int, work: Path) -> dict[str, float]:
    root = work / "week"
    build_week(n, root)
    out: dict[str, float] = {"reader_states": n}
    t, c = time.perf_counter(), time.process_time()
    md = load_market(root, MARKET)
    out["reader_cold_s"] = round(time.perf_counter() - t, 3)
    out["reader_cold_cpu_s"] = round(time.process_time() - c, 3)  # all reader threads of this process
    out["reader_load_avg_1m"] = round(os.getloadavg()[0], 2)
    if len(md.states) != n or md.problems:
        raise RuntimeError(f"reader loaded {len(md.states)} of {n}: {md.problems[:3]}")
    return out  # loads from the compacted (columnar) form: benchmarks/scale.py


def run(quick: bool = False) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="fusion-bench-archive-"))
    try:
        res: dict[str, Any] = {}
        res.update(bench_archive(50_000 if quick else 300_000, work))
        res.update(bench_reader(120_000 if quick else 1_209_600, work))
        return res
    finally:
        shutil.rmtree(work, ignore_errors=True)
