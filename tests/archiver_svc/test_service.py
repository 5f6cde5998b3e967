"""The archiver on a real Redis: every entry ends in the archive exactly once."""

from __future__ import annotations

import threading

import pytest
import redis

from archiver_svc.service import Archiver
from archiver_svc.windows import decode_object, encode_object, object_key
from common import keys
from common.store import LocalStore
from tests.archiver_svc.helpers import T0, archived_ids, label_payload, publish, stream_ids

M = "BTC-15M"
S = keys.states_stream(M)


def make(r: redis.Redis, store, name: str = "a1", **kw) -> Archiver:
    kw.setdefault("window_s", 10)
    kw.setdefault("grace_s", 1)
    kw.setdefault("block_ms", 20)
    kw.setdefault("count", 50)
    return Archiver(r, store, consumer=name, **kw)


def pending(r: redis.Redis, stream: str = S) -> int:
    return int(r.xpending(stream, keys.ARCHIVER_GROUP)["pending"])


def assert_exactly_once(r: redis.Redis, store, stream: str = S, kind: str = "states") -> None:
    got = archived_ids(store, kind, M)
    want = stream_ids(r, stream)
    assert sorted(got) == sorted(want)
    assert set(got.values()) == {1}


def test_closed_windows_only_then_final(r: redis.Redis, tmp_path) -> None:
    store = LocalStore(tmp_path / "s")
    ids = publish(r, M, T0, 65)  # 32.5 s: windows 0,10,20 closed (grace 1 s), window 30 open
    a = make(r, store)
    a.run(once=True)
    written = sorted(o.key for o in store.list("market-data/"))
    assert written == [object_key("states", M, T0 + k * 10_000) for k in range(3)]
    assert pending(r) == 5  # the open window's entries stay pending
    obj = decode_object(store.get(written[0]), written[0])
    assert obj.ids == ids[:20] and obj.window_end_ms == T0 + 10_000
    make(r, store).run(once=True, final=True)
    assert pending(r) == 0
    assert_exactly_once(r, store)


def test_rerun_rewrites_identical_bytes(r: redis.Redis, tmp_path) -> None:
    store = LocalStore(tmp_path / "s")
    publish(r, M, T0, 45)
    make(r, store).run(once=True, final=True)
    before = {o.key: store.get(o.key) for o in store.list()}
    # replay the whole stream through a fresh group: same keys, same bytes, nothing merged
    r.xgroup_destroy(S, keys.ARCHIVER_GROUP)
    a = make(r, store)
    a.run(once=True, final=True)
    assert a.stats.objects == {"unchanged": len(before)}
    assert {o.key: store.get(o.key) for o in store.list()} == before


def test_restart_mid_window_reads_own_pending(r: redis.Redis, tmp_path) -> None:
    store = LocalStore(tmp_path / "s")
    publish(r, M, T0, 14)  # part of window 0
    a = make(r, store)
    a.step(block=False)
    assert pending(r) == 14 and not list(store.list())
    a._pool.shutdown()  # "crash": buffers are lost, entries stay pending under consumer a1
    publish(r, M, T0 + 7_000, 40)
    b = make(r, store, "a1")  # the restarted process: same consumer name
    b.run(once=True, final=True)
    assert pending(r) == 0
    assert_exactly_once(r, store)


def test_crash_after_write_before_ack(r: redis.Redis, tmp_path) -> None:
    store = LocalStore(tmp_path / "s")
    publish(r, M, T0, 30)
    a = make(r, store)
    a.step(block=False)
    a._submit_closable(force=True)
    a._collect(wait=True)  # stored, but never acked
    assert pending(r) == 30 and len(list(store.list())) == 2
    b = make(r, store, "a1")
    b.run(once=True, final=True)
    assert b.stats.objects == {"unchanged": 2}
    assert pending(r) == 0
    assert_exactly_once(r, store)


def test_two_archivers_share_windows(r: redis.Redis, tmp_path) -> None:
    store = LocalStore(tmp_path / "s")
    a, b = make(r, store, "a", count=7), make(r, store, "b", count=7)
    for i in range(12):
        publish(r, M, T0 + i * 5_000, 10)
        a.step(block=False)
        b.step(block=False)
    a.close(final=True)
    b.close(final=True)
    assert pending(r) == 0
    assert a.stats.archived + b.stats.archived >= 120
    assert (a.stats.objects.get("merged", 0) + b.stats.objects.get("merged", 0)) > 0
    assert_exactly_once(r, store)


