"""``fusion streams ls | info NAME | tail NAME | read NAME``: read the streams as a person would.

``tail`` and ``read`` decode the msgpack payloads (states, labels with ``--labels``, a trader's records with
``--trades``: ``fusion:{TRADER}:trades``) into named fields; ``tail --follow`` keeps reading new entries (XREAD
BLOCK); ``read --from --to`` reads a range of entry IDs (or ISO times). A record that is not usable is shown with
its ``error`` (never raised).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from typing import Any

import msgpack
import redis

from common import keys
from common.features import MARKET_FEATURES
from common.names import name_arg
from common.schema import ACTIONS, SchemaError, decode_label, decode_state, flag_names
from common.settings import Settings
from common.streams import connect, scan_streams, trim_by_age
from common.validate import check_trade


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def describe_state(payload: bytes, full: bool = False) -> dict[str, Any]:
    s = decode_state(payload)
    out: dict[str, Any] = {
        "market": s.market,
        "tick": _iso(s.tick_ms),
        "flags": flag_names(s.flags),
        "pm": s.pm.slug if s.pm else None,
        "features": {n: round(float(v), 4) for n, v in zip(MARKET_FEATURES, s.features, strict=False)},
    }
    raw = s.named_raw()
    keep = raw if full else {k: raw[k] for k in (
        "up_bid_px_0", "up_ask_px_0", "dn_bid_px_0", "dn_ask_px_0", "bn_last_px", "bn_bid", "bn_ask",
        "age_binance_ms", "age_poly_ms", "pm_end_s", "pm_settle_up")}  # fmt: skip
    out["raw"] = {k: (None if v != v else round(v, 6)) for k, v in keep.items()}
    return out


def describe_label(payload: bytes) -> dict[str, Any]:
    lb = decode_label(payload)
    return {
        "market": lb.market,
        "tick": _iso(lb.tick_ms),
        "horizons": {
            f"{h}s": {
                "valid": bool(lb.valid[i]),
                "best": ACTIONS[lb.best[i]] if lb.best[i] >= 0 else None,
                "rewards": {a: round(float(lb.rewards[i, j]), 5) for j, a in enumerate(ACTIONS)},
            }
            for i, h in enumerate(lb.horizons_s)
        },
    }


def describe_trade(trader: str, eid: str, payload: bytes) -> dict[str, Any]:
    """A trader's record (decision, fill, refusal, settlement, swap, day, kill) with the time of its entry ID."""
    why = check_trade(trader, payload)
    if why:
        return {"error": why}
    rec = msgpack.unpackb(payload, raw=False)
    return {"time": _iso(int(eid.partition("-")[0])), **rec}


def stream_of(name: str, kind: str) -> str:
    """The stream of ``kind`` (states, labels, trades) of a market or trader ``name``."""
    return {"states": keys.states_stream, "labels": keys.labels_stream, "trades": keys.trades_stream}[kind](name)


def _print_entry(eid: bytes, fields: dict[bytes, bytes], kind: str, full: bool, name: str = "") -> None:  # noqa: D103
    payload = fields.get(keys.PAYLOAD_FIELD, b"")
    try:
        if kind == "trades":
            body = describe_trade(name, eid.decode(), payload)
        else:
            body = describe_label(payload) if kind == "labels" else describe_state(payload, full)
    except SchemaError as e:
        body = {"error": str(e)}
    print(json.dumps({"id": eid.decode(), **body}, indent=None if not full else 2, default=str))


