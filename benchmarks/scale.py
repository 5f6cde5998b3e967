"""Scale benchmark: the columnar archive and the training data path at 1, 4, 16 and 48 M states.

* ``codec_*``: one day of one market (172,800 states at 0.5 s; quick: 17,280) as Parquet with each codec:
  bytes per state, encode and decode seconds; ``json_gz_bytes_per_state``: the seed's format (one JSON object
  per state, gzipped per 1000 states) on the same states; ``columnar_ratio_vs_json_gz``.
* ``compact_states_per_s``: ``fusion compact`` of that day from its 10-minute windows (decode + validate +
  Parquet + manifest), one process, after a warm-up compaction of a small day (imports out of the figure);
  ``compact_cpu_s`` / ``compact_states_per_cpu_s``: the process's CPU time (all threads), the figure to trust on
  a shared machine (``load_avg_1m`` says how shared it was).
* ``compact_pass_*``: one compaction pass over one day of each of three markets (518,400 states), the
  compactor's steady state (the first day of a process pays for its first large allocations);
* ``week_load_{cold,warm}_s`` (and ``*_cpu_s``): one market-week (1,209,600 states) loaded for training
  (``raw_fields`` = the trainer's, narrow dtypes) from columnar files; cold = the files' pages dropped from the
  page cache first (``posix_fadvise(DONTNEED)``), warm = loaded again.

Targets (issue 15): ``columnar_ratio_vs_json_gz`` <= 0.3, ``compact_states_per_s`` >= 500,000,
``week_load_warm_s`` <= 0.5 and ``week_load_cold_s`` <= 1.5. ``parts="columnar,week"`` skips the training curve.
* ``real`` (only when asked: ``parts="columnar,real"``): the same bytes on REAL recordings replayed through the
  observer (``benchmarks.scale_real``).
* ``curve``: for each size, synthetic states from the trainer's generator (``trainer_svc.synthetic``) are
  written DIRECTLY as columnar day files (the form the trainer reads; generating and compacting 48 M states
  through msgpack windows would only measure the generator), as 10 markets x 4 weeks at the 48 M point (1, 1
  and 4 markets below), then ``run_training`` (load + label + train awbc + evaluate against the baselines) runs
  in a child process: wall seconds and the child's peak RSS (``ru_maxrss``), next to the job's own estimate
  (``estimate_over_peak``), the training sample and validation states used (``bounded``) and the hold-out PnL
  of the candidate and the baselines.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from archiver_svc import columnar
from archiver_svc.compact import compact
from archiver_svc.rawcols import TRAIN_FIELDS
from archiver_svc.reader import load_market
from archiver_svc.synth import synth_payloads, synth_states
from archiver_svc.windows import encode_object, object_key
from common.store import LocalStore

T0 = 1_763_856_000_000  # a day boundary
DAY = 172_800
WEEK = 7 * DAY
CODECS = [("zstd", 1), ("zstd", 3), ("zstd", 9), ("lz4", None), ("snappy", None), ("none", None)]


def _windows_day(store: LocalStore, n: int, market: str = "BTC-15M") -> None:
    per = 1200  # 10-minute windows
    for w in range(0, n, per):
        ws = T0 + 500 * w
        pairs = synth_payloads(market, ws, min(per, n - w), seed=w)
        store.put(object_key("states", market, ws), encode_object("states", market, ws, 600_000, pairs))


def _json_gz_per_state(n: int) -> float:
    from benchmarks.archive import json_gz_bytes

    return json_gz_bytes(synth_states("BTC-15M", T0, n)) / n


def bench_columnar(work: Path, n: int) -> dict[str, Any]:
    warm = LocalStore(work / "warmup")  # imports (pyarrow, zstd) and first-call costs out of the figure
    _windows_day(warm, 2400)
    compact(warm, kinds=("states",), now_ms=T0 + 10 * 86_400_000)
    store = LocalStore(work / "day")
    _windows_day(store, n)
    t, c = time.perf_counter(), time.process_time()
    res = compact(store, kinds=("states",), now_ms=T0 + 10 * 86_400_000)
    dt, cpu = time.perf_counter() - t, time.process_time() - c
    if res.rows != n:
        raise RuntimeError(f"compacted {res.rows} of {n}: {res.problems[:3]}")
    import pyarrow as pa
    import pyarrow.parquet as pq

    day = columnar.day_key("states", "BTC-15M", "2025-11-23")
    table = pq.read_table(pa.BufferReader(store.get(day)))
    out: dict[str, Any] = {"compact_states": n, "compact_s": round(dt, 3), "compact_cpu_s": round(cpu, 3),
                           "compact_states_per_s": round(n / dt),
                           "compact_states_per_cpu_s": round(n / cpu)}  # fmt: skip
    for codec, level in CODECS:
        t = time.perf_counter()
        data = columnar.encode_table(table, codec, level)
        enc = time.perf_counter() - t
        t = time.perf_counter()
        pq.read_table(pa.BufferReader(data))
        dec = time.perf_counter() - t
        name = f"{codec}{level or ''}"
        out[f"codec_{name}_bytes_per_state"] = round(len(data) / n, 1)
        out[f"codec_{name}_encode_s"] = round(enc, 3)
        out[f"codec_{name}_decode_s"] = round(dec, 3)
    out.update(_steady(work, n))
    jz = _json_gz_per_state(min(n, 12_000))
    out["json_gz_bytes_per_state"] = round(jz, 1)
    out["columnar_bytes_per_state"] = round(len(store.get(day)) / n, 1)
    out["columnar_ratio_vs_json_gz"] = round(len(store.get(day)) / n / jz, 3)
    windows = sum(o.size for o in store.list("market-data/"))
    out["windows_ratio_vs_json_gz"] = round(windows / n / jz, 3)
    return out


STEADY_MARKETS = ("BTC-15M", "ETH-15M", "SOL-15M")


def _steady(work: Path, n: int) -> dict[str, Any]:
    """One compaction pass over a day of each of three markets (what the compactor does on an archive of many
    days): the first day pays for the process's first large allocations, the figure is the pass's."""
    store = LocalStore(work / "steady")
    for m in STEADY_MARKETS:
        _windows_day(store, n, m)
    t, c = time.perf_counter(), time.process_time()
    res = compact(store, kinds=("states",), now_ms=T0 + 10 * 86_400_000)
    dt, cpu = time.perf_counter() - t, time.process_time() - c
    if res.rows != n * len(STEADY_MARKETS):
        raise RuntimeError(f"compacted {res.rows} of {n * len(STEADY_MARKETS)}: {res.problems[:3]}")
    return {"compact_pass_days": len(STEADY_MARKETS), "compact_pass_s": round(dt, 3),
            "compact_pass_cpu_s": round(cpu, 3), "compact_pass_states_per_s": round(res.rows / dt),
            "compact_pass_states_per_cpu_s": round(res.rows / cpu),
            "load_avg_1m": round(os.getloadavg()[0], 2)}  # fmt: skip


def write_synthetic(store: LocalStore, market: str, n: int, seed: int) -> None:
    """``n`` states of the trainer's generator for ``market`` as columnar day files (no windows)."""
    from trainer_svc.synthetic import generate

    done, k = 0, 0
    while done < n:
        m = min(DAY, n - done)  # one UTC day per file: the generator's windows stay whole (900 s | 86,400 s)
        st = generate(n_states=m, start_ms=T0 + 500 * done, seed=seed * 1000 + k)
        ids = np.stack([st.tick_ms, np.zeros(m, np.int64)], 1)
        table, idx = np.unique(np.asarray(st.slugs), return_inverse=True)
        arrays = {"ids": ids, "tick_ms": st.tick_ms, "raw": st.raw, "features": st.features, "flags": st.flags,
                  "slug_table": table, "slug_idx": idx.astype(np.int32)}  # fmt: skip
        data = columnar.encode_table(columnar.states_table(arrays))
        day = time.strftime("%Y-%m-%d", time.gmtime(int(st.tick_ms[0]) // 1000))
        man = columnar.manifest("states", market, day, data, st.tick_ms, 0.5, [])
        store.put(columnar.day_key("states", market, day), data)
        store.put(columnar.day_key("states", market, day, columnar.MANIFEST), columnar.dumps(man))
        done, k = done + m, k + 1


def _drop_cache(root: Path) -> None:
    for p in root.rglob("*.parquet"):
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def bench_week(work: Path, n: int) -> dict[str, Any]:
    root = work / "week"
    store = LocalStore(root)
    write_synthetic(store, "WEEK-15M", n, 0)
    load_market(LocalStore(work / "nothing"), "WEEK-15M", labels=False, raw_fields=TRAIN_FIELDS)  # imports
    _drop_cache(root)
    t, c = time.perf_counter(), time.process_time()
    md = load_market(store, "WEEK-15M", labels=False, raw_fields=TRAIN_FIELDS)
    cold, cold_cpu = time.perf_counter() - t, time.process_time() - c
    if len(md.states) != n:
        raise RuntimeError(f"loaded {len(md.states)} of {n}")
    del md
    t, c = time.perf_counter(), time.process_time()
    load_market(store, "WEEK-15M", labels=False, raw_fields=TRAIN_FIELDS)
    warm, warm_cpu = time.perf_counter() - t, time.process_time() - c
    return {"week_states": n, "week_load_cold_s": round(cold, 3), "week_load_cold_cpu_s": round(cold_cpu, 3),
            "week_load_warm_s": round(warm, 3), "week_load_warm_cpu_s": round(warm_cpu, 3),
            "week_columnar_bytes_per_state": round(sum(o.size for o in store.list("columnar/")) / n, 1),
            "load_avg_1m": round(os.getloadavg()[0], 2)}  # fmt: skip


CHILD = """
import json, resource, sys, time
from trainer_svc.pipeline import JobParams, run_training
a = json.loads(sys.argv[1])
t = time.perf_counter()
s = run_training(JobParams(market=a["markets"], store_url=a["store"], promote=False, overrides=a["overrides"]))
print(json.dumps({"wall_s": time.perf_counter() - t, "timings": s["timings"], "n_states": s["data"]["n_states"],
                  "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "bounded": s["data"].get("bounded"),
                  "holdout_pnl": {k: v.get("pnl") for k, v in s["holdout"].items()}}))
"""


def curve_point(work: Path, n: int, overrides: dict[str, Any], max_gb: float = 8.0) -> dict[str, Any]:
    from archiver_svc.budget import TooLarge
    from common.settings import get_settings
    from trainer_svc.algos import TrainConfig
    from trainer_svc.pipeline import JobParams, check_budget, estimate_job

    k = 10 if n >= 40_000_000 else (4 if n >= 16_000_000 else 1)
    root = work / f"curve-{n}"
    store = LocalStore(root)
    markets = [f"SYN{i}-15M" for i in range(k)]
    job = JobParams(market=",".join(markets), synthetic=n // k)  # the same estimate as from the manifests
    cfg = TrainConfig(**overrides)  # awbc: the bounded data path's estimate
    if estimate_job(job, markets, (30, 60, 300), cfg).gb > max_gb:  # refused up front: no data written for nothing
        os.environ["FUSION_TRAIN_MAX_MEMORY_GB"] = str(max_gb)
        get_settings.cache_clear()
        try:
            check_budget(job, markets, (30, 60, 300), cfg)
        except TooLarge as e:
            return {"states": n, "markets": k, "refused": str(e)}
        finally:
            os.environ.pop("FUSION_TRAIN_MAX_MEMORY_GB", None)
            get_settings.cache_clear()
    t = time.perf_counter()
    for i, m in enumerate(markets):
        write_synthetic(store, m, n // k, i)
    gen = time.perf_counter() - t
    est = estimate_job(JobParams(market=",".join(markets), store_url=store.url), markets, (30, 60, 300), cfg)
    # the machine is shared: a point estimated over max_gb is refused by the job itself (reported), not run into
    # the kernel's OOM killer
    env = {**os.environ, "FUSION_TRAIN_MAX_MEMORY_GB": str(max_gb)}
    args = json.dumps({"markets": ",".join(markets), "store": store.url, "overrides": overrides})
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", CHILD, args], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    shutil.rmtree(root, ignore_errors=True)
    out: dict[str, Any] = {"states": n, "markets": k, "write_columnar_s": round(gen, 1),
                           "estimate_gb": round(est.gb, 2), "end_to_end_s": round(wall, 1)}  # fmt: skip
    if p.returncode != 0:
        out["error"] = (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1][:300]
        out["returncode"] = p.returncode
        return out
    r = json.loads(p.stdout.strip().splitlines()[-1])
    peak = r["maxrss_kb"] / 2**20
    out.update(timings=r["timings"], peak_rss_gib=round(peak, 2), estimate_gib=round(est.bytes / 2**30, 2),
               estimate_over_peak=round(est.bytes / 2**30 / peak, 2), loaded=r["n_states"], bounded=r["bounded"],
               holdout_pnl=r["holdout_pnl"], load_avg_1m=round(os.getloadavg()[0], 2))  # fmt: skip
    return out


def run(
    quick: bool = False, sizes: tuple[int, ...] | None = None, parts: str = "columnar,week,curve"
) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="fusion-bench-scale-"))
    try:
        res: dict[str, Any] = {}
        if "columnar" in parts:
            res.update(bench_columnar(work, DAY // 10 if quick else DAY))
        if "week" in parts:
            res.update(bench_week(work, WEEK // 10 if quick else WEEK))
        if "real" in parts:  # real recordings through the observer (benchmarks.scale_real)
            from benchmarks.scale_real import run as run_real

            res["real"] = run_real(synthetic_n=0)
        if "curve" in parts:
            sizes = sizes or ((200_000,) if quick else (1_000_000, 4_000_000, 16_000_000, 48_000_000))
            overrides = {"epochs": 2} if quick else {}
            res["curve"] = []
            for n in sizes:
                res["curve"].append(curve_point(work, n, overrides))
                print(json.dumps(res["curve"][-1]), file=sys.stderr, flush=True)  # progress of a long run
        res["bench_maxrss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
        return res
    finally:
        shutil.rmtree(work, ignore_errors=True)
