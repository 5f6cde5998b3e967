"""The store contract on both backends: local directory and S3 through a real moto server."""

from __future__ import annotations

import threading

import pytest

from common.store import LocalStore, ObjectStore, StoreError, open_store


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> ObjectStore:
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    return request.getfixturevalue("s3_store")


def test_put_get_overwrite(store: ObjectStore) -> None:
    store.put("a/b/c.bin", b"one")
    assert store.get("a/b/c.bin") == b"one"
    store.put("a/b/c.bin", b"two")
    assert store.get("a/b/c.bin") == b"two"
    assert store.exists("a/b/c.bin")
    assert not store.exists("a/b/d.bin")


def test_get_missing_raises_keyerror(store: ObjectStore) -> None:
    with pytest.raises(KeyError):
        store.get("nope/x")


def test_put_if_absent(store: ObjectStore) -> None:
    assert store.put_if_absent("k/x", b"first") is True
    assert store.put_if_absent("k/x", b"second") is False  # S3: If-None-Match: * -> 412
    assert store.get("k/x") == b"first"


def test_put_if_absent_race_has_one_winner(store: ObjectStore) -> None:
    results: list[bool] = []
    barrier = threading.Barrier(4)

    def go(i: int) -> None:
        barrier.wait()
        results.append(store.put_if_absent("race/obj", f"w{i}".encode()))

    threads = [threading.Thread(target=go, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, False, False, True]
    assert store.get("race/obj") in {b"w0", b"w1", b"w2", b"w3"}


def test_list_order_and_prefix(store: ObjectStore) -> None:
    for k in ["m/2/b", "m/1/z", "m/10/a", "n/1", "m/1/a"]:
        store.put(k, k.encode())
    keys = [o.key for o in store.list("m/")]
    assert keys == sorted(["m/2/b", "m/1/z", "m/10/a", "m/1/a"])
    assert [o.key for o in store.list("m/1/")] == ["m/1/a", "m/1/z"]
    assert [o.key for o in store.list("m/1")] == ["m/1/a", "m/1/z", "m/10/a"]
    infos = {o.key: o for o in store.list()}
    assert infos["n/1"].size == 3 and infos["n/1"].etag
    assert list(store.list("zzz/")) == []


def test_list_folders_names_the_first_path_parts_below_a_prefix(store: ObjectStore) -> None:
    for k in (
        "market-data/BTC-15M/2025-11-23/1.msgpack.gz",
        "market-data/BTC-15M/2025-11-24/2.msgpack.gz",
        "market-data/ETH-15M/2025-11-23/1.msgpack.gz",
        "market-data/top.json",
        "labels/SOL-15M/d/1.gz",
    ):
        store.put(k, b"x")  # fmt: skip
    assert store.list_folders("market-data/") == ("BTC-15M", "ETH-15M")  # a key right below is not a folder
    assert store.list_folders("market-data/BTC-15M/") == ("2025-11-23", "2025-11-24")
    assert store.list_folders("nothing/") == ()
    assert ObjectStore.list_folders(store, "market-data/") == store.list_folders("market-data/")  # the default


def test_etag_changes_with_content(store: ObjectStore) -> None:
    store.put("e/x", b"aaa")
    e1 = next(iter(store.list("e/"))).etag
    store.put("e/x", b"bbbb")
    e2 = next(iter(store.list("e/"))).etag
    assert e1 != e2


def test_delete(store: ObjectStore) -> None:
    store.put("d/x", b"1")
    store.delete("d/x")
    assert not store.exists("d/x")
    store.delete("d/x")  # idempotent


@pytest.mark.parametrize("bad", ["", "/abs", "a/../b", "a\\b"])
def test_invalid_keys_rejected(store: ObjectStore, bad: str) -> None:
    with pytest.raises(StoreError):
        store.put(bad, b"x")


def test_local_put_leaves_no_temp_files(tmp_path) -> None:
    s = LocalStore(tmp_path)
    s.put("x/y", b"1")
    assert s.put_if_absent("x/y", b"2") is False
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["y"]


def test_open_store_urls(tmp_path, moto_endpoint: str) -> None:
    assert isinstance(open_store(f"file://{tmp_path}/a"), LocalStore)
    assert isinstance(open_store(str(tmp_path / "b")), LocalStore)
    s3 = open_store("s3://bkt-open/some/prefix", endpoint_url=moto_endpoint, region="us-east-1")
    assert s3.url == "s3://bkt-open/some/prefix/"
    with pytest.raises(StoreError):
        open_store("ftp://x")