def _range_id(text: str | None, default: str) -> str:
    """An entry ID, epoch ms or ISO time (UTC when naive) -> an XRANGE bound."""
    if not text:
        return default
    if text[0].isdigit() and all(c.isdigit() or c == "-" for c in text) and text.count("-") <= 1:
        return text
    t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return str(int((t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp() * 1000))


def _kind_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--labels", action="store_true", help="the labels stream instead of states")
    g.add_argument("--trades", action="store_true", help="NAME is a trader: its records (fusion:{NAME}:trades)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="fusion streams", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("ls", help="every states, labels and trades stream")
    p_info = sub.add_parser("info", help="XINFO of a market's (or a trader's) streams and groups")
    p_info.add_argument("market", type=name_arg("market"), metavar="NAME")
    p_tail = sub.add_parser("tail", help="decode the newest entries")
    p_tail.add_argument("market", type=name_arg("market"), metavar="NAME")
    p_tail.add_argument("-n", type=int, default=5)
    _kind_args(p_tail)
    p_tail.add_argument("--full", action="store_true", help="every raw field")
    p_tail.add_argument("-f", "--follow", action="store_true")
    p_read = sub.add_parser("read", help="decode the entries of a range (entry IDs, epoch ms or ISO times)")
    p_read.add_argument("market", type=name_arg("market"), metavar="NAME")
    p_read.add_argument("--from", dest="start", help="first entry ID or time (inclusive; default: the oldest)")
    p_read.add_argument("--to", dest="end", help="last entry ID or time (inclusive; default: the newest)")
    p_read.add_argument("-n", type=int, default=1000, help="at most this many entries")
    _kind_args(p_read)
    p_read.add_argument("--full", action="store_true", help="every raw field")
    ap.add_argument("--redis-url", default=None)
    a = ap.parse_args(argv)
    r: Any = connect(a.redis_url or Settings().redis_url)

    if a.cmd == "ls":
        for stream in [s for kind in keys.STREAM_KINDS for s in scan_streams(r, kind)]:
            info = r.xinfo_stream(stream)
            last = info.get("last-generated-id", b"0-0")
            print(f"{stream}\tlen={info['length']}\tlast={last.decode() if isinstance(last, bytes) else last}")
        return 0
    if a.cmd == "info":
        max_age_s = Settings().stream_max_age_s
        for stream in (keys.states_stream(a.market), keys.labels_stream(a.market), keys.trades_stream(a.market)):
            try:
                info = r.xinfo_stream(stream)
            except redis.ResponseError:
                if not stream.endswith(":trades"):  # NAME may be a market or a trader
                    print(f"{stream}: (no such stream)")
                continue
            groups = r.xinfo_groups(stream)
            print(
                f"{stream}: length={info['length']} first={_id(info.get('first-entry'))} "
                f"last={_id(info.get('last-entry'))}"
            )
            for g in groups:
                print(
                    f"  group {g['name'].decode()}: consumers={g['consumers']} pending={g['pending']} "
                    f"lag={g.get('lag')} last-delivered={g['last-delivered-id'].decode()}"
                )
            print("  " + _trim_line(r, stream, info, max_age_s))
        grid = r.get(keys.published_tick_key(a.market))
        print(f"published tick grid: {_iso(int(grid)) if grid else '-'}")
        return 0
    kind = "labels" if a.labels else "trades" if a.trades else "states"
    stream = stream_of(a.market, kind)
    if a.cmd == "read":
        for eid, fields in r.xrange(stream, _range_id(a.start, "-"), _range_id(a.end, "+"), count=a.n):
            _print_entry(eid, fields, kind, a.full, a.market)
        return 0
    entries = list(reversed(r.xrevrange(stream, count=a.n)))
    for eid, fields in entries:
        _print_entry(eid, fields, kind, a.full, a.market)
    if a.follow:
        last = entries[-1][0] if entries else b"$"
        while True:
            got = r.xread({stream: last}, block=5000, count=100)
            for _, items in got or []:
                for eid, fields in items:
                    _print_entry(eid, fields, kind, a.full, a.market)
                    last = eid
    return 0


def _trim_line(r: Any, stream: str, info: dict[Any, Any], max_age_s: int) -> str:
    """Whether trimming follows the age setting or a consumer group holds it back (an alarm)."""
    last = info.get("last-entry")
    if not last:
        return "trim: empty stream"
    (st,) = trim_by_age(r, [stream], int(_id(last).split("-")[0]), max_age_s, dry=True)
    if st.held_by is None:
        return f"trim: follows the age setting ({max_age_s} s)"
    return (
        f"trim: HELD BACK by group {st.held_by} (oldest unacknowledged/unread {st.min_id}): the stream keeps "
        f"{st.held_back_s:.0f} s more than the age setting ({max_age_s} s); start or fix that consumer"
    )


def _id(entry: Any) -> str:
    if not entry:
        return "-"
    eid = entry[0]
    return eid.decode() if isinstance(eid, bytes) else str(eid)
