"""The bounded data path of a training job (``awbc``): memory set by the budgets below, not by the data's size.

Pass 1, one market at a time: load it (``job_data._load_one``), label it at the trained horizon only, segment
its windows, write what training and evaluation read back (features, the four Polymarket prices in their held
dtype, ticks, the horizon's rewards and validity) to a scratch directory (:class:`Spill`), and free it. What
stays resident per market is a few numbers per window. The windows of all markets are then ordered and split
exactly as :func:`trainer_svc.dataset.pool` + :func:`~trainer_svc.dataset.walk_forward` would (purge gap: the
longest label horizon of the job), without any array of all states.

Then, reading the scratch files back by row ranges (plain reads: nothing memory-mapped stays resident):

* training samples: the valid rows of the train split in the pooled order, subsampled to
  ``max_train_samples`` with the same seeded draw as :func:`trainer_svc.algos.cloning.train_bc` (the sample
  count is in the summary), as features + soft targets + weights;
* validation: the episodes of the val split, at most ``val_max_states`` states of whole windows evenly spread
  over it (all of them below the cap);
* hold-out: evaluated ``eval_chunk_states`` at a time (whole windows; candidate, champion, baselines and the
  oracle decide per episode, so chunks change nothing, except that chunk ``c > 0`` draws the random baseline
  with ``seed + c``) and merged.

Below the caps (the demo's data) the samples, the validation episodes and the hold-out figures are the same as
the in-memory path's (``tests/trainer_svc/test_bounded.py``).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from archiver_svc.rawcols import RawColumns, widen
from common.features import N_MARKET_FEATURES, infer_tick_s
from common.schema import RAW_INDEX, StateColumns
from trainer_svc.algos.cloning import awbc_targets
from trainer_svc.algos.config import F32, TrainConfig
from trainer_svc.dataset import Part, Split, describe_splits, horizon_index, merge_windows, split_windows
from trainer_svc.env import EpisodeBatch
from trainer_svc.evaluate import Backtest, merge_backtests
from trainer_svc.windows import Windows, segment

I64 = npt.NDArray[np.int64]
PRICES = (("up_ask", "up_ask_px_0"), ("up_bid", "up_bid_px_0"), ("dn_ask", "dn_ask_px_0"), ("dn_bid", "dn_bid_px_0"))
READ_ROWS = 1_000_000  # rows read from a spill at a time (training samples)
# bytes a state takes in the spill (float32 prices; a market whose prices are off the 0.001 grid holds float64)
SPILL_BYTES_PER_STATE = 4 * N_MARKET_FEATURES + 4 * len(PRICES) + 8 + 3 * 4 + 1


class ScratchTooSmall(OSError):
    """The scratch directory has not the room the job's spill needs; the message names the setting."""


def check_scratch(scratch_dir: str | None, rows: int) -> int:
    """Raise :class:`ScratchTooSmall` unless the scratch directory has room for ``rows`` spilled states (with
    float64 prices); returns the bytes needed."""
    where = scratch_dir or tempfile.gettempdir()
    need = rows * (SPILL_BYTES_PER_STATE + 4 * len(PRICES))
    free = shutil.disk_usage(where).free
    if need > free:
        raise ScratchTooSmall(
            f"training would spill up to {need / 1e9:.2f} GB for {rows:,} states to {where}, which has "
            f"{free / 1e9:.2f} GB free: set FUSION_TRAIN_SCRATCH_DIR to a directory with room, or train on fewer "
            f"markets or a shorter range (from_ms/to_ms)"
        )
    return need


