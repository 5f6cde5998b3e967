from __future__ import annotations

import pytest

from common import keys
from common.markets import MarketSpecError, parse_market
from common.settings import Settings


def test_series_spec() -> None:
    m = parse_market("btc-15m")
    assert m.name == "BTC-15M" and m.binance_symbol == "BTCUSDT" and m.interval_s == 900
    assert m.window_start(1_771_855_250) == 1_771_855_200
    assert m.series_slug(1_771_855_200) == "btc-updown-15m-1771855200"


def test_fixed_spec() -> None:
    m = parse_market("TRUMP2024=slug:presidential-election-winner-2024@BTCUSDT")
    assert m.fixed_slug == "presidential-election-winner-2024" and not m.is_series
    with pytest.raises(MarketSpecError):
        parse_market("nonsense market")


def test_keys_are_hash_tagged() -> None:
    assert keys.states_stream("BTC-15M") == "fusion:{BTC-15M}:states"
    assert keys.market_of_stream(b"fusion:{BTC-15M}:labels") == ("BTC-15M", "labels")
    assert keys.market_of_stream("fusion:events") is None


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FUSION_MARKETS", "BTC-15M, ETH-15M")
    monkeypatch.setenv("FUSION_LABEL_HORIZONS_S", "[30, 120]")
    monkeypatch.setenv("FUSION_FEED", "sim")
    s = Settings()
    assert s.markets == ["BTC-15M", "ETH-15M"] and s.label_horizons_s == [30, 120]
    assert s.event_clock and s.venue_urls()["binance_ws"] == "ws://127.0.0.1:8765/binance"


def test_comma_separated_market_lists() -> None:
    from common.markets import joined_name, split_markets

    assert split_markets(" BTC-5M, ,ETH-5M ") == ["BTC-5M", "ETH-5M"] and split_markets("") == []
    assert joined_name("BTC-5M,ETH-5M") == "BTC-5M_ETH-5M" and joined_name("BTC-15M") == "BTC-15M"
