"""``fusion demo``: the whole loop on one machine, no Docker, no internet, then a report.

Stages (each a real process talking over real sockets, as in production):
Redis (``FUSION_REDIS_URL`` if reachable, else a private ``redis-server`` with AOF in the work
directory) -> the venue simulator with a real lead-lag (``fusion sim synthetic``, sped up) -> two
observers sharing the markets through leases (``--replicas`` per market; with 2, Redis refuses the
duplicate tick IDs) -> archiver -> labeler -> RQ training worker -> paper trader. After the
collection phase it enqueues one training job on every market's archived, labelled data pooled
(``ppo`` warm-started from ``awbc`` by default), which evaluates on a walk-forward hold-out and
promotes the model only if it beats the champion and the baselines; the ``model-updated`` event
makes the trader swap weights between ticks, and the simulator slows down (``--trade-speed``) so the
trader can decide on every tick of its trading phase. Then every process is stopped gracefully (the
archiver flushes its open windows) and one summary says what each stage produced, the data quality
(states without a Polymarket market, stale venues, missing ticks, discovery failures), the
candidate against each baseline, the trader before and after the swap, and where everything is,
with the commands that reuse the demo's settings (``fusion.env``) and Redis (``redis/redis.conf``).
Ctrl-C at any point stops the same way and loses nothing.
"""

from __future__ import annotations

import argparse

from common.markets import spec_list_arg


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="fusion demo", description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    ap.add_argument(
        "--markets",
        default="BTC-5M,ETH-5M",
        type=spec_list_arg,
        help="5-minute series: many windows per minute of demo",
    )
    ap.add_argument("--collect", type=float, default=360.0, help="seconds of wall time to collect before training")
    ap.add_argument("--after", type=float, default=120.0, help="seconds of paper trading after the model swap")
    ap.add_argument(
        "--trade-speed",
        type=float,
        default=5.0,
        help="simulator speed while trading after the swap (slow enough for the trader to decide on every tick "
        "of a busy 2-core machine; the report says how many it missed)",
    )
    ap.add_argument("--speed", type=float, default=60.0, help="simulated seconds per wall second")
    ap.add_argument("--seed", type=int, default=7, help="the simulator's seed")
    ap.add_argument("--lag-s", type=float, default=20.0, help="how far Polymarket lags Binance in the simulator")
    ap.add_argument("--replicas", type=int, default=1, help="observers per market (2 observers share the markets)")
    ap.add_argument("--algo", default="ppo", choices=("awbc", "supervised", "ppo"), help="ppo warm-starts from awbc")
    ap.add_argument("--dir", default="./fusion-data/demo", help="work directory (wiped at start)")
    ap.add_argument("--no-live", action="store_true", help="plain progress lines instead of the live view")
    a = ap.parse_args(argv)
    from fusion.demo.run import run_demo

    return run_demo(a)


if __name__ == "__main__":
    raise SystemExit(main())
