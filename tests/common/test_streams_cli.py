"""`fusion streams ls|info|tail` read real streams and decode msgpack for people."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import redis

from common import keys
from common.features import FEATURE_SET
from common.schema import N_RAW, RAW_INDEX, PolymarketWindow, State, encode_state, entry_id
from common.streams import ensure_group, publish_states


def _publish(r: redis.Redis, n: int) -> None:
    pm = PolymarketWindow("btc-updown-15m-1795477500", "0xabc", "1", "2", 1_795_477_500_000, 1_795_478_400_000)
    entries = []
    for i in range(n):
        raw = np.full(N_RAW, np.nan)
        raw[RAW_INDEX["up_ask_px_0"]] = 0.52
        raw[RAW_INDEX["bn_last_px"]] = 60000.0 + i
        t = 1_795_477_600_000 + 500 * i
        st = State("BTC-15M", t, raw, np.zeros(15, np.float32), FEATURE_SET, 2, pm)
        entries.append((keys.states_stream("BTC-15M"), entry_id(t), encode_state(st)))
    assert publish_states(r, entries).added == n
    # a replica publishing the same ticks again is refused, not an error
    again = publish_states(r, entries[-2:])
    assert again.added == 0 and again.duplicates == 2 and again.errors == 0


def _fusion(redis_url: str, *args: str) -> str:
    env = {**os.environ, "FUSION_REDIS_URL": redis_url}
    out = subprocess.run(
        [sys.executable, "-m", "fusion.cli", "streams", *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_tail_ls_info(r: redis.Redis, redis_url: str) -> None:
    _publish(r, 5)
    ensure_group(r, keys.states_stream("BTC-15M"), keys.ARCHIVER_GROUP)
    lines = _fusion(redis_url, "tail", "BTC-15M", "-n", "3").strip().splitlines()
    recs = [json.loads(ln) for ln in lines]
    assert [x["id"] for x in recs] == ["1795477601000-0", "1795477601500-0", "1795477602000-0"]
    assert recs[-1]["raw"]["bn_last_px"] == 60004.0 and recs[-1]["flags"] == ["stale_poly"]
    assert recs[0]["pm"] == "btc-updown-15m-1795477500" and "returns_1m" in recs[0]["features"]
    assert "fusion:{BTC-15M}:states" in _fusion(redis_url, "ls")
    info = _fusion(redis_url, "info", "BTC-15M")
    assert "length=5" in info and "group archiver" in info
    # redis-cli shows the same tick-time IDs
    cli = subprocess.run(
        ["redis-cli", "-u", redis_url, "XRANGE", keys.states_stream("BTC-15M"), "-", "+", "COUNT", "3"],
        capture_output=True,
    )
    assert cli.returncode == 0 and b"1795477600000-0" in cli.stdout
