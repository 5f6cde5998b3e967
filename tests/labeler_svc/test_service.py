from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import redis

from common import keys
from common.redisproc import RedisServer
from common.schema import State, decode_label, encode_state, entry_id
from common.settings import Settings
from common.streams import publish_states
from labeler_svc.__main__ import main as label_main
from labeler_svc.batch import final_mask, label_archive
from labeler_svc.service import LabelerService
from labeler_svc.wire import encode_label_rows
from tests.labeler_svc.synth import MARKET, T0, TICK, columns, make_states

ROOT = Path(__file__).resolve().parents[2]
STATES = keys.states_stream(MARKET)
LABELS = keys.labels_stream(MARKET)


def settings(url: str) -> Settings:
    return Settings(redis_url=url, label_settle_wait_s=60, label_horizons_s=[30, 60, 300])


def publish(r: redis.Redis, states: list[State]) -> None:
    res = publish_states(r, [(STATES, entry_id(s.tick_ms), encode_state(s)) for s in states])
    assert res.errors == 0


def read_labels(r: redis.Redis) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    for eid, f in r.xrange(LABELS):
        t = int(eid.split(b"-")[0])
        assert t not in out
        out[t] = f[keys.PAYLOAD_FIELD]
    return out


def check_against_batch(r: redis.Redis, states: list[State], st: Settings) -> dict[int, bytes]:
    """Every final state has exactly one label (same ID), equal to the batch label; nothing else."""
    cols = columns(states)
    batch = label_archive(cols, st)
    final = final_mask(cols, st)
    n_final = int(np.argmin(final)) if not final.all() else len(final)
    got = read_labels(r)
    assert sorted(got) == [int(t) for t in cols.tick_ms[:n_final]]
    expected = encode_label_rows(MARKET, batch)
    for i in range(n_final):
        lb = decode_label(got[int(cols.tick_ms[i])])
        assert lb.rewards.tobytes() == batch.rewards[i].tobytes()
        assert lb.valid.tobytes() == batch.valid[i].tobytes()
        assert lb.best.tobytes() == batch.best[i].tobytes()
        assert lb.exit_kind.tobytes() == batch.exit_kind[i].tobytes()
        assert got[int(cols.tick_ms[i])] == expected[i]
    pending = r.xpending(STATES, keys.LABELER_GROUP)["pending"]
    assert pending == len(states) - n_final  # the unlabelled ones wait, the others are acked
    return got


def test_streaming_equals_batch(r: redis.Redis, redis_url: str) -> None:
    rng = np.random.default_rng(7)
    drop = tuple(int(x) for x in rng.choice(6000, 150, replace=False))
    stale = tuple(int(x) for x in rng.choice(6000, 40, replace=False))
    states = make_states(6000, drop=drop, stale=stale, settle_delay_ms=25_000)
    st = settings(redis_url)
    svc = LabelerService(st, batch=700)
    chunks = np.array_split(np.arange(len(states)), 5)
    for c in chunks:
        publish(r, [states[i] for i in c])
        svc.run(once=True)
    got = check_against_batch(r, states, st)
    labels = [decode_label(b) for b in got.values()]
    kinds = np.concatenate([lb.exit_kind for lb in labels])
    assert {0, 1, 255} <= set(kinds.tolist())  # bid exits, settlements and invalid ones all present
    assert svc.totals.duplicates == 0 and svc.totals.dead == 0
    svc.close()


def test_dead_letter_and_duplicates(r: redis.Redis, redis_url: str) -> None:
    states = make_states(1500)
    st = settings(redis_url)
    publish(r, states[:101])
    t_bad = T0 + 100 * TICK + 1  # between two ticks
    r.xadd(STATES, {keys.PAYLOAD_FIELD: b"\xc1 not msgpack"}, id=f"{t_bad}-0")
    mism = encode_state(states[101])
    r.xadd(STATES, {keys.PAYLOAD_FIELD: mism}, id=f"{t_bad + 100}-0")  # payload tick != entry ID
    publish(r, states[101:])
    # a crash after XADD and before XACK: the first 50 labels are already there
    pre = label_archive(columns(states), st)
    rows = encode_label_rows(MARKET, pre)
    for i in range(50):
        r.xadd(LABELS, {keys.PAYLOAD_FIELD: rows[i]}, id=entry_id(states[i].tick_ms))
    svc = LabelerService(st)
    svc.run(once=True)
    assert svc.totals.dead == 2 and svc.totals.duplicates == 50
    dl = r.xrange(keys.DEAD_LETTER_STREAM)
    assert [f[b"id"] for _, f in dl] == [f"{t_bad}-0".encode(), f"{t_bad + 100}-0".encode()]
    assert b"not msgpack" in dl[0][1][b"reason"] and dl[0][1][b"stream"] == STATES.encode()
    assert b"!= tick" in dl[1][1][b"reason"] and dl[1][1][b"payload"] == mism
    check_against_batch(r, states, st)
    # running again changes nothing
    svc2 = LabelerService(st)
    svc2.run(once=True)
    assert svc2.totals.labelled == 0 and r.xlen(LABELS) == len(read_labels(r))
    svc.close()
    svc2.close()


