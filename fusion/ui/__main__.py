"""``fusion ui [--host H] [--port P]``: serve the dashboard (read-only unless ``FUSION_UI_TOKEN`` is set)."""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

from common.log import redact, setup_logging
from common.settings import Settings, get_settings

if TYPE_CHECKING:
    from flask import Flask

log = logging.getLogger("ui")


def build(s: Settings | None = None) -> Flask:
    """The Flask app of the settings (used by ``main`` and the tests)."""
    from common.store import open_store
    from common.streams import connect
    from fusion.ui.app import Collector, create_app

    st = s or get_settings()
    store = open_store(st.store_url, st.s3_endpoint_url, st.s3_region)
    col = Collector(connect(st.redis_url), store, tick_ms=st.tick_ms, window_s=st.archive_window_s,
                    page_size=st.ui_page_markets, cache_s=st.ui_cache_s, replicas=st.replicas)  # fmt: skip
    token = st.ui_token.get_secret_value() if st.ui_token else None
    return create_app(col, token=token or None, refresh_s=st.ui_refresh_s)


def main(argv: list[str] | None = None) -> int:
    s = get_settings()
    ap = argparse.ArgumentParser(prog="fusion ui", description=__doc__)
    ap.add_argument("--host", default=s.ui_host, help="bind address (127.0.0.1: this machine only)")
    ap.add_argument("--port", type=int, default=s.ui_port)
    ap.add_argument("--threads", type=int, default=4)
    a = ap.parse_args(argv)
    setup_logging(s.log_level, s.log_json)
    from waitress import serve

    from common.metrics import serve_metrics

    serve_metrics(s.metrics_port)
    app = build(s)
    log.info("fusion ui on http://%s:%d (%s; redis %s)", a.host, a.port,
             "actions enabled" if s.ui_token else "read-only", redact(s.redis_url))  # fmt: skip
    serve(app, host=a.host, port=a.port, threads=a.threads, ident="fusion-ui")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