def test_concurrent_archivers_threads(r: redis.Redis, redis_url: str, tmp_path) -> None:
    store = LocalStore(tmp_path / "s")
    arch = [make(redis.Redis.from_url(redis_url), store, f"c{i}", count=13) for i in range(3)]
    threads = [threading.Thread(target=x.run) for x in arch]
    for t in threads:
        t.start()
    for i in range(30):
        publish(r, M, T0 + i * 2_000, 4)
    for x in arch:
        x.stop()
    for t in threads:
        t.join(30)
    import time

    time.sleep(0.15)  # their open windows stay pending; a later archiver claims them once idle
    make(r, store, "final", claim_idle_ms=100).run(once=True, final=True)
    assert pending(r) == 0
    assert_exactly_once(r, store)


def test_autoclaim_takes_over_dead_consumer(r: redis.Redis, tmp_path) -> None:
    store = LocalStore(tmp_path / "s")
    publish(r, M, T0, 25)
    r.xgroup_create(S, keys.ARCHIVER_GROUP, id="0")
    r.xreadgroup(keys.ARCHIVER_GROUP, "dead", {S: ">"}, count=100)  # delivered, then the consumer dies
    b = make(r, store, "b", claim_idle_ms=50)
    b.step(block=False)
    assert b.stats.claimed == 0  # not idle long enough yet
    import time

    time.sleep(0.1)
    b._next_claim = 0
    b.run(once=True, final=True)
    assert b.stats.claimed == 25
    assert pending(r) == 0
    assert_exactly_once(r, store)


def test_heartbeat_keeps_buffered_entries(r: redis.Redis, tmp_path) -> None:
    import time

    store = LocalStore(tmp_path / "s")
    publish(r, M, T0, 6)
    a = make(r, store, "a", claim_idle_ms=300)
    b = make(r, store, "b", claim_idle_ms=300)
    a.step(block=False)
    for _ in range(8):  # a keeps its open window for > claim_idle while b tries to claim
        time.sleep(0.06)
        a.step(block=False)
        b.step(block=False)
    assert b.stats.claimed == 0
    assert r.xpending_range(S, keys.ARCHIVER_GROUP, "-", "+", 10)[0]["consumer"] == b"a"


def test_dead_letter(r: redis.Redis, tmp_path) -> None:
    store = LocalStore(tmp_path / "s")
    ids = publish(r, M, T0, 10)
    r.xadd(S, {keys.PAYLOAD_FIELD: b"\xc1garbage"}, id=f"{T0 + 5_000}-0")
    r.xadd(S, {b"other": b"x"}, id=f"{T0 + 5_500}-0")
    r.xadd(S, {keys.PAYLOAD_FIELD: label_payload(M, T0 + 6_000)}, id=f"{T0 + 6_000}-0")  # a label on a states stream
    publish(r, M, T0 + 6_500, 30)
    a = make(r, store)
    a.run(once=True, final=True)
    dl = r.xrange(keys.DEAD_LETTER_STREAM)
    assert [f[b"id"] for _, f in dl] == [f"{T0 + t}-0".encode() for t in (5_000, 5_500, 6_000)]
    assert all(f[b"stream"] == S.encode() and f[b"reason"] for _, f in dl)
    assert dl[0][1][b"payload"] == b"\xc1garbage"
    assert a.stats.dead == 3 and pending(r) == 0
    got = archived_ids(store, "states", M)
    assert len(got) == len(stream_ids(r, S)) - 3 and ids[0] in got


def test_labels_archived_under_labels(r: redis.Redis, tmp_path) -> None:
    store = LocalStore(tmp_path / "s")
    ls = keys.labels_stream(M)
    for i in range(30):
        r.xadd(ls, {keys.PAYLOAD_FIELD: label_payload(M, T0 + 500 * i)}, id=f"{T0 + 500 * i}-0")
    make(r, store).run(once=True, final=True)
    assert [o.key for o in store.list("labels/")] == [object_key("labels", M, T0), object_key("labels", M, T0 + 10_000)]
    assert_exactly_once(r, store, ls, "labels")


