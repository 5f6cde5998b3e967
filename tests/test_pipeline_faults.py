"""Fault injection across real processes: observers publish from the simulator while the archiver and the
labeler (and, for the whole loop, every other service) are SIGKILLed at random moments and restarted,
optionally with Redis itself killed and restarted on its AOF. At the end every published state is in the
archive exactly once and every state that has a future has exactly one label, archived exactly once."""

from __future__ import annotations

import dataclasses
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from archiver_svc.reader import load_market
from common import keys
from common.redisproc import RedisServer
from common.schema import decode_label, decode_state, encode_state, tick_of_entry_id
from common.streams import trim_by_age
from observer_svc.sim.synthetic import SyntheticDriver
from observer_svc.sim.thread import SimServerThread
from tests.wait import wait_until

ROOT = Path(__file__).resolve().parents[1]
MARKETS = ["BTC-15M", "ETH-15M"]


class Procs:
    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs, self.p = env, logs, {}
        self.cmds: dict[str, list[str]] = {}

    def start(self, name: str, *argv: str) -> None:
        self.cmds[name] = list(argv)
        with (self.logs / f"{name}.log").open("ab") as log:
            self.p[name] = subprocess.Popen(
                [sys.executable, "-m", "fusion.cli", *argv],
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def kill_restart(self, name: str) -> None:
        self.p[name].send_signal(signal.SIGKILL)
        self.p[name].wait(10)
        self.start(name, *self.cmds[name])

    def stop(self, name: str, timeout: float = 60) -> None:
        p = self.p.pop(name)
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def stop_all(self) -> None:
        for name in list(self.p):
            self.stop(name, 20)


def _wait(pred: Any, timeout: float, what: str) -> None:
    wait_until(pred, timeout, what, step=0.5)


def run_with_faults(tmp_path: Path, victims: list[str], seconds: float, kill_redis: bool, seed: int) -> None:
    srv = RedisServer(appendonly=True, workdir=str(tmp_path / "redis")).start()
    store_dir = tmp_path / "store"
    logs = tmp_path / "logs"
    logs.mkdir()
    rng = random.Random(seed)
    sim = SimServerThread(SyntheticDriver(MARKETS, seed=seed, speed=20.0)).start()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "FUSION_REDIS_URL": srv.url,
        "FUSION_STORE_URL": f"file://{store_dir}",
        "FUSION_FEED": "sim",
        "FUSION_SIM_URL": sim.url,
        "FUSION_MARKETS": ",".join(MARKETS),
        "FUSION_ARCHIVE_WINDOW_S": "60",
        "FUSION_ARCHIVE_GRACE_S": "5",
        "FUSION_ARCHIVE_CLAIM_IDLE_MS": "3000",
        "FUSION_CACHE_DIR": str(tmp_path / "cache"),
        "FUSION_TRADER_MARKETS": ",".join(MARKETS),
        "FUSION_POLICY": "chaos",
        "FUSION_LOG_LEVEL": "WARNING",
    }
    procs = Procs(env, logs)
    r = redis.Redis.from_url(srv.url)
    try:
        procs.start("observer", "observe")
        procs.start("archiver", "archive", "--consumer", "arch-1")
        procs.start("labeler", "label", "--consumer", "lab-1")
        _wait(lambda: r.xlen(keys.states_stream(MARKETS[0])) > 50, 30, "first states")
        end = time.time() + seconds
        kills = 0
        redis_restarted = False
        while time.time() < end:
            time.sleep(rng.uniform(0.5, 2.5))
            victim = rng.choice(victims)
            procs.kill_restart(victim)
            kills += 1
            if kill_redis and not redis_restarted and time.time() > end - seconds / 2:
                srv.kill()  # SIGKILL: only what the AOF (fsync always) holds survives
                time.sleep(0.5)
                srv.start()
                redis_restarted = True
        assert kills >= 3
        # producers stop first; consumers drain
        procs.stop("observer")
        if "observer-2" in procs.p:
            procs.stop("observer-2")
        n_states = {m: r.xlen(keys.states_stream(m)) for m in MARKETS}
        _wait(lambda: all(_pending(r, m, keys.LABELER_GROUP) == 0 for m in MARKETS) or False, 60, "labeler drain")
        procs.stop("labeler")
        procs.stop("archiver")
        final = subprocess.run(
            [sys.executable, "-m", "fusion.cli", "archive", "--once", "--final", "--consumer", "arch-1"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            timeout=120,
        )
        assert final.returncode == 0, final.stderr[-2000:]
        procs.stop_all()
        for m in MARKETS:
            ids = [tick_of_entry_id(e) for e, _ in r.xrange(keys.states_stream(m))]
            assert len(ids) == n_states[m] > 100
            assert np.all(np.diff(ids) == 500), "the observer's stream has a gap"
            md = load_market(store_dir, m)
            assert not md.problems, md.problems
            assert md.states.tick_ms.tolist() == ids  # every state archived exactly once, in order
            label_entries = r.xrange(keys.labels_stream(m))
            lids = [tick_of_entry_id(e) for e, _ in label_entries]
            assert lids == ids[: len(lids)]  # one label per state, in order, no duplicates, no skips
            # only the tail whose future (longest horizon 300 s) is not in the stream is unlabelled
            assert len(ids) - len(lids) <= 300 / 0.5 + 20, (len(ids), len(lids))
            for _, f in label_entries[:: max(1, len(label_entries) // 50)]:
                decode_label(f[b"d"])
            assert md.labels is not None and md.labels.tick_ms.tolist() == lids  # labels archived exactly once
            assert r.xpending(keys.states_stream(m), keys.ARCHIVER_GROUP)["pending"] == 0
    finally:
        procs.stop_all()
        sim.stop()
        r.close()
        srv.close()


def _pending(r: redis.Redis, market: str, group: str) -> int:
    try:
        info = {g["name"].decode(): g for g in r.xinfo_groups(keys.states_stream(market))}
    except redis.ResponseError:
        return 1
    g = info.get(group)
    if g is None:
        return 1
    # caught up: nothing unread except the tail that waits for its future, and nothing else pending
    return int(g.get("lag") or 0) > 0


@pytest.mark.slow
def test_archiver_and_labeler_killed_repeatedly(tmp_path: Path) -> None:
    run_with_faults(tmp_path, ["archiver", "labeler"], seconds=25, kill_redis=False, seed=11)


@pytest.mark.slow
def test_archiver_and_labeler_killed_with_redis_restart(tmp_path: Path) -> None:
    run_with_faults(tmp_path, ["archiver", "labeler"], seconds=25, kill_redis=True, seed=12)


# --------------------------------------------------------------------------- issue 10: trimming and forged IDs
OUTAGE_S = 66.0


def _start_pipeline(tmp_path: Path, extra: dict[str, str], seed: int) -> tuple[RedisServer, Procs, redis.Redis, Any]:
    srv = RedisServer(appendonly=True, workdir=str(tmp_path / "redis")).start()
    (tmp_path / "logs").mkdir()
    sim = SimServerThread(SyntheticDriver(MARKETS, seed=seed, speed=20.0)).start()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "FUSION_REDIS_URL": srv.url,
        "FUSION_STORE_URL": f"file://{tmp_path / 'store'}",
        "FUSION_FEED": "sim",
        "FUSION_SIM_URL": sim.url,
        "FUSION_MARKETS": ",".join(MARKETS),
        "FUSION_ARCHIVE_WINDOW_S": "60",
        "FUSION_ARCHIVE_GRACE_S": "5",
        "FUSION_ARCHIVE_CLAIM_IDLE_MS": "3000",
        "FUSION_CACHE_DIR": str(tmp_path / "cache"),
        "FUSION_LOG_LEVEL": "WARNING",
        **extra,
    }
    procs = Procs(env, tmp_path / "logs")
    r = redis.Redis.from_url(srv.url)
    procs.start("observer", "observe")
    procs.start("archiver", "archive", "--consumer", "arch-1")
    procs.start("labeler", "label", "--consumer", "lab-1")
    _wait(lambda: all(r.xlen(keys.states_stream(m)) > 20 for m in MARKETS), 30, "first states")
    return srv, procs, r, sim


def _drain_and_archive(procs: Procs, r: redis.Redis) -> None:
    """Producers stop first; the labeler drains; a final archiver run writes the open windows."""
    procs.stop("observer")
    _wait(lambda: all(_pending(r, m, keys.LABELER_GROUP) == 0 for m in MARKETS), 60, "labeler drain")
    procs.stop("labeler")
    _wait(lambda: all(_pending(r, m, keys.ARCHIVER_GROUP) == 0 for m in MARKETS), 60, "archiver drain")
    procs.stop("archiver")
    final = subprocess.run(
        [sys.executable, "-m", "fusion.cli", "archive", "--once", "--final", "--consumer", "arch-1"],
        env=procs.env,
        cwd=ROOT,
        capture_output=True,
        timeout=120,
    )
    assert final.returncode == 0, final.stderr[-2000:]


def _check_archive(tmp_path: Path, r: redis.Redis, first: dict[str, int], tail_s: int) -> dict[str, list[int]]:
    """Every tick published from the first one to the stream's top is archived exactly once, and every label."""
    out = {}
    for m in MARKETS:
        top = tick_of_entry_id(r.xrevrange(keys.states_stream(m), count=1)[0][0])
        md = load_market(tmp_path / "store", m)
        assert not md.problems, md.problems
        archived = md.states.tick_ms.tolist()
        assert archived == list(range(first[m], top + 1, 500)), (m, len(archived), (top - first[m]) // 500 + 1)
        assert md.labels is not None
        lids = md.labels.tick_ms.tolist()
        assert lids == archived[: len(lids)] and len(archived) - len(lids) <= tail_s / 0.5 + 20  # labels too
        assert r.xpending(keys.states_stream(m), keys.ARCHIVER_GROUP)["pending"] == 0
        out[m] = archived
    return out


@pytest.mark.slow
def test_archiver_outage_longer_than_the_trim_age_loses_nothing(tmp_path: Path) -> None:
    """Streams trimmed to 120 s (event time, 6 s of wall time at 20x) every second; the archiver is down for
    ~22 min of event time (over a minute of wall time, so that the former once-a-minute trim ran during it).
    Nothing is lost: trimming waits for it, with a visible alarm, then catches up."""
    extra = {
        "FUSION_STREAM_MAX_AGE_S": "120",
        "FUSION_STREAM_TRIM_EVERY_S": "1",
        "FUSION_LABEL_HORIZONS_S": "10,30",
        "FUSION_LABEL_SETTLE_WAIT_S": "0",
    }
    srv, procs, r, sim = _start_pipeline(tmp_path, extra, seed=21)
    try:
        first = {m: tick_of_entry_id(r.xrange(keys.states_stream(m), count=1)[0][0]) for m in MARKETS}
        time.sleep(3)
        procs.p["archiver"].send_signal(signal.SIGKILL)
        procs.p["archiver"].wait(10)
        time.sleep(OUTAGE_S)  # > 20 min of event time without the archiver
        s0 = keys.states_stream(MARKETS[0])
        top = tick_of_entry_id(r.xrevrange(s0, count=1)[0][0])
        (status,) = trim_by_age(r, [s0], top, 120, dry=True)
        assert status.held_by == keys.ARCHIVER_GROUP and status.held_back_s > 100, status  # the alarm
        info = subprocess.run(
            [sys.executable, "-m", "fusion.cli", "streams", "info", MARKETS[0]],
            env=procs.env, cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert "HELD BACK by group archiver" in info.stdout, info.stdout
        procs.start("archiver", "archive", "--consumer", "arch-1")
        time.sleep(8)
        _drain_and_archive(procs, r)
        archived = _check_archive(tmp_path, r, first, tail_s=30)
        for m in MARKETS:  # trimming resumed once the archiver caught up: the stream is not kept whole
            assert r.xlen(keys.states_stream(m)) < len(archived[m]) - 200, (r.xlen(keys.states_stream(m)), m)
        obs_log = (tmp_path / "logs" / "observer.log").read_text()
        assert "trimming held back by a consumer group" in obs_log and "group=archiver" in obs_log
        assert "LOST" not in obs_log
    finally:
        procs.stop_all()
        sim.stop()
        r.close()
        srv.close()


@pytest.mark.slow
def test_future_id_entry_mid_run_is_parked_and_the_market_flows(tmp_path: Path) -> None:
    """A self-consistent state XADDed 60 s (one market) and 10 years (the other) ahead of the tick grid in the
    middle of a run: parked once, removed; nothing published after it is lost, archiver and labeler keep up."""
    srv, procs, r, sim = _start_pipeline(tmp_path, {}, seed=22)
    try:
        first = {m: tick_of_entry_id(r.xrange(keys.states_stream(m), count=1)[0][0]) for m in MARKETS}
        time.sleep(4)
        forged: dict[str, str] = {}
        ahead = dict(zip(MARKETS, (60_000, 10 * 365 * 86_400_000), strict=True))
        for m, ahead_ms in ahead.items():
            eid, fields = r.xrevrange(keys.states_stream(m), count=1)[0]
            state = decode_state(fields[keys.PAYLOAD_FIELD])
            tick = tick_of_entry_id(eid) + ahead_ms
            forged[m] = f"{tick}-0"
            payload = encode_state(dataclasses.replace(state, tick_ms=tick))
            r.xadd(keys.states_stream(m), {keys.PAYLOAD_FIELD: payload}, id=forged[m])
        time.sleep(8)  # 160 s of event time: past the 60 s forged ID
        for m in MARKETS:  # flowing again, on the grid, past the forged entry
            assert tick_of_entry_id(r.xrevrange(keys.states_stream(m), count=1)[0][0]) < 10**13
        _drain_and_archive(procs, r)
        archived = _check_archive(tmp_path, r, first, tail_s=300)
        for m in MARKETS:
            ids = [tick_of_entry_id(e) for e, _ in r.xrange(keys.states_stream(m))]
            assert ids == archived[m]  # the stream holds the grid only, all of it archived
            if ahead[m] == 60_000:  # the grid went past the forged ID: the real entry of that tick is archived
                assert ids[-1] > tick_of_entry_id(forged[m])
            parked = [f for _, f in r.xrange(keys.DEAD_LETTER_STREAM) if f[b"id"] == forged[m].encode()]
            assert len(parked) == 1 and parked[0][b"stream"] == keys.states_stream(m).encode()
            labels = r.xrange(keys.labels_stream(m))
            assert [tick_of_entry_id(e) for e, _ in labels] == ids[: len(labels)]
        obs_log = (tmp_path / "logs" / "observer.log").read_text()
        assert obs_log.count("forged entries ahead of the tick grid parked and removed") == 2
        assert "LOST" not in obs_log
    finally:
        procs.stop_all()
        sim.stop()
        r.close()
        srv.close()
