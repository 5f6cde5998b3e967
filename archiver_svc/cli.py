"""``fusion sync`` and ``fusion replay``."""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

import redis

from archiver_svc.reader import as_store, iter_objects
from archiver_svc.windows import ArchiveError, market_prefix
from common import keys
from common.log import setup_logging
from common.names import name_arg
from common.settings import get_settings
from common.store import ObjectStore
from common.streams import connect, publish_states

log = logging.getLogger("archiver.cli")


def parse_time(s: str) -> int:
    """ISO 8601 (naive = UTC) or epoch milliseconds -> epoch ms."""
    if s.isdigit():
        return int(s)
    dt = datetime.fromisoformat(s)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def sync_main(argv: list[str] | None = None) -> int:
    from archiver_svc.sync import sync

    st = get_settings()
    ap = argparse.ArgumentParser(prog="fusion sync", description="pull new archive objects into the local cache")
    ap.add_argument("--store", default=st.store_url, help="source store URL (default FUSION_STORE_URL)")
    ap.add_argument("--cache-dir", default=st.cache_dir, help="local cache (default FUSION_CACHE_DIR)")
    ap.add_argument("--market", action="append", type=name_arg("market"), help="only these markets (repeatable)")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    setup_logging(st.log_level, st.log_json)
    prefixes = None
    if a.market:
        prefixes = [market_prefix(kind, m) for m in a.market for kind in ("states", "labels")]
    res = sync(as_store(a.store), a.cache_dir, prefixes, progress=not a.no_progress)
    print(
        json.dumps(
            {
                "listed": res.listed,
                "downloaded": res.downloaded,
                "skipped": res.skipped,
                "bytes": res.bytes,
                "failed": res.failed,
            }
        )
    )
    return 1 if res.failed else 0


@dataclass(slots=True)
class ReplayResult:
    objects: int = 0
    entries: int = 0
    added: int = 0
    duplicates: int = 0
    errors: int = 0
    problems: list[str] = field(default_factory=list)


def replay(
    r: redis.Redis,
    source: ObjectStore | str,
    market: str,
    start_ms: int | None,
    end_ms: int | None,
    *,
    kind: str = "states",
    target_stream: str | None = None,
    batch: int = 2000,
) -> ReplayResult:
    """XADD archived entries in ``[start_ms, end_ms)`` with their original IDs (duplicates counted). ``kind`` trades:
    ``market`` is a trader, its records (``trades/{trader}/...``) go back to ``fusion:{trader}:trades``."""
    own = {"states": keys.states_stream, "labels": keys.labels_stream, "trades": keys.trades_stream}[kind]
    stream = target_stream or own(market)
    res = ReplayResult()
    for key, obj in iter_objects(source, kind, market, start_ms, end_ms):
        if isinstance(obj, ArchiveError):
            res.problems.append(f"{key}: {obj}")
            continue
        res.objects += 1
        pairs = [
            (stream, e, p)
            for e, p in zip(obj.ids, obj.payloads, strict=True)
            if (start_ms is None or int(e.partition("-")[0]) >= start_ms)
            and (end_ms is None or int(e.partition("-")[0]) < end_ms)
        ]
        for i in range(0, len(pairs), batch):
            out = publish_states(r, pairs[i : i + batch])
            res.added += out.added
            res.duplicates += out.duplicates
            res.errors += out.errors
        res.entries += len(pairs)
    return res


def replay_main(argv: list[str] | None = None) -> int:
    st = get_settings()
    ap = argparse.ArgumentParser(prog="fusion replay", description="push archived windows back into a stream")
    who = ap.add_mutually_exclusive_group(required=True)
    who.add_argument("--market", type=name_arg("market"), help="a market's states or labels")
    who.add_argument("--trader", type=name_arg("trader"), help="a trader's records (kind trades)")
    ap.add_argument("--from", dest="start", help="ISO time or epoch ms (inclusive)")
    ap.add_argument("--to", dest="end", help="ISO time or epoch ms (exclusive)")
    ap.add_argument("--kind", choices=("states", "labels", "trades"), help="default: states, trades with --trader")
    ap.add_argument("--source", default=st.store_url, help="store URL or local cache dir (default FUSION_STORE_URL)")
    ap.add_argument("--target-stream", help="default: the market's own states/labels stream")
    ap.add_argument("--redis-url", default=st.redis_url)
    a = ap.parse_args(argv)
    kind = a.kind or ("trades" if a.trader else "states")
    if (kind == "trades") != bool(a.trader):
        ap.error("--kind trades goes with --trader, states and labels with --market")
    setup_logging(st.log_level, st.log_json)
    res = replay(
        connect(a.redis_url),
        as_store(a.source),
        a.trader or a.market,
        parse_time(a.start) if a.start else None,
        parse_time(a.end) if a.end else None,
        kind=kind,
        target_stream=a.target_stream,
    )
    print(
        json.dumps(
            {
                "objects": res.objects,
                "entries": res.entries,
                "added": res.added,
                "duplicates": res.duplicates,
                "errors": res.errors,
                "problems": res.problems,
            }
        )
    )
    return 1 if res.errors else 0
