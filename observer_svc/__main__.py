"""``fusion observe`` / ``python -m observer_svc``: run observers for one or more markets."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket

from common.log import setup_logging
from common.markets import parse_market, spec_list_arg
from common.metrics import serve_metrics
from common.settings import Settings


def build_settings(a: argparse.Namespace) -> Settings:
    overrides: dict[str, object] = {}
    if a.market:
        overrides["markets"] = [m for spec in a.market for m in spec.split(",") if m]
    if a.feed:
        overrides["feed"] = a.feed
    if a.tick is not None:
        overrides["tick_ms"] = int(round(a.tick * 1000))
    if a.sim_url:
        overrides["sim_url"] = a.sim_url
    if a.redis_url:
        overrides["redis_url"] = a.redis_url
    if a.replicas is not None:
        overrides["replicas"] = a.replicas
    base = Settings()
    return base.model_copy(update=overrides)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="fusion observe", description=__doc__)
    ap.add_argument(
        "--market", action="append", type=spec_list_arg, help="market spec, repeatable (BTC-15M, NAME=slug:S@SYMBOL)"
    )
    ap.add_argument("--feed", choices=["live", "sim", "replay"])
    ap.add_argument("--tick", type=float, help="tick interval in seconds (default 0.5)")
    ap.add_argument("--sim-url", help="base URL of `fusion sim` (feed sim|replay)")
    ap.add_argument("--redis-url")
    ap.add_argument("--replicas", type=int, help="lease mode: replicas per market (observers share markets)")
    ap.add_argument("--leases", action="store_true", help="take markets through leases (scaled deployments)")
    ap.add_argument("--duration", type=float, help="stop after this many seconds")
    a = ap.parse_args(argv)
    settings = build_settings(a)
    setup_logging(settings.log_level, settings.log_json)
    specs = [parse_market(m) for m in settings.markets]
    serve_metrics(settings.metrics_port)

    from observer_svc.service import Observer

    observer_id = settings.observer_id or f"obs-{socket.gethostname()}-{os.getpid()}"
    from common.lifecycle import default_instance, service_started

    service_started("observer", settings.observer_id or default_instance(), settings.redis_url)
    obs = Observer(settings, specs, use_leases=a.leases, observer_id=observer_id)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, obs.stop)
        await obs.run(duration_s=a.duration)

    asyncio.run(run())
    print(obs.summary_text())
    problem = obs.replay_problem()
    if problem:
        import logging

        logging.getLogger("observer").error(problem)
        print(f"fusion observe: {problem}", flush=True)
        return 3
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
