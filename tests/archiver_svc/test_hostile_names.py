"""Issue 10, defect 4: a stream whose market name is outside the grammar never reaches the archive.

A real archiver process on a real Redis and a local store: a states stream named
``fusion:{BTC-5M/.}:states`` (created by a plain XADD) used to make the archiver overwrite BTC-5M's
window object and move the original to ``quarantine/``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from archiver_svc.synth import synth_payloads
from archiver_svc.windows import market_prefix, object_key, parse_key
from common import keys
from common.names import InvalidName
from common.store import LocalStore
from tests.archiver_svc.helpers import T0, publish

M = "BTC-5M"
HOSTILE_STREAMS: list[str | bytes] = [
    "fusion:{BTC-5M/.}:states",
    "fusion:{BTC-5M/..}:labels",
    "fusion:{.}:states",
    "fusion:{..}:states",
    "fusion:{BTC-5M/x}:states",
    "fusion:{x\nFORGED level=CRITICAL}:states",
    "fusion:{" + "A" * 200 + "}:states",
    "fusion:{BTC-5M\u00e9}:states",
    b"fusion:{BTC-5M\xff}:states",  # not UTF-8
]


def _run_archiver(redis_url: str, store_dir: Path) -> subprocess.CompletedProcess[str]:
    env = dict(
        os.environ,
        FUSION_REDIS_URL=redis_url,
        FUSION_STORE_URL=f"file://{store_dir}",
        FUSION_ARCHIVE_WINDOW_S="10",
        FUSION_ARCHIVE_GRACE_S="1",
        FUSION_ARCHIVER_ID="names",
        FUSION_LOG_LEVEL="INFO",
    )
    return subprocess.run(
        [sys.executable, "-m", "archiver_svc", "--once", "--final"], env=env, capture_output=True, text=True, timeout=60
    )


def _objects(store: LocalStore) -> dict[str, bytes]:
    return {i.key: store.get(i.key) for i in store.list("")}


def test_hostile_stream_names_never_touch_another_markets_archive(redis_url: str, r: redis.Redis, tmp_path) -> None:
    store_dir = tmp_path / "s"
    publish(r, M, T0, 45)
    first = _run_archiver(redis_url, store_dir)
    assert first.returncode == 0, first.stderr
    store = LocalStore(store_dir)
    before = _objects(store)
    assert len([k for k in before if k.startswith(f"market-data/{M}/")]) == 3

    # other payloads under the real market's IDs, in streams whose names try to alias BTC-5M's folder
    fake = synth_payloads(M, T0, 45, seed=99)
    for s in HOSTILE_STREAMS:
        for eid, payload in fake:
            r.xadd(s, {keys.PAYLOAD_FIELD: payload}, id=eid)
    second = _run_archiver(redis_url, store_dir)
    assert second.returncode == 0, second.stderr

    after = _objects(store)
    assert after == before  # BTC-5M's objects byte-identical, nothing quarantined, nothing new anywhere
    assert not [k for k in after if k.startswith("quarantine/")]
    for s in HOSTILE_STREAMS:
        assert r.xlen(s) == 45 and not r.xinfo_groups(s), f"{s!r} got a consumer group"
    log = second.stderr
    assert log.count("stream ignored") == len(HOSTILE_STREAMS), log
    assert not any(line.startswith("FORGED") for line in log.splitlines()), log  # the newline stays quoted
    assert "\\nFORGED" in log


@pytest.mark.parametrize("market", [".", "..", "a/b", "a\nb", "{x}", "A" * 200, "BTC\u00e9", ""])
def test_archive_keys_refuse_hostile_market(market: str) -> None:
    with pytest.raises(InvalidName):
        object_key("states", market, T0)
    with pytest.raises(InvalidName):
        market_prefix("labels", market)
    assert parse_key(f"market-data/{market}/2025-11-23/{T0}.msgpack.gz") is None
    assert parse_key(object_key("states", M, T0)) == ("states", M, T0)