def test_merge_into_partial_existing_object(r: redis.Redis, tmp_path) -> None:
    store = LocalStore(tmp_path / "s")
    publish(r, M, T0, 20)
    first = {e.decode(): f[keys.PAYLOAD_FIELD] for e, f in r.xrange(S, count=8)}
    key = object_key("states", M, T0)
    store.put(key, encode_object("states", M, T0, 10_000, first))  # a previous run wrote fewer entries
    a = make(r, store)
    a.run(once=True, final=True)
    assert a.stats.objects == {"merged": 1}
    assert decode_object(store.get(key)).ids == stream_ids(r, S)


def test_corrupt_existing_object_is_quarantined(r: redis.Redis, tmp_path) -> None:
    store = LocalStore(tmp_path / "s")
    publish(r, M, T0, 20)
    key = object_key("states", M, T0)
    store.put(key, b"\x1f\x8b\x08garbage")
    make(r, store).run(once=True, final=True)
    assert decode_object(store.get(key)).ids == stream_ids(r, S)
    q = [o.key for o in store.list("quarantine/")]  # the bytes and their JSON reason
    assert len(q) == 2 and q[0].startswith(f"quarantine/{key}.") and q[1] == q[0] + ".json"


def test_new_streams_discovered(r: redis.Redis, tmp_path) -> None:
    store = LocalStore(tmp_path / "s")
    a = make(r, store, scan_every_s=0.0)
    a.step(block=False)
    publish(r, "ETH-15M", T0, 25)
    a.step(block=False)
    assert keys.states_stream("ETH-15M") in a.streams
    a.run(once=True, final=True)
    assert len(archived_ids(store, "states", "ETH-15M")) == 25


def test_s3_store_through_moto(r: redis.Redis, s3_store) -> None:
    publish(r, M, T0, 45)
    make(r, s3_store).run(once=True)
    make(r, s3_store).run(once=True, final=True)  # second process: finishes the open window
    assert_exactly_once(r, s3_store)
    from archiver_svc.reader import load_market

    md = load_market(s3_store, M)
    assert md.states.tick_ms.tolist() == [int(e.split("-")[0]) for e in stream_ids(r, S)]
    assert md.problems == [] and md.labels is None


@pytest.mark.parametrize("final", [False, True])
def test_cli_subprocess(redis_url: str, r: redis.Redis, tmp_path, final: bool) -> None:
    import os
    import subprocess
    import sys

    publish(r, M, T0, 45)
    env = dict(
        os.environ,
        FUSION_REDIS_URL=redis_url,
        FUSION_STORE_URL=f"file://{tmp_path / 's'}",
        FUSION_ARCHIVE_WINDOW_S="10",
        FUSION_ARCHIVE_GRACE_S="1",
        FUSION_ARCHIVER_ID="cli",
    )
    args = [sys.executable, "-m", "archiver_svc", "--once"] + (["--final"] if final else [])
    out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    store = LocalStore(tmp_path / "s")
    assert len(list(store.list("market-data/"))) == (3 if final else 2)  # 22.5 s of ticks: window 20 s is open
    assert pending(r) == (0 if final else 5)


def test_sigterm_is_graceful(redis_url: str, r: redis.Redis, tmp_path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    publish(r, M, T0, 45)
    env = dict(
        os.environ,
        FUSION_REDIS_URL=redis_url,
        FUSION_STORE_URL=f"file://{tmp_path / 's'}",
        FUSION_ARCHIVE_WINDOW_S="10",
        FUSION_ARCHIVE_GRACE_S="1",
        FUSION_ARCHIVER_ID="term",
    )
    proc = subprocess.Popen([sys.executable, "-m", "archiver_svc"], env=env, stderr=subprocess.PIPE)
    store = LocalStore(tmp_path / "s")
    deadline = time.monotonic() + 30
    while len(list(store.list("market-data/"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0, proc.stderr.read().decode()
    assert "archiver stopped" in proc.stderr.read().decode()
    assert pending(r) == 5  # closed windows written and acked; the open one left pending, not written
    assert len(list(store.list("market-data/"))) == 2