def test_write_failure_acks_nothing(r: redis.Redis, redis_url: str) -> None:
    """A label XADD that fails (not a duplicate) leaves its states pending; they are labelled later."""
    states = make_states(1200)
    st = settings(redis_url)
    publish(r, states)
    r.set(LABELS, b"not a stream")
    svc = LabelerService(st)
    assert svc.run(once=True) == 1
    assert r.xpending(STATES, keys.LABELER_GROUP)["pending"] == len(states)
    r.delete(LABELS)
    assert svc.run(once=True) == 0
    check_against_batch(r, states, st)
    svc.close()


def _spawn(url: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "FUSION_REDIS_URL": url, "FUSION_LABEL_SETTLE_WAIT_S": "60"}
    return subprocess.Popen(
        [sys.executable, "-m", "labeler_svc", "--batch", "2000", "--block-ms", "100"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _wait_until_reading(r: redis.Redis, since: float, timeout: float = 30.0) -> None:
    """Until the labeler's consumer has talked to the states stream after ``since`` (monotonic)."""
    while time.monotonic() - since < timeout:
        try:
            consumers = r.xinfo_consumers(STATES, keys.LABELER_GROUP)
        except redis.ResponseError as e:  # NOGROUP: a labeler killed during start-up never created it
            if "NOGROUP" not in str(e):
                raise
            consumers = []
        for c in consumers:
            if c["idle"] < (time.monotonic() - since) * 1000 - 50:
                return
        time.sleep(0.05)
    raise AssertionError("the labeler never started reading")


def _kill_restart_run(r: redis.Redis, url: str, n_states: int, kills: int, seed: int) -> None:
    rnd = random.Random(seed)
    states = make_states(n_states, settle_delay_ms=25_000, drop=(500, 501, 502), stale=(900,))
    chunk = n_states // (kills * 4)
    pos = 0
    for _ in range(kills):
        proc = _spawn(url)
        deadline = time.monotonic() + rnd.uniform(1.2, 2.5)
        while time.monotonic() < deadline:
            if pos < len(states):
                publish(r, states[pos : pos + chunk])
                pos += chunk
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL
    publish(r, states[pos:])
    # graceful stop works too (once the process reads: a SIGTERM during start-up imports is not a test of it)
    proc = _spawn(url)
    _wait_until_reading(r, time.monotonic())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    env_url = os.environ.get("FUSION_REDIS_URL")
    os.environ["FUSION_REDIS_URL"] = url
    os.environ["FUSION_LABEL_SETTLE_WAIT_S"] = "60"
    try:
        assert label_main(["--once"]) == 0
    finally:
        os.environ.pop("FUSION_LABEL_SETTLE_WAIT_S")
        if env_url is None:
            os.environ.pop("FUSION_REDIS_URL")
        else:
            os.environ["FUSION_REDIS_URL"] = env_url
    check_against_batch(r, states, settings(url))


def test_sigkill_restart_exactly_one_label(r: redis.Redis, redis_url: str) -> None:
    _kill_restart_run(r, redis_url, 8000, kills=1, seed=3)


@pytest.mark.slow
def test_sigkill_restart_many(r: redis.Redis, redis_url: str) -> None:
    _kill_restart_run(r, redis_url, 40_000, kills=5, seed=11)


@pytest.mark.slow
def test_redis_restart_mid_run(private_redis: RedisServer) -> None:
    """Redis killed (AOF on) and restarted while the labeler runs: still exactly one label each."""
    url = private_redis.url
    rr = redis.Redis.from_url(url)
    states = make_states(12_000, settle_delay_ms=25_000)
    proc = _spawn(url)
    try:
        publish(rr, states[:5000])
        time.sleep(2.0)
        private_redis.restart()
        rr = redis.Redis.from_url(url)
        publish(rr, states[5000:])
        deadline = time.monotonic() + 30
        while rr.xlen(LABELS) < 11_000 and time.monotonic() < deadline:  # the same process goes on
            time.sleep(0.2)
        assert rr.xlen(LABELS) >= 11_000
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    LabelerService(settings(url)).run(once=True)
    check_against_batch(rr, states, settings(url))
