"""``fusion archive [--once] [--final]``: run the archiver (settings from FUSION_* env)."""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys

from common.log import kv, setup_logging
from common.metrics import serve_metrics
from common.settings import get_settings
from common.store import open_store
from common.streams import connect

log = logging.getLogger("archiver")


def main(argv: list[str] | None = None) -> int:
    from archiver_svc.service import Archiver

    ap = argparse.ArgumentParser(prog="fusion archive", description="archive states and labels to the store")
    ap.add_argument("--once", action="store_true", help="exit when caught up (closed windows written)")
    ap.add_argument("--final", action="store_true", help="on exit also write unfinished windows (tests, demos)")
    ap.add_argument("--consumer", help="consumer name (default: FUSION_ARCHIVER_ID or the hostname)")
    a = ap.parse_args(argv)
    st = get_settings()
    setup_logging(st.log_level, st.log_json)
    serve_metrics(st.metrics_port)
    consumer = a.consumer or st.archiver_id or socket.gethostname()
    store = open_store(st.store_url, st.s3_endpoint_url, st.s3_region)
    arch = Archiver(
        connect(st.redis_url),
        store,
        consumer=consumer,
        window_s=st.archive_window_s,
        grace_s=st.archive_grace_s,
        claim_idle_ms=st.archive_claim_idle_ms,
        store_retry_max_s=st.store_retry_max_s,
        store_down_log_every_s=st.store_down_log_every_s,
    )
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: arch.stop())
    from common import healthwatch
    from common.lifecycle import service_started

    if not a.once:
        service_started("archiver", consumer, st.redis_url)
        healthwatch.start(st)
    kv(log, logging.INFO, "archiver starting", consumer=consumer, store=store.url, window_s=st.archive_window_s)
    stats = arch.run(once=a.once, final=a.final)
    kv(log, logging.INFO, "archiver stopped", archived=stats.archived, dead=stats.dead, objects=stats.objects)
    return 0


if __name__ == "__main__":
    sys.exit(main())
