"""``fusion label`` / ``python -m labeler_svc``: run the labeler (``--once``: drain and exit)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from types import FrameType

from common.log import kv, setup_logging
from common.metrics import serve_metrics
from common.settings import Settings
from labeler_svc.service import LabelerService

log = logging.getLogger("labeler")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="fusion label", description=__doc__)
    ap.add_argument("--once", action="store_true", help="label what is there, then exit")
    ap.add_argument("--consumer", default="labeler-1", help="consumer name in the group (keep it stable)")
    ap.add_argument("--batch", type=int, default=10_000, help="entries per XREADGROUP per stream")
    ap.add_argument("--block-ms", type=int, default=500)
    a = ap.parse_args(sys.argv[1:] if argv is None else argv)
    settings = Settings()
    setup_logging(settings.log_level, settings.log_json)
    serve_metrics(settings.metrics_port)
    svc = LabelerService(settings, consumer=a.consumer, batch=a.batch, block_ms=a.block_ms)

    def _stop(signum: int, frame: FrameType | None) -> None:
        svc.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    from common import healthwatch
    from common.lifecycle import service_started

    if not a.once:
        service_started("labeler", a.consumer, settings.redis_url)
        healthwatch.start(settings)
    kv(log, logging.INFO, "labeler started", redis=settings.redis_url, horizons=settings.label_horizons_s)
    try:
        rc = svc.run(once=a.once)
    finally:
        t = svc.totals
        kv(log, logging.INFO, "labeler stopped", read=t.read, labelled=t.labelled, duplicates=t.duplicates, dead=t.dead)
        svc.close()
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
