"""``fusion ui`` in a real headless browser (Debian's chromium) against a running stack on the simulator: every
page shows what Redis and the store really hold, actions are refused without the token and take effect with it.
Screenshots go to the test's tmp dir (and to ``$FUSION_UI_SHOTS`` when set, e.g. docs/img)."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import httpx
import pytest
import redis

from common import keys
from common.deadletter import DeadLetters
from fusion.ui.storeview import day_of
from tests.fusion.ui_stack import MARKETS, POLICY, TOKEN, TRADER, Stack, chromium, parse, wait

pytestmark = pytest.mark.slow


def _shot(stack: Stack, page: str, tmp: Path) -> str:
    png = tmp / f"ui-{page}.png"
    dom = chromium(f"{stack.url}/{page}", png)
    assert png.stat().st_size > 10_000, f"{page}: empty screenshot"
    if os.environ.get("FUSION_UI_SHOTS"):
        shutil.copy(png, Path(os.environ["FUSION_UI_SHOTS"]) / f"ui-{page}.png")
    return dom


def _status(r: redis.Redis) -> dict:
    raw = r.get(keys.trader_status_key(TRADER))
    return json.loads(raw) if raw else {}


def test_pages_and_actions_in_chromium(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    try:
        stack.start()
        r = redis.Redis.from_url(stack.redis.url)
        wait(lambda: all(r.xlen(keys.states_stream(m)) > 600 for m in MARKETS), 120, "states")
        wait(lambda: sum(1 for _ in stack.store.list("market-data/")) >= 2 * len(MARKETS), 120, "archived windows")
        wait(lambda: _status(r).get("pnl", {}).get("fills", 0) > 0, 120, "trader fills")
        stack.stop_producers()  # the figures stop moving; the trader keeps running (kill switch commands)

        # --- markets: stream length, labels, consumer lag, leases, as Redis has them
        cells = parse(_shot(stack, "markets", tmp_path)).rows
        for m in MARKETS:
            groups = {g["name"].decode(): g for g in r.xinfo_groups(keys.states_stream(m))}
            assert cells[m]["length"] == str(r.xlen(keys.states_stream(m)))
            assert cells[m]["labels"] == str(r.xlen(keys.labels_stream(m)))
            assert cells[m]["archiver-lag"] == str(groups["archiver"]["lag"])
            assert cells[m]["labeler-lag"] == str(groups["labeler"]["lag"])
            cov = float(cells[m]["coverage"].rstrip("%"))
            assert 90.0 <= cov <= 100.0, cells[m]

        # --- archive: objects per market and day, as the store lists them
        first = r.xrange(keys.states_stream(MARKETS[0]), count=1)[0][0].decode()
        DeadLetters(r, "archiver").park(keys.states_stream(MARKETS[0]), first, "test: forged entry", b"\x00bad")
        obj = next(iter(stack.store.list(f"market-data/{MARKETS[0]}/"))).key
        stack.store.put(f"quarantine/{obj}.0123456789abcdef", b"corrupt")
        bad_day = obj.split("/")[2]
        rows = parse(_shot(stack, "archive", tmp_path)).rows
        assert rows[MARKETS[0]][f"quarantined:{bad_day}"] == "1"
        assert rows[MARKETS[0]][f"dead:{day_of(int(first.split('-')[0]))}"] == "1"
        for m in MARKETS:
            for kind, prefix in (("states", "market-data"), ("labels", "labels")):
                objs = [i.key for i in stack.store.list(f"{prefix}/{m}/")]
                for day in {k.split("/")[2] for k in objs}:
                    assert rows[m][f"{kind}:{day}"] == str(sum(1 for k in objs if f"/{day}/" in k)), (m, kind, day)
        assert all(v == "0" for k, v in rows[MARKETS[1]].items() if k.startswith(("quarantined:", "dead:")))

        # --- training: the registry's champion and hold-out figures
        ch = json.loads(stack.store.get(f"models/{POLICY}/champion.json"))
        dom = _shot(stack, "training", tmp_path)
        assert f'data-policy="{POLICY}">{ch["version"]}</span>' in dom
        rows = parse(dom).rows
        assert rows[stack.v1]["pnl"] == "1.5" and rows[stack.v2]["pnl"] == "-0.4"
        assert "not promoted: PnL below hold" in dom
        assert "chart-curve-uipol" in dom and "chart-holdout-uipol" in dom

        # --- trader: fills and kill switch from its status
        st = _status(r)
        rows = parse(_shot(stack, "trader", tmp_path)).rows
        assert rows[TRADER]["fills"] == str(st["pnl"]["fills"])
        assert rows[TRADER]["kill"].startswith("off")

        # --- actions: refused without (or with a wrong) token, nothing changes; with it, they take effect
        for headers in ({}, {"X-Fusion-Token": "nope"}):
            res = httpx.post(f"{stack.url}/action/promote", data={"policy": POLICY, "version": stack.v2},
                             headers=headers)  # fmt: skip
            assert res.status_code == 403, res.text
        assert json.loads(stack.store.get(f"models/{POLICY}/champion.json"))["version"] == stack.v1
        res = httpx.post(f"{stack.url}/action/promote", data={"policy": POLICY, "version": stack.v2},
                         headers={"X-Fusion-Token": TOKEN})  # fmt: skip
        assert res.status_code == 200 and res.json()["champion"] == stack.v2, res.text
        assert json.loads(stack.store.get(f"models/{POLICY}/champion.json"))["version"] == stack.v2
        assert f'data-policy="{POLICY}">{stack.v2}</span>' in chromium(f"{stack.url}/training")

        res = httpx.post(f"{stack.url}/action/kill-on", data={"trader": TRADER}, headers={"X-Fusion-Token": TOKEN})
        assert res.status_code == 200, res.text
        wait(lambda: _status(r)["pnl"]["kill_switch"], 30, "kill switch on")
        assert parse(chromium(f"{stack.url}/trader")).rows[TRADER]["kill"].startswith("ON")

        res = httpx.post(f"{stack.url}/action/kill-off", data={"trader": TRADER}, headers={"X-Fusion-Token": TOKEN})
        assert res.status_code == 200, res.text
        wait(lambda: not _status(r)["pnl"]["kill_switch"], 30, "kill switch reset")

        # --- live: the page polls its fragment (every FUSION_UI_REFRESH_S = 1 s here) and redraws
        dom = chromium(f"{stack.url}/trader", budget_ms=6000)
        m = re.search(r'data-refreshes="(\d+)"', dom)
        assert m and int(m.group(1)) >= 2, "the page did not refresh itself"
        assert parse(dom).rows[TRADER]["kill"].startswith("off")

        res = httpx.post(f"{stack.url}/action/train", data={"market": MARKETS[0], "policy": "uinew"},
                         headers={"X-Fusion-Token": TOKEN})  # fmt: skip
        assert res.status_code == 200, res.text
        job = res.json()["job"]
        rows = parse(_shot(stack, "training", tmp_path)).rows
        assert job in rows or f'data-job="{job}"' in chromium(f"{stack.url}/training")
        r.close()
    finally:
        stack.close()
