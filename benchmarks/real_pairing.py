"""Training on imported REAL recordings: the genuine pairing of Polymarket and Binance against a pairing with no
relation (the same Polymarket books with the Binance side of another day), hold-out vs baselines vs the oracle.

The recording is Polyscraper's (``polymarket_hourly_updown_with_binance_spot__Polyscraper/polyscraper.db`` under
``FUSION_SHARED_DATA``): 4.9 days of BTC hourly Up/Down markets, the Up token's bid/ask and Binance's spot price
polled together once a minute, with each hour's outcome. It states no licence, so it is not in the repository:
without ``FUSION_SHARED_DATA`` this benchmark reports ``skipped``.

* ``genuine``: ``fusion import --layout poller`` of the file as recorded;
* ``shifted``: the same rows with ``btc_usdt_spot`` replaced by the price recorded ``shift_h`` hours later
  (cyclically within the recording, nearest earlier poll), so the Binance side is real but belongs to another
  day: whatever the policy could learn from it is noise. Nothing may be promoted on it.

Both are trained the same way (``fusion train --algo awbc``, label horizon ``horizon_s``, hold-out = the last
windows) and evaluated by the trainer's own promotion rule against hold, random, momentum and the exact oracle.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from common.settings import Settings

POLYSCRAPER = "polymarket_hourly_updown_with_binance_spot__Polyscraper/polyscraper.db"
M = "BTC-1H"
HORIZONS_S = (60, 300, 900)


def recording() -> Path | None:
    """The Polyscraper BTC file under ``FUSION_SHARED_DATA``, or None when it is not there."""
    root = Settings().shared_data
    p = Path(root) / POLYSCRAPER if root else None
    return p if p is not None and p.is_file() else None


def shifted_copy(src: Path, dst: Path, shift_h: float) -> int:
    """``src``'s ``polydata`` rows into ``dst`` with each row's Binance price taken ``shift_h`` hours later
    (cyclic over the recording's span; the last poll at or before that time). Returns the rows copied."""
    with sqlite3.connect(f"file:{src}?mode=ro", uri=True) as con:
        rows = con.execute("SELECT id, timestamp, market_name, token_id, best_bid, best_ask, btc_usdt_spot, outcome "
                           "FROM polydata ORDER BY timestamp, id").fetchall()  # fmt: skip
    t = np.array([np.datetime64(r[1].replace(" ", "T")).astype("datetime64[s]").astype(np.int64) for r in rows])
    px = np.array([np.nan if r[6] is None else float(r[6]) for r in rows])
    ok = np.isfinite(px)
    tk, pk = t[ok], px[ok]
    span = int(tk[-1] - tk[0]) + 60
    want = tk[0] + (t - tk[0] + int(shift_h * 3600)) % span
    j = np.clip(np.searchsorted(tk, want, "right") - 1, 0, tk.size - 1)
    out = [(*r[:6], float(pk[j[i]]), r[7]) for i, r in enumerate(rows)]
    dst.unlink(missing_ok=True)
    with sqlite3.connect(dst) as con:
        con.execute("CREATE TABLE polydata (id INTEGER PRIMARY KEY, timestamp TEXT, market_name TEXT, token_id TEXT, "
                    "best_bid REAL, best_ask REAL, btc_usdt_spot REAL, outcome TEXT)")  # fmt: skip
        con.executemany("INSERT INTO polydata VALUES (?, ?, ?, ?, ?, ?, ?, ?)", out)
    return len(out)


def import_and_train(db: Path, store_dir: Path, *, epochs: int = 6, seed: int = 0,
                     horizon_s: int = 300) -> dict[str, Any]:  # fmt: skip
    """``fusion import --layout poller`` then one training job (promotion decided, nothing deployed)."""
    from common.settings import get_settings
    from common.store import LocalStore
    from fusion.importers.adapters import load_layout
    from fusion.importers.clean import Report
    from fusion.importers.write import prepare, write
    from trainer_svc.pipeline import JobParams, run_training

    s = get_settings()
    if horizon_s not in s.label_horizons_s or min(s.label_horizons_s) < 60:
        raise RuntimeError(f"FUSION_LABEL_HORIZONS_S must fit a 1-minute tick and hold {horizon_s} (minute_horizons)")
    t0 = time.perf_counter()
    tab = load_layout("poller", db)
    states, rep, cols = prepare(tab, M, s, None, Report(source=db.name, market=M, layout="poller"))
    write(LocalStore(store_dir), M, states, cols, rep, s)
    t_import = time.perf_counter() - t0
    summ = run_training(JobParams(market=M, store_url=f"file://{store_dir}", origin="imported", promote=False,
                                  seed=seed, overrides={"epochs": epochs, "horizon_s": horizon_s}))  # fmt: skip
    hold = summ.get("holdout") or {}
    return {
        "rows": rep.rows_read,
        "states": len(states),
        "import_s": round(t_import, 2),
        "train_s": summ["timings"]["total_s"],
        "holdout_windows": int((hold.get("candidate") or {}).get("windows", 0)),
        "pnl_per_window": {k: round(float(v.get("pnl_per_window", float("nan"))), 4) for k, v in hold.items()},
        "promote": bool(summ["decision"]["promote"]),
        "reason": summ["decision"]["reason"],
    }


@contextmanager
def minute_horizons() -> Iterator[None]:
    """``FUSION_LABEL_HORIZONS_S`` = HORIZONS_S while inside (restored after)."""
    from common.settings import get_settings

    old = os.environ.get("FUSION_LABEL_HORIZONS_S")
    os.environ["FUSION_LABEL_HORIZONS_S"] = json.dumps(list(HORIZONS_S))
    get_settings.cache_clear()
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("FUSION_LABEL_HORIZONS_S", None)
        else:
            os.environ["FUSION_LABEL_HORIZONS_S"] = old
        get_settings.cache_clear()


def run(quick: bool = False, shifts_h: tuple[float, ...] = (24.0, 48.0, 72.0, 96.0)) -> dict[str, Any]:
    src = recording()
    if src is None:
        return {"skipped": f"no {POLYSCRAPER} under FUSION_SHARED_DATA"}
    out: dict[str, Any] = {"recording": POLYSCRAPER, "horizon_s": 300, "label_horizons_s": list(HORIZONS_S)}
    epochs = 2 if quick else 6
    with tempfile.TemporaryDirectory() as d, minute_horizons():
        tmp = Path(d)
        out["genuine"] = import_and_train(src, tmp / "store-genuine", epochs=epochs)
        for h in shifts_h[:1] if quick else shifts_h:
            shifted = tmp / f"shifted-{h:g}.db"
            shifted_copy(src, shifted, h)
            out[f"shifted_{h:g}h"] = import_and_train(shifted, tmp / f"store-{h:g}", epochs=epochs)
    out["promoted_unrelated"] = sum(bool(v["promote"]) for k, v in out.items() if k.startswith("shifted_"))
    return out


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
