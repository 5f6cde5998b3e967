"""Fault test: SIGKILL the archiver process at random moments (and restart Redis) while a publisher writes.

At the end every state in the stream (and every state whose XADD was acknowledged) is in the
archive exactly once.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest
import redis

from archiver_svc.synth import synth_payloads
from common import keys
from common.redisproc import RedisServer
from common.store import LocalStore
from common.streams import publish_states
from tests.archiver_svc.helpers import T0, archived_ids, stream_ids

M = "BTC-15M"
N = 10_000
S = keys.states_stream(M)


class Publisher(threading.Thread):
    """XADDs 10 states every ~10 ms (5 s of stream time per second); survives Redis restarts."""

    def __init__(self, url: str, n: int) -> None:
        super().__init__(daemon=True)
        self.r = redis.Redis.from_url(url, socket_timeout=5)
        self.pairs = synth_payloads(M, T0, n)
        self.acked: set[str] = set()
        self.done = threading.Event()
        self.stop_now = threading.Event()

    def run(self) -> None:
        i = 0
        while i < len(self.pairs) and not self.stop_now.is_set():
            batch = self.pairs[i : i + 10]
            try:
                publish_states(self.r, [(S, e, b) for e, b in batch])
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                time.sleep(0.05)
                continue  # retry the batch: already-stored IDs come back as duplicates
            self.acked.update(e for e, _ in batch)
            i += 10
            time.sleep(0.01)
        self.done.set()


def spawn(url: str, store_dir: str) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ,
        FUSION_REDIS_URL=url,
        FUSION_STORE_URL=f"file://{store_dir}",
        FUSION_ARCHIVE_WINDOW_S="10",
        FUSION_ARCHIVE_GRACE_S="1",
        FUSION_ARCHIVE_CLAIM_IDLE_MS="2000",
        FUSION_ARCHIVER_ID="fault-archiver",
        FUSION_LOG_LEVEL="WARNING",
    )
    return subprocess.Popen([sys.executable, "-m", "archiver_svc"], env=env, stderr=subprocess.DEVNULL)


def finish(url: str, store_dir: str) -> None:
    env = dict(
        os.environ,
        FUSION_REDIS_URL=url,
        FUSION_STORE_URL=f"file://{store_dir}",
        FUSION_ARCHIVE_WINDOW_S="10",
        FUSION_ARCHIVE_GRACE_S="1",
        FUSION_ARCHIVER_ID="fault-archiver",
    )
    out = subprocess.run(
        [sys.executable, "-m", "archiver_svc", "--once", "--final"], env=env, capture_output=True, timeout=120
    )
    assert out.returncode == 0, out.stderr.decode()


def run_fault(srv: RedisServer, store_dir: str, restart_redis: bool, seed: int) -> tuple[int, int, int]:
    rng = random.Random(seed)
    pub = Publisher(srv.url, N)
    pub.start()
    proc = spawn(srv.url, store_dir)
    kills = 0
    restarted = False
    try:
        while not pub.done.is_set():
            time.sleep(rng.uniform(0.7, 2.5))  # process start-up takes ~0.6 s
            if restart_redis and not restarted and kills >= 2:
                srv.restart()  # SIGKILL redis-server, start again on the AOF
                restarted = True
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            kills += 1
            proc = spawn(srv.url, store_dir)
        pub.join(30)
        time.sleep(rng.uniform(0.0, 1.0))
    finally:
        pub.stop_now.set()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    written_by_killed = len(list(LocalStore(store_dir).list("market-data/")))
    finish(srv.url, store_dir)
    return kills, len(pub.acked), written_by_killed


def check(srv: RedisServer, store_dir: str, acked: int) -> None:
    r = redis.Redis.from_url(srv.url)
    in_stream = stream_ids(r, S)
    got = archived_ids(LocalStore(store_dir), "states", M)
    assert len(in_stream) >= acked  # AOF with fsync always: nothing acknowledged is lost
    assert sorted(got) == in_stream, (len(got), len(in_stream))
    assert set(got.values()) == {1}
    assert int(r.xpending(S, keys.ARCHIVER_GROUP)["pending"]) == 0


@pytest.mark.slow
def test_sigkill_archiver_repeatedly(private_redis: RedisServer, tmp_path) -> None:
    kills, acked, written = run_fault(private_redis, str(tmp_path / "store"), restart_redis=False, seed=1)
    assert kills >= 3 and acked == N and written > 0
    check(private_redis, str(tmp_path / "store"), acked)


@pytest.mark.slow
def test_sigkill_archiver_and_restart_redis(private_redis: RedisServer, tmp_path) -> None:
    kills, acked, written = run_fault(private_redis, str(tmp_path / "store"), restart_redis=True, seed=2)
    assert kills >= 3 and acked == N and written > 0
    check(private_redis, str(tmp_path / "store"), acked)
