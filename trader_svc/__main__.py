"""``fusion trade`` / ``python -m trader_svc``: run the paper trader (Ctrl-C or SIGTERM stops it cleanly)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from types import FrameType

from common.log import kv, setup_logging
from common.metrics import serve_metrics
from common.names import name_arg
from common.settings import Settings
from common.store import open_store
from trader_svc.paper import PaperConfig
from trader_svc.service import Trader, TraderConfig

log = logging.getLogger("trader")


def build(settings: Settings, markets: list[str] | None = None, policy: str | None = None,
          trader_id: str | None = None, latency_ms: int | None = None) -> Trader:  # fmt: skip
    """A :class:`Trader` from settings (CLI flags override)."""
    cfg = TraderConfig(
        trader_id=trader_id or settings.trader_id,
        policy=policy or settings.policy,
        markets=list(markets or settings.trader_markets or settings.market_names),
        paper=PaperConfig(
            position_usd=settings.position_usd,
            max_daily_loss_usd=settings.max_daily_loss_usd,
            latency_ms=settings.trader_latency_ms if latency_ms is None else latency_ms,
            fee_rate=settings.taker_fee_rate,
            fee_exponent=settings.taker_fee_exponent,
            max_exposure_usd=settings.max_exposure_usd,
            max_trades_per_day=settings.max_trades_per_day,
        ),
        tick_ms=settings.tick_ms,
        max_model_bytes=settings.max_model_bytes,
        model_max_age_h=settings.model_max_age_h,
    )
    store = open_store(settings.store_url, settings.s3_endpoint_url, settings.s3_region)
    return Trader(cfg, settings.redis_url, store)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="fusion trade", description=__doc__)
    ap.add_argument(
        "--market",
        action="append",
        dest="markets",
        type=name_arg("market"),
        help="market to trade (repeat; default: settings)",
    )
    ap.add_argument("--policy", type=name_arg("policy"), help="policy name in the registry (default: FUSION_POLICY)")
    ap.add_argument("--trader", type=name_arg("trader"), help="trader id (default: FUSION_TRADER_ID)")
    ap.add_argument("--latency-ms", type=int, help="paper fill latency (default: FUSION_TRADER_LATENCY_MS)")
    ap.add_argument("--duration", type=float, help="stop after this many seconds")
    a = ap.parse_args(sys.argv[1:] if argv is None else argv)
    settings = Settings()
    setup_logging(settings.log_level, settings.log_json)
    serve_metrics(settings.metrics_port)
    trader = build(settings, a.markets, a.policy, a.trader, a.latency_ms)
    from common.lifecycle import service_started

    service_started("trader", a.trader or settings.trader_id, settings.redis_url)

    def _stop(signum: int, frame: FrameType | None) -> None:
        trader.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    rc = trader.run(duration_s=a.duration)
    st = trader.status()
    kv(log, logging.INFO, "trader stopped", trader=st["trader"], model=st["model"], decisions=st["decisions"],
       missed=st["missed_ticks"], swaps=st["swaps"], rejected=st["rejected"],
       equity_usd=round(st["pnl"]["equity_usd"], 4))  # fmt: skip
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
