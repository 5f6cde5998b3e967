"""``fusion sim synthetic|recorded ...``: run the venue simulator / recorded-data replayer.

Examples::

    fusion sim synthetic --port 8765 --speed 20 --seed 1 --markets BTC-15M,ETH-15M [--no-lead-lag] [--lag-s 5]
    fusion sim recorded --port 8765 --binance tests/fixtures/real/binance_raw_ws_spot__hftbacktest/spot \\
        --polymarket poly.csv --speed 0

(the Binance capture excerpt ships in the repository; ``python -m tests.fixtures.synthetic_polymarket
poly.csv`` writes a synthetic Polymarket CSV in the recorded layout)

Then: ``FUSION_FEED=sim FUSION_SIM_URL=http://127.0.0.1:8765 fusion observe ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from common.log import setup_logging
from common.markets import MarketSpecError, parse_market, spec_arg, spec_list_arg
from observer_svc.sim.core import Driver
from observer_svc.sim.server import SimServer


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="fusion sim", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="driver", required=True)
    for name in ("synthetic", "recorded"):
        p = sub.add_parser(name)
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, default=8765)
        p.add_argument("--log-level", default="INFO")
    s = sub.choices["synthetic"]
    s.add_argument("--speed", type=float, default=1.0, help="sim seconds per wall second (0 = as fast as clients read)")
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--markets", default="BTC-15M", type=spec_list_arg, help="comma-separated market specs")
    s.add_argument("--no-lead-lag", action="store_true", help="Polymarket independent of Binance (pure noise)")
    s.add_argument("--lag-s", type=float, default=5.0)
    s.add_argument("--epoch-ms", type=int, default=None, help="sim start (default: now floored to the window)")
    s.add_argument("--binance-kind", choices=("futures", "spot"), default="futures")
    r = sub.choices["recorded"]
    r.add_argument("--binance", default=None, help="hftbacktest spot dir or one .gz file")
    r.add_argument("--symbols", default="", help="only these symbols, e.g. btcusdt")
    r.add_argument("--polymarket", action="append", default=[], help="Polymarket 1 Hz top-of-book CSV (repeatable)")
    r.add_argument("--speed", type=float, default=0.0, help="0 = as fast as the clients take it")
    r.add_argument("--no-align", action="store_true", help="keep Polymarket at its recorded times")
    r.add_argument("--no-wait", action="store_true", help="start replaying before clients subscribe")
    r.add_argument("--market", default="BTC-15M", type=spec_arg)
    return ap


def build_driver(a: argparse.Namespace) -> Driver:
    if a.driver == "synthetic":
        from observer_svc.sim.synthetic import SyntheticDriver

        markets = [m.strip() for m in a.markets.split(",") if m.strip()]
        for m in markets:
            parse_market(m)
        return SyntheticDriver(markets, seed=a.seed, speed=a.speed, epoch_ms=a.epoch_ms,
                               lead_lag=not a.no_lead_lag, lag_s=a.lag_s, binance_kind=a.binance_kind)  # fmt: skip
    from observer_svc.sim.recorded import RecordedDriver

    if not a.binance and not a.polymarket:
        raise SystemExit("fusion sim recorded: give --binance and/or --polymarket")
    syms = [s for s in a.symbols.split(",") if s] or None
    return RecordedDriver(a.binance, a.polymarket or None, speed=a.speed, symbols=syms, align=not a.no_align,
                          wait_for_clients=not a.no_wait, market=parse_market(a.market).name)  # fmt: skip


async def _serve(driver: Driver, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with SimServer(driver, host=host, port=port) as srv:
        print(f"fusion sim {driver.name}: serving on {srv.url} (FUSION_FEED=sim FUSION_SIM_URL={srv.url})", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    setup_logging(a.log_level)
    try:
        driver = build_driver(a)
    except (MarketSpecError, OSError, ValueError) as e:
        print(f"fusion sim: {e}", file=sys.stderr)
        return 2
    asyncio.run(_serve(driver, a.host, a.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