class Spill:
    """Per-row arrays of one market in raw files under ``root``; :meth:`read` returns rows ``[begin, end)``
    with a plain read (no memory map, so the pages read do not stay in the process's resident set)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.meta: dict[str, tuple[np.dtype[Any], tuple[int, ...]]] = {}

    def write(self, name: str, arr: npt.NDArray[Any]) -> None:
        a = np.ascontiguousarray(arr)
        a.tofile(self.root / name)
        self.meta[name] = (a.dtype, tuple(a.shape[1:]))

    def read(self, name: str, begin: int, end: int) -> npt.NDArray[Any]:
        dt, tail = self.meta[name]
        width = int(np.prod(tail)) if tail else 1
        n = max(int(end) - int(begin), 0)
        a = np.fromfile(self.root / name, dtype=dt, count=n * width, offset=int(begin) * width * dt.itemsize)
        return a.reshape((n, *tail))

    def nbytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.iterdir())


@dataclass(slots=True)
class Bounded:
    """A job's data after pass 1: per-window figures in memory, per-row data in the spills."""

    parts: list[Part]
    spills: list[Spill]
    windows: Windows  # all markets, pooled order; begin/end are pooled row numbers
    market_of: I64  # (W,) index into parts
    first_ms: I64
    last_ms: I64
    n_valid: I64  # (W,) rows with a valid label at the horizon
    n_keep: I64  # (W,) of them with finite rewards (the training samples)
    splits: dict[str, Split]
    dropped: list[int]
    purge_s: float
    tick_s: float
    info: dict[str, Any]
    scratch: Path
    spill_bytes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return describe_splits(self.splits, self.windows, self.parts, self.purge_s, self.dropped)

    def close(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)


Loader = Callable[[str, int], tuple[StateColumns, Any, dict[str, Any]]]


def _price(raw: Any, name: str) -> npt.NDArray[Any]:
    """A price column in its held dtype (RawColumns), or float64 from a full matrix."""
    if isinstance(raw, RawColumns):
        return np.asarray(raw.cols[name]) if name in raw.cols else raw.column(name)
    return np.asarray(raw[:, RAW_INDEX[name]], np.float64)


def build(
    markets: list[str],
    load: Loader,
    horizon_s: int,
    purge_s: float,
    scratch_dir: str | None = None,
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
) -> Bounded:
    """Pass 1 (see the module doc). ``load(market, index)`` returns ``(states, labels, info)`` of one market
    with labels at ``horizon_s`` (``job_data._load_one``). Raises ValueError for fewer than 3 windows."""
    scratch = Path(tempfile.mkdtemp(prefix="fusion-train-", dir=scratch_dir))
    try:
        parts, spills, wins, firsts, lasts, valids, keeps, infos = [], [], [], [], [], [], [], []
        off, tick_s = 0, 0.5
        for k, m in enumerate(markets):
            states, labels, info = load(m, k)
            n = len(states)
            hi = horizon_index(labels, horizon_s)
            r = np.ascontiguousarray(labels.rewards[:, hi, :], np.float32)
            valid = labels.valid[:, hi].astype(bool)
            keep = valid & np.all(np.isfinite(r), axis=1)
            w = segment(states)
            sp = Spill(scratch / f"m{k}")
            sp.write("features", states.features[:, :N_MARKET_FEATURES].astype(np.float32, copy=False))
            for key, name in PRICES:
                sp.write(key, _price(states.raw, name))
            sp.write("tick_ms", states.tick_ms)
            sp.write("rewards", r)
            sp.write("keep", keep)
            if k == 0:
                tick_s = infer_tick_s(states.tick_ms)
            cv, ck = np.concatenate([[0], np.cumsum(valid)]), np.concatenate([[0], np.cumsum(keep)])
            valids.append(cv[w.end] - cv[w.begin])
            keeps.append(ck[w.end] - ck[w.begin])
            firsts.append(states.tick_ms[w.begin])
            lasts.append(states.tick_ms[w.end - 1])
            wins.append((w, off, k))
            parts.append(Part(m, off, off + n))
            spills.append(sp)
            infos.append(info)
            off += n
            del states, labels, r, valid, keep
        windows, order = merge_windows(wins)
        market_of = np.concatenate([np.full(len(w), k, np.int64) for w, _, k in wins])[order]

        def cat(xs: list[Any]) -> I64:
            return np.concatenate(xs).astype(np.int64)[order]

        first, last = cat(firsts), cat(lasts)
        splits, dropped = split_windows(windows, first, last, fractions, purge_s)
        info = _info(markets, infos, off)
        b = Bounded(parts, spills, windows, market_of, first, last, cat(valids), cat(keeps), splits, dropped,
                    purge_s, tick_s, info, scratch)  # fmt: skip
        b.spill_bytes = sum(s.nbytes() for s in spills)
        return b
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise


