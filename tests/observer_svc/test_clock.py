"""The event-time gate makes the tick states independent of socket interleaving."""

from __future__ import annotations

import random

from observer_svc.clock import DirectGate, EventTimeGate, grid_ceil


def _run(frames: list[tuple[str, int]], tick_ms: int = 500) -> list[tuple[int, tuple[int, ...]]]:
    applied: list[int] = []
    ticks: list[tuple[int, tuple[int, ...]]] = []
    clock = [0.0]
    gate = EventTimeGate(
        ["binance", "polymarket"],
        tick_ms,
        lambda g: ticks.append((g, tuple(sorted(applied)))),
        stall_s=1e9,
        wall=lambda: clock[0],
    )
    for venue, t in frames:
        gate.submit(venue, t, lambda t=t: applied.append(t))
    gate.flush()
    return ticks


def test_grid_ceil() -> None:
    assert grid_ceil(1000, 500) == 1000
    assert grid_ceil(1001, 500) == 1500


def test_tick_holds_exactly_events_up_to_it() -> None:
    bn = [("binance", t) for t in range(1000, 5000, 70)]
    pm = [("polymarket", t) for t in range(1000, 5000, 330)]
    ticks = _run(bn + pm)
    for g, seen in ticks:
        assert all(t <= g for t in seen)
        expected = {t for _, t in bn + pm if t <= g}
        assert set(seen) == expected


def test_interleaving_does_not_change_states() -> None:
    bn = [("binance", t) for t in range(0, 20_000, 37)]
    pm = [("polymarket", t) for t in range(5, 20_000, 611)]
    base = _run(bn + pm)
    rng = random.Random(7)
    for _ in range(5):
        # random interleaving that keeps each venue's own order (two sockets)
        a, b, merged = list(bn), list(pm), []
        while a or b:
            src = a if (a and (not b or rng.random() < 0.6)) else b
            merged.append(src.pop(0))
        assert _run(merged) == base


def test_stalled_venue_stops_blocking() -> None:
    clock = [0.0]
    ticks: list[int] = []
    gate = EventTimeGate(["binance", "polymarket"], 500, ticks.append, stall_s=2.0, wall=lambda: clock[0])
    gate.submit("binance", 1000, lambda: None)
    gate.submit("binance", 3000, lambda: None)
    assert ticks == []  # polymarket has said nothing yet: wait
    clock[0] = 5.0
    gate.poll()
    assert ticks == [1000, 1500, 2000, 2500]


def test_direct_gate_applies_at_once() -> None:
    g = DirectGate()
    out: list[int] = []
    g.submit("binance", 5, lambda: out.append(1))
    assert out == [1] and g.last_event_ms["binance"] == 5


def test_timeless_first_frame_does_not_start_the_grid_at_zero() -> None:
    ticks: list[int] = []
    gate = EventTimeGate(["binance"], 500, ticks.append, stall_s=1e9)
    applied: list[str] = []
    gate.submit("binance", None, lambda: applied.append("a"))
    gate.submit("binance", 1_700_000_000_000, lambda: applied.append("b"))
    gate.submit("binance", 1_700_000_001_100, lambda: applied.append("c"))
    assert applied == ["a", "b", "c"] and ticks == [1_700_000_000_000, 1_700_000_000_500, 1_700_000_001_000]


def test_builder_with_no_markets_builds_nothing() -> None:
    from observer_svc.state_builder import StateBuilder

    assert StateBuilder([], 5000, 60000).build_entries(1_000) == []
