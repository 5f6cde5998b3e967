"""`fusion sim` CLI: a real process serving on a free port; bad arguments exit 2."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from fusion.cli import main as fusion
from observer_svc.sim.__main__ import main
from observer_svc.sim.wire_out import condition_id, fmt_poly, token_ids


def test_cli_serves_synthetic_on_a_free_port() -> None:
    p = subprocess.Popen(
        [sys.executable, "-m", "observer_svc.sim", "synthetic", "--port", "0", "--speed", "20", "--seed", "3",
         "--markets", "BTC-15M,ETH-5M", "--no-lead-lag"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = p.stdout.readline()
        url = line.split("serving on ", 1)[1].split()[0]
        st = httpx.get(f"{url}/sim/status", timeout=5).json()
        assert st["driver"] == "synthetic" and st["driver_status"]["lead_lag"] is False
        assert st["driver_status"]["seed"] == 3
    finally:
        p.terminate()
        assert p.wait(10) == 0


def test_cli_rejects_bad_input() -> None:
    with pytest.raises(SystemExit) as e:  # argparse refuses the spec (usage error, exit 2)
        main(["synthetic", "--markets", "NOT A MARKET!"])
    assert e.value.code == 2
    assert fusion(["sim", "recorded", "--polymarket", "/nonexistent.csv"]) == 2


def test_ids_are_deterministic_and_venue_shaped() -> None:
    up, down = token_ids("btc-updown-15m-1767225600")
    assert (up, down) == token_ids("btc-updown-15m-1767225600") and up != down
    assert up.isdigit() and 70 <= len(up) <= 78 and int(up) < 2**256
    cid = condition_id("btc-updown-15m-1767225600")
    assert cid.startswith("0x") and len(cid) == 66 and int(cid, 16) >= 0
    assert token_ids("btc-updown-15m-1767226500")[0] != up
    assert [fmt_poly(x) for x in (0.5, 0.52, 0.975, 30.0, 1520.5, 0.0)] == ["0.5", "0.52", "0.975", "30", "1520.5", "0"]