def uses(cfg: TrainConfig) -> bool:
    """Whether a job runs on this path: ``awbc``; ``ppo`` and ``supervised`` hold every state in memory."""
    return cfg.algo == "awbc"


def _info(markets: list[str], infos: list[dict[str, Any]], n: int) -> dict[str, Any]:
    if len(markets) == 1:
        return infos[0]
    return {
        "market": ",".join(markets),
        "markets": dict(zip(markets, infos, strict=True)),
        "labels_source": ",".join(sorted({i["labels_source"] for i in infos})),
        "n_states": n,
        "start_ms": min(i["start_ms"] for i in infos),
        "end_ms": max(i["end_ms"] for i in infos),
    }


def _runs(b: Bounded, sel: I64, max_rows: int) -> Iterator[tuple[int, int, int, I64]]:
    """``(market, first row, end row (pooled), positions into sel)`` of consecutive windows of one market,
    at most ``max_rows`` rows apart (one window may exceed it alone)."""
    for k in range(len(b.parts)):
        pos = np.flatnonzero(b.market_of[sel] == k)
        pos = pos[np.argsort(b.windows.begin[sel[pos]], kind="stable")]
        i = 0
        while i < pos.size:
            lo = int(b.windows.begin[sel[pos[i]]])
            j = i + 1
            while j < pos.size and int(b.windows.end[sel[pos[j]]]) - lo <= max_rows:
                j += 1
            yield k, lo, int(b.windows.end[sel[pos[j - 1]]]), pos[i:j]
            i = j


def train_samples(b: Bounded, cfg: TrainConfig) -> tuple[F32, F32, F32, int]:
    """``(market features (n, F), soft targets (n, 3), weights (n,), valid rows of the train split)``: the
    same rows in the same order as :func:`trainer_svc.algos.cloning.train_bc` on the pooled dataset."""
    rng = np.random.default_rng(cfg.seed)
    tw = b.splits["train"].windows
    counts = b.n_keep[tw]
    offs = np.concatenate([[0], np.cumsum(counts)])
    total = int(offs[-1])
    pick = np.sort(rng.choice(total, cfg.max_train_samples, replace=False)) if total > cfg.max_train_samples else None
    n_out = total if pick is None else int(pick.size)
    market = np.empty((n_out, N_MARKET_FEATURES), np.float32)
    rew = np.empty((n_out, 3), np.float64)
    for k, lo, hi, pos in _runs(b, tw, READ_ROWS):
        sp, base = b.spills[k], b.parts[k].begin
        keep = sp.read("keep", lo - base, hi - base)
        src, dst = [], []
        for p in pos.tolist():
            kk = np.flatnonzero(keep[b.windows.begin[tw[p]] - lo : b.windows.end[tw[p]] - lo])
            src.append(kk + (b.windows.begin[tw[p]] - lo))
            dst.append(offs[p] + np.arange(kk.size))
        s_, d_ = np.concatenate(src), np.concatenate(dst)
        if pick is not None:
            at = np.minimum(np.searchsorted(pick, d_), pick.size - 1)
            hit = pick[at] == d_
            s_, d_ = s_[hit], at[hit]
        if s_.size == 0:
            continue
        market[d_] = sp.read("features", lo - base, hi - base)[s_]
        rew[d_] = sp.read("rewards", lo - base, hi - base)[s_]
    q, w = awbc_targets(rew, cfg)
    return market, q, w, total


