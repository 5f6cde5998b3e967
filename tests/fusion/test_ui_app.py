"""``fusion ui``'s app on a real Redis and a local store, without a browser: token rules, the kill-switch command
reaching a paper engine, markets figures, and a refresh cost that does not grow with the number of markets."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis

from archiver_svc.synth import synth_payloads
from benchmarks.ui import CountingRedis, CountingStore, _commands
from common import keys
from common.store import LocalStore
from fusion.ui.actions import Refused, check_token
from fusion.ui.app import Collector, create_app
from trader_svc import state
from trader_svc.paper import PaperConfig, PaperEngine


def _market(r: redis.Redis, m: str, start: int, n: int, skip: set[int] = frozenset()) -> None:
    pipe = r.pipeline(transaction=False)
    for i, (eid, payload) in enumerate(synth_payloads(m, start, n)):
        if i not in skip:
            pipe.xadd(keys.states_stream(m), {keys.PAYLOAD_FIELD: payload}, id=eid)
    pipe.sadd(keys.MARKETS_SET, m)
    pipe.execute()
    for g in keys.STATES_GROUPS:
        r.xgroup_create(keys.states_stream(m), g, id="0")


@pytest.fixture
def app_of(r: redis.Redis, tmp_path: Path):
    def make(token: str | None, **kw):
        col = Collector(r, LocalStore(tmp_path / "store"), **kw)
        return col, create_app(col, token=token).test_client()

    return make


def test_token_rules() -> None:
    with pytest.raises(Refused, match="disabled"):
        check_token(None, "x")
    with pytest.raises(Refused, match="wrong"):
        check_token("abc", "abd")
    with pytest.raises(Refused, match="wrong"):
        check_token("abc", None)
    check_token("abc", "abc")


def test_actions_refused_without_token_and_done_with_it(r: redis.Redis, app_of) -> None:
    r.flushall()
    _, ro = app_of(None)
    res = ro.post("/action/kill-on", data={"trader": "t1"}, headers={"X-Fusion-Token": "anything"})
    assert res.status_code == 403 and r.llen(keys.trader_command_key("t1")) == 0
    _, rw = app_of("tok")
    assert rw.post("/action/kill-on", data={"trader": "t1"}).status_code == 403
    assert rw.post("/action/kill-on", data={"trader": "../x"}, headers={"X-Fusion-Token": "tok"}).status_code == 400
    res = rw.post("/action/kill-on", data={"trader": "t1", "token": "tok"})
    assert res.status_code == 200, res.data
    cmd = json.loads(r.lpop(keys.trader_command_key("t1")))
    assert cmd["cmd"] == "kill-on" and "tok" not in json.dumps(cmd)
    res = rw.post("/action/rollback", data={"policy": "nopol"}, headers={"X-Fusion-Token": "tok"})
    assert res.status_code == 409  # the registry's own refusal (no previous champion), as `fusion models rollback`


def test_operator_kill_switch_is_recorded_and_rebuilt() -> None:
    eng = PaperEngine(PaperConfig())
    assert eng.operator_kill(True, by="ui") and eng.killed and not eng.operator_kill(True)
    recs = eng._drain([])
    assert [x["type"] for x in recs] == ["kill"]
    assert eng.operator_kill(False)
    recs += eng._drain([])
    fresh = PaperEngine(PaperConfig())
    state.rebuild(fresh, recs[:1])
    assert fresh.killed
    state.rebuild(fresh, recs[1:])
    assert not fresh.killed


def test_markets_page_figures(r: redis.Redis, app_of) -> None:
    r.flushall()
    now = int(time.time() * 1000) // 500 * 500
    _market(r, "AAA-5M", now - 600 * 500, 600, skip={100, 101, 102})
    col, client = app_of(None)
    d = client.get("/api/markets").get_json()
    (row,) = d["markets"]
    assert row["length"] == 597 and row["gaps"] == 3 and row["window_states"] == 597
    assert row["lag"]["archiver:states"] == 597
    r.xadd(keys.states_stream("AAA-5M"), {keys.PAYLOAD_FIELD: synth_payloads("AAA-5M", now, 1)[0][1]}, id=f"{now}-0")
    row = client.get("/api/markets").get_json()["markets"][0]
    assert row["window_states"] == 598 and row["last_tick_ms"] == now  # read incrementally, not twice


def test_observers_table_lists_fixed_and_leased_observers(r: redis.Redis, app_of) -> None:
    from observer_svc import presence

    r.flushall()
    now = int(time.time() * 1000)
    presence.beat(r, "obs-a", presence.report(["AAA-5M", "BBB-5M"], "fixed", 40, now, 80, 0, now), now)
    presence.beat(r, "obs-b", presence.report(["CCC-5M"], "leases", 7, now, 7, 2, now), now - 1000)
    _, client = app_of(None)
    got = {o["id"]: o for o in client.get("/api/markets").get_json()["observers"]}
    assert got["obs-a"]["markets"] == ["AAA-5M", "BBB-5M"] and got["obs-a"]["mode"] == "fixed"
    assert got["obs-b"]["publish_errors"] == 2
    html = client.get("/markets?fragment=1").get_data(as_text=True)
    assert 'data-observer="obs-a"' in html and "AAA-5M, BBB-5M" in html and "no observer" not in html


def test_archive_page_shows_which_days_are_compacted(r: redis.Redis, app_of, tmp_path: Path) -> None:
    from archiver_svc.compact import compact
    from tests.archiver_svc.helpers import T0
    from tests.archiver_svc.test_reader import write_archive

    r.flushall()
    store = LocalStore(tmp_path / "store")
    write_archive(store, synth_payloads("AAA-5M", T0 + 1_000, 300), market="AAA-5M")
    write_archive(store, synth_payloads("AAA-5M", T0 + 86_400_000 + 1_000, 300), market="AAA-5M")
    compact(store, kinds=("states",), now_ms=T0 + 86_400_000 + 7_200_000)  # the first day only is closed
    _, client = app_of(None)
    cells = client.get("/api/archive").get_json()["calendar"]["cells"]["AAA-5M"]
    first, second = (cells[d] for d in sorted(cells))
    assert first["compacted"] == ["states"] and first["columnar_bytes"] > 0
    assert second["compacted"] == [] and second["columnar_bytes"] == 0
    html = client.get("/archive?fragment=1").get_data(as_text=True)
    assert "Parquet: states (" in html and "not compacted" in html


def test_refresh_cost_is_bounded_whatever_the_markets(redis_url: str, tmp_path: Path) -> None:
    admin = redis.Redis.from_url(redis_url)
    admin.flushall()
    now = int(time.time() * 1000) // 500 * 500
    cost = {}
    for n in (4, 12):
        for i in range(n):
            if not admin.exists(keys.states_stream(f"M{i:02d}-5M")):
                _market(admin, f"M{i:02d}-5M", now - 20 * 500, 20)
        r = CountingRedis.from_url(redis_url)
        store = CountingStore(LocalStore(tmp_path / "s"))
        client = create_app(Collector(r, store, page_size=4, cache_s=60)).test_client()
        for page in ("markets", "archive", "training", "trader"):
            client.get(f"/{page}")  # cold
        CountingRedis.round_trips, store.calls = 0, 0
        admin.config_resetstat()
        for page in ("markets", "archive", "training", "trader"):
            assert client.get(f"/{page}?fragment=1").status_code == 200
        cost[n] = (CountingRedis.round_trips, _commands(admin), store.calls)
    assert cost[4] == cost[12] and cost[12][2] == 0, cost  # listings cached; the markets page shows 4 at a time


def test_training_page_follows_a_running_job(r: redis.Redis, app_of) -> None:
    from rq.executions import Execution

    from trainer_svc.jobs import enqueue_training
    from trainer_svc.jobspec import fetch, queue

    r.flushall()
    job = enqueue_training(r, {"market": "AAA-5M", "synthetic": 1000})
    with r.pipeline() as pipe:  # what a worker does when it starts the job (RQ's own API)
        Execution.create(fetch(r, job.id), 600, pipe, worker_name="w1")
        pipe.execute()
    assert queue(r).started_job_registry.get_job_ids() == [job.id]
    col, client = app_of(None)
    for progress, loss in ((0.2, 0.9), (0.5, 0.4)):
        j = fetch(r, job.id)
        j.meta.update(progress=progress, stage="train", last={"epoch": 1, "loss": loss})
        j.save_meta()
        html = client.get("/training").get_data(as_text=True)
    (running,) = client.get("/api/training").get_json()["jobs"]["running"]
    assert running["id"] == job.id and running["progress"] == 0.5
    assert running["curve"] == [[0.2, {"loss": 0.9}], [0.5, {"loss": 0.4}]]
    assert f"chart-job-{job.id}" in html and f'data-job="{job.id}"' in html
