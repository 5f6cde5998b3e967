"""Fault injection across real processes: observers publish from the simulator while the archiver and the
labeler (and, for the whole loop, every other service) are SIGKILLed at random moments and restarted,
optionally with Redis itself killed and restarted on its AOF. At the end every published state is in the
archive exactly once and every state that has a future has exactly one label, archived exactly once."""

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

from archiver_svc.reader import load_market
from common import keys
from common.redisproc import RedisServer
from common.schema import decode_label, tick_of_entry_id
from observer_svc.sim.synthetic import SyntheticDriver
from observer_svc.sim.thread import SimServerThread

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
                [sys.executable, "-m", "common.cli", *argv],
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


def _wait(pred, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


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
            [sys.executable, "-m", "common.cli", "archive", "--once", "--final", "--consumer", "arch-1"],
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
