"""Market specifications: a rolling Polymarket series or one fixed market, paired with a Binance symbol.

A market's name is its key everywhere (streams, archive paths, models).

Spec syntax (``--market`` / ``FUSION_MARKETS``):
  ``BTC-15M``                      rolling series ``btc-updown-15m-{start}`` paired with ``BTCUSDT``
  ``ETH-5M``, ``SOL-1H`` ...        likewise for 5-minute and hourly series
  ``NAME=slug:SOME-SLUG@BTCUSDT``   one fixed market by slug
  ``NAME=cid:0xABC...@BTCUSDT``     one fixed market by condition id
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass

from common.names import GRAMMAR, InvalidName, check_name

INTERVALS_S: dict[str, int] = {"5M": 300, "15M": 900, "1H": 3600, "4H": 14400}
_SERIES_RE = re.compile(r"^([A-Z0-9]{2,10})-(5M|15M|1H|4H)$")
_FIXED_RE = re.compile(r"^([^=]{1,200})=(slug|cid):([^@\s]+)@([A-Z0-9]{4,20})$")


class MarketSpecError(ValueError):
    """A market spec that cannot be parsed."""


@dataclass(frozen=True, slots=True)
class MarketSpec:
    """What an observer watches for one market name."""

    name: str
    binance_symbol: str
    series_asset: str | None = None  # e.g. "btc" for a rolling series
    interval_s: int | None = None  # window length of a rolling series
    fixed_slug: str | None = None
    fixed_condition_id: str | None = None

    @property
    def is_series(self) -> bool:
        return self.series_asset is not None

    def series_slug(self, window_start_s: int) -> str:
        """Slug of the series window starting at ``window_start_s`` (a multiple of the interval)."""
        if self.series_asset is None or self.interval_s is None:
            raise MarketSpecError(f"{self.name} is not a rolling series")
        label = {300: "5m", 900: "15m", 3600: "1h", 14400: "4h"}[self.interval_s]
        return f"{self.series_asset}-updown-{label}-{window_start_s}"

    def window_start(self, now_s: float) -> int:
        if self.interval_s is None:
            raise MarketSpecError(f"{self.name} is not a rolling series")
        return int(now_s // self.interval_s) * self.interval_s


def parse_market(spec: str) -> MarketSpec:
    """Parse one market spec; raises :class:`MarketSpecError` with the reason."""
    spec = spec.strip()
    m = _SERIES_RE.match(spec.upper())
    if m and "=" not in spec:
        asset, interval = m.group(1), m.group(2)
        return MarketSpec(
            name=f"{asset}-{interval}",
            binance_symbol=f"{asset}USDT",
            series_asset=asset.lower(),
            interval_s=INTERVALS_S[interval],
        )
    f = _FIXED_RE.match(spec)
    if f:
        name, kind, ident, symbol = f.groups()
        try:
            check_name(name, "market")
        except InvalidName as e:
            raise MarketSpecError(str(e)) from None
        return MarketSpec(
            name=name,
            binance_symbol=symbol,
            fixed_slug=ident if kind == "slug" else None,
            fixed_condition_id=ident if kind == "cid" else None,
        )
    raise MarketSpecError(
        f"cannot parse market {spec[:80]!r}: expected e.g. BTC-15M or NAME=slug:SLUG@BTCUSDT or NAME=cid:0x..@BTCUSDT"
        f" (NAME: {GRAMMAR})"
    )


def validate_market_name(name: str) -> str:
    """``name`` when it follows :mod:`common.names`' grammar; :class:`MarketSpecError` otherwise."""
    try:
        return check_name(name, "market")
    except InvalidName as e:
        raise MarketSpecError(str(e)) from None


def split_markets(specs: str) -> list[str]:
    """The entries of a comma-separated market list, stripped, blanks dropped."""
    return [m.strip() for m in specs.split(",") if m.strip()]


def joined_name(specs: str) -> str:
    """One name for a comma-separated market list (a pooled training job's default policy name)."""
    return "_".join(split_markets(specs))


def spec_arg(text: str) -> str:
    """An argparse ``type=`` for one market spec: the text unchanged, or a usage error (exit 2) saying why."""
    try:
        parse_market(text)
    except MarketSpecError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def spec_list_arg(text: str) -> str:
    """An argparse ``type=`` for comma-separated market specs (at least one): the text unchanged, or a usage
    error (exit 2) saying why."""
    specs = split_markets(text)
    if not specs:
        raise argparse.ArgumentTypeError(f"no market in {text[:80]!r}: expected e.g. BTC-15M (NAME: {GRAMMAR})")
    for spec in specs:
        spec_arg(spec)
    return text
