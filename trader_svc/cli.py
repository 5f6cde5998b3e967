"""``fusion trader status [--trader ID] [--json]``: positions, PnL, model version, ticks, swaps."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from common import keys
from common.names import name_arg
from common.settings import Settings
from common.streams import connect


def _all_status(r: Any) -> list[dict[str, Any]]:
    out = []
    for k in sorted(r.scan_iter(match=f"{keys.TRADER_STATUS_PREFIX}:*:status", count=1000)):
        raw = r.get(k)
        if raw:
            out.append(json.loads(raw))
    return out


def format_status(st: dict[str, Any], now: float | None = None) -> str:
    now = now or time.time()
    p = st.get("pnl", {})
    lines = [
        f"trader {st['trader']}  policy {st['policy']}  model {st.get('model')}  "
        f"{'running' if st.get('running') else 'stopped'} (updated {now - float(st.get('updated', now)):.1f} s ago)",
        f"  markets {', '.join(st.get('markets', []))}",
        f"  ticks {st.get('ticks')}  decisions {st.get('decisions')}  missed {st.get('missed_ticks')}  "
        f"swaps {st.get('swaps')}  rejected {st.get('rejected')}  feature mismatches {st.get('feature_mismatches')}",
        f"  pnl: realised {p.get('realised_usd', 0):.4f}  unrealised {p.get('unrealised_usd', 0):.4f}  "
        f"day {p.get('day_pnl_usd', 0):.4f} USD  fees {p.get('fees', 0):.4f}  fills {p.get('fills')}  "
        f"kill switch {'ON' if p.get('kill_switch') else 'off'}",
    ]
    for m, pos in (p.get("positions") or {}).items():
        lines.append(
            f"  position {m}: {pos['side']} {pos['shares']:.4f} sh cost {pos['cost']:.4f} "
            f"unrealised {pos['unrealised_usd']:.4f}"
        )
    for rj in st.get("rejected_log", [])[-3:]:
        lines.append(f"  rejected {rj.get('version')}: {rj.get('reason')}")
    return "\n".join(lines)


def trader_main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="fusion trader", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser("status", help="show a trader's (or every trader's) status")
    sp.add_argument("--trader", type=name_arg("trader"), help="trader id (default: every trader with a status)")
    sp.add_argument("--json", action="store_true", help="print the raw JSON")
    a = ap.parse_args(sys.argv[1:] if argv is None else argv)
    r = connect(Settings().redis_url)
    if a.trader:
        raw = r.get(keys.trader_status_key(a.trader))
        found = [json.loads(raw)] if raw else []
    else:
        found = _all_status(r)
    if not found:
        print(f"no trader status found{' for ' + a.trader if a.trader else ''}", file=sys.stderr)
        return 1
    for st in found:
        print(json.dumps(st, indent=1) if a.json else format_status(st))
    return 0
