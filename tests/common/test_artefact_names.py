"""Issue 10, defect 4: every registry function that builds a key from a policy or version refuses a name
outside the grammar (versions: ``YYYYmmddTHHMMSSZ-xxxxxx`` from :func:`artefact.new_version`, or any name
of the grammar given explicitly), and a champion pointer or listing holding such a name is not followed."""

from __future__ import annotations

import json
import re

import pytest
import redis

from common import artefact, keys
from common.names import GRAMMAR
from common.policy import init_weights
from common.store import LocalStore

HOSTILE = [".", "..", "a/b", "a\nb", "v1\n", "{x}", "A" * 200, "BTC\u00e9", "", "a.b", "-lead", "a b"]


def test_new_versions_follow_the_grammar() -> None:
    v = artefact.new_version(now=1_795_000_000, salt=b"x")
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{6}", v)
    assert artefact.model_prefix("pol", v) == f"models/pol/{v}/"


@pytest.mark.parametrize("name", HOSTILE)
def test_registry_refuses_hostile_policy_and_version(name: str, tmp_path, r: redis.Redis) -> None:
    store = LocalStore(tmp_path / "s")
    good = artefact.save_model(store, "pol", init_weights(0), {})
    calls = [
        lambda: artefact.model_prefix(name),
        lambda: artefact.model_prefix("pol", name),
        lambda: artefact.save_model(store, name, init_weights(0), {}),
        lambda: artefact.save_model(store, "pol", init_weights(0), {}, version=name or "."),
        lambda: artefact.read_meta(store, name, good.version),
        lambda: artefact.read_meta(store, "pol", name),
        lambda: artefact.load_model(store, name),
        lambda: artefact.load_model(store, "pol", name or "."),
        lambda: artefact.list_versions(store, name),
        lambda: artefact.champion(store, name),
        lambda: artefact.promote(store, name, good.version, r),
        lambda: artefact.promote(store, "pol", name, r),
        lambda: artefact.rollback(store, name, r),
        lambda: artefact.publish_model_updated(r, name, {"version": good.version, "uri": "u", "sha256": "s"}),
        lambda: artefact.publish_model_updated(r, "pol", {"version": name, "uri": "u", "sha256": "s"}),
    ]
    for i, call in enumerate(calls):
        with pytest.raises(artefact.ModelError) as e:
            call()
        assert GRAMMAR in str(e.value), i
    assert r.xlen(keys.EVENTS_STREAM) == 0  # nothing announced
    assert sorted(i.key for i in store.list("")) == sorted(
        f"models/pol/{good.version}/{f}" for f in ("model.safetensors", "meta.json")
    )


def test_hostile_names_in_the_store_are_not_listed_or_followed(tmp_path, r: redis.Redis) -> None:
    store = LocalStore(tmp_path / "s")
    v1 = artefact.save_model(store, "pol", init_weights(1), {}).version
    v2 = artefact.save_model(store, "pol", init_weights(2), {}).version
    artefact.promote(store, "pol", v1, r)
    artefact.promote(store, "pol", v2, r)
    store.put("models/a b/v1/meta.json", b"{}")  # a folder a name outside the grammar (planted in the store)
    store.put("models/pol/v1 x/meta.json", b"{}")
    assert artefact.list_policies(store) == ["pol"]
    assert artefact.list_versions(store, "pol") == sorted([v1, v2])
    # a champion history whose previous entry names a hostile version: rollback refuses, champion unchanged
    hist = json.loads(store.get("models/pol/champion-history.json"))
    hist[-2]["version"] = "../pol2"
    store.put("models/pol/champion-history.json", json.dumps(hist).encode())
    n_events = r.xlen(keys.EVENTS_STREAM)
    with pytest.raises(artefact.ModelError, match="invalid version name"):
        artefact.rollback(store, "pol", r)
    assert artefact.champion(store, "pol")["version"] == v2 and r.xlen(keys.EVENTS_STREAM) == n_events