def val_windows(b: Bounded, cap: int) -> I64:
    """The val split's windows used for model selection: all of them, or whole windows evenly spread over the
    split with at most ``cap`` states in all."""
    v = b.splits["val"].windows
    lengths = b.windows.lengths[v]
    if int(lengths.sum()) <= cap:
        return v
    k = max(1, int(cap // max(float(lengths.mean()), 1.0)))
    pick = np.unique(np.linspace(0, v.size - 1, k).round().astype(np.int64))
    while pick.size > 1 and int(lengths[pick].sum()) > cap:
        pick = pick[:-1]
    return v[pick]


def episode_batch(b: Bounded, sel: I64) -> EpisodeBatch:
    """:func:`trainer_svc.env.build_batch` of the windows ``sel`` (pooled indices), read from the spills."""
    w = b.windows
    lengths = w.lengths[sel].astype(np.int64)
    e, t_max = sel.size, int(lengths.max()) if sel.size else 0
    market = np.zeros((e, t_max, N_MARKET_FEATURES), np.float32)
    px = {key: np.full((e, t_max), np.nan) for key, _ in PRICES}
    tick = np.zeros((e, t_max), np.int64)
    rows = np.full((e, t_max), -1, np.int64)
    for k, lo, hi, pos in _runs(b, sel, READ_ROWS):
        sp, base = b.spills[k], b.parts[k].begin
        feats, ticks = sp.read("features", lo - base, hi - base), sp.read("tick_ms", lo - base, hi - base)
        cols = {key: widen(name, sp.read(key, lo - base, hi - base)) for key, name in PRICES}
        for p in pos.tolist():
            bg, en = int(w.begin[sel[p]]), int(w.end[sel[p]])
            n = en - bg
            market[p, :n] = feats[bg - lo : en - lo]
            tick[p, :n] = ticks[bg - lo : en - lo]
            rows[p, :n] = np.arange(bg, en)
            for key in px:
                px[key][p, :n] = cols[key][bg - lo : en - lo]
    return EpisodeBatch(market=market, up_ask=px["up_ask"], up_bid=px["up_bid"], dn_ask=px["dn_ask"],
                        dn_bid=px["dn_bid"], tick_ms=tick, rows=rows, length=lengths, settle=w.settle[sel].copy(),
                        start_s=w.start_s[sel].copy())  # fmt: skip


def chunks(b: Bounded, sel: I64, max_states: int) -> list[I64]:
    """``sel`` cut into consecutive runs of whole windows of at most ``max_states`` states (one window at least)."""
    out: list[I64] = []
    cur: list[int] = []
    n = 0
    for k in sel.tolist():
        m = int(b.windows.lengths[k])
        if cur and n + m > max_states:
            out.append(np.asarray(cur, np.int64))
            cur, n = [], 0
        cur.append(k)
        n += m
    if cur:
        out.append(np.asarray(cur, np.int64))
    return out


def evaluate_chunked(
    b: Bounded, sel: I64, max_states: int, runs: Callable[[EpisodeBatch, int], dict[str, Backtest]]
) -> dict[str, Backtest]:
    """``runs(batch, chunk index)`` on each chunk of the windows ``sel``; the backtests merged by name."""
    parts: dict[str, list[Backtest]] = {}
    for c, ch in enumerate(chunks(b, sel, max_states)):
        for name, bt in runs(episode_batch(b, ch), c).items():
            parts.setdefault(name, []).append(bt)
    return {name: ps[0] if len(ps) == 1 else merge_backtests(ps, name) for name, ps in parts.items()}


# peak bytes of a job on this path, measured by benchmarks/scale.py (see docs/design.md, "memory model")
BASE_BYTES = 500_000_000  # interpreter, numpy, torch, the model
LOAD_BYTES_PER_STATE = 400  # pass 1: one market loaded, labelled at one horizon, spilled
SAMPLE_BYTES = 300  # a training sample: features, targets, weights, the epoch's augmented observations
BATCH_BYTES = 140  # a validation state in its episode batch
EVAL_BYTES = 300  # a hold-out state of a chunk: its batch, the environments' and the oracle's arrays


def peak_bytes(rows_per_market: list[int], cfg: TrainConfig, fractions: tuple[float, ...] = (0.6, 0.2, 0.2)) -> int:
    """Estimated peak resident bytes of a job whose markets have these row counts: the base plus the largest
    of pass 1 (the largest market), training (the sample and the validation episodes) and one hold-out chunk."""
    total = sum(rows_per_market)
    f = np.asarray(fractions, np.float64) / float(np.sum(fractions))
    pass1 = max(rows_per_market, default=0) * LOAD_BYTES_PER_STATE
    training = (min(cfg.max_train_samples, f[0] * total) * SAMPLE_BYTES
                + min(cfg.val_max_states, f[1] * total) * BATCH_BYTES)  # fmt: skip
    evaluation = min(cfg.eval_chunk_states, f[2] * total) * EVAL_BYTES
    return int(BASE_BYTES + max(pass1, training, evaluation))
