"""fusion sync (S3 -> local cache, incremental, resumable) and fusion replay (archive -> stream)."""

from __future__ import annotations

import json

import redis

from archiver_svc.cli import parse_time, replay, replay_main, sync_main
from archiver_svc.reader import load_market
from archiver_svc.sync import MANIFEST, sync
from archiver_svc.synth import synth_payloads
from archiver_svc.windows import object_key
from common import keys
from common.store import LocalStore
from tests.archiver_svc.helpers import T0, stream_ids
from tests.archiver_svc.test_reader import write_archive

M = "BTC-15M"


def test_sync_incremental_and_resumable(s3_store, tmp_path) -> None:
    k = write_archive(s3_store, synth_payloads(M, T0, 60))  # 3 objects
    s3_store.put("models/x/meta.json", b"{}")  # not an archive prefix: not synced
    cache = tmp_path / "cache"
    r1 = sync(s3_store, cache, progress=False)
    assert (r1.listed, r1.downloaded, r1.skipped, r1.failed) == (3, 3, 0, [])
    assert sorted(o.key for o in LocalStore(cache).list("market-data/")) == k
    assert LocalStore(cache).get(k[1]) == s3_store.get(k[1])
    r2 = sync(s3_store, cache, progress=False)
    assert (r2.downloaded, r2.skipped) == (0, 3)
    # a changed object (a merge rewrote it) and a new one are pulled; the rest is skipped
    write_archive(s3_store, synth_payloads(M, T0 + 20_000, 30, seed=9))
    r3 = sync(s3_store, cache, progress=False)
    assert (r3.downloaded, r3.skipped) == (2, 2)
    assert LocalStore(cache).get(k[2]) == s3_store.get(k[2])
    # resumable without the manifest: files are verified by MD5 against the S3 etag
    (cache / MANIFEST).unlink()
    (cache / k[0]).write_bytes(b"partial")
    r4 = sync(s3_store, cache, progress=False)
    assert (r4.downloaded, r4.skipped) == (1, 3)
    md = load_market(cache, M)
    assert len(md.states) == 70 and md.problems == []


def test_sync_cli(s3_store, tmp_path, monkeypatch, capsys) -> None:
    write_archive(s3_store, synth_payloads(M, T0, 30))
    monkeypatch.setenv("FUSION_S3_ENDPOINT_URL", s3_store._client.meta.endpoint_url)
    from common.settings import get_settings

    get_settings.cache_clear()
    try:
        rc = sync_main(["--store", s3_store.url, "--cache-dir", str(tmp_path / "c"), "--market", M, "--no-progress"])
    finally:
        get_settings.cache_clear()
    assert rc == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["downloaded"] == 2


def test_replay_with_original_ids(r: redis.Redis, tmp_path) -> None:
    store = LocalStore(tmp_path)
    pairs = synth_payloads(M, T0, 60)
    write_archive(store, pairs)
    target = "fusion:{BTC-15M}:replayed"
    res = replay(r, store, M, T0 + 5_000, T0 + 25_000, target_stream=target)
    assert (res.added, res.duplicates, res.errors) == (40, 0, 0)
    assert stream_ids(r, target) == [e for e, _ in pairs[10:50]]
    assert r.xrange(target, count=1)[0][1][keys.PAYLOAD_FIELD] == pairs[10][1]
    again = replay(r, store, M, None, None, target_stream=target)
    assert again.duplicates == 50 and again.added == 10  # IDs above the top are added, the rest refused


def test_replay_cli_reports_bad_objects(redis_url: str, r: redis.Redis, tmp_path, capsys) -> None:
    store = LocalStore(tmp_path)
    write_archive(store, synth_payloads(M, T0, 30))
    store.put(object_key("states", M, T0 + 10_000), b"junk")
    rc = replay_main(
        ["--market", M, "--source", str(tmp_path), "--redis-url", redis_url, "--from", "2025-11-23T00:00:00Z"]
    )
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0 and out["added"] == 20 and len(out["problems"]) == 1
    assert len(stream_ids(r, keys.states_stream(M))) == 20


def test_parse_time() -> None:
    assert parse_time("2025-11-23T00:00:00Z") == T0 == parse_time("2025-11-23T00:00:00") == parse_time(str(T0))
