"""Issue 10, defect 9: a dead S3 endpoint makes a real archiver process back off (a few log lines, not
thousands), keep its entries pending, and write everything once the endpoint is back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import redis

from common import keys
from common.redisproc import free_port
from common.store import S3Store
from tests.archiver_svc.helpers import T0, publish

M = "BTC-15M"
S = keys.states_stream(M)


@pytest.mark.slow
def test_dead_s3_endpoint_backs_off_and_recovers(redis_url: str, r: redis.Redis, moto_endpoint: str) -> None:
    """Phase 1: nothing listens on the endpoint's port (botocore retries, then fails); phase 2: the endpoint
    answers but the bucket is missing (fast failures); phase 3: the bucket exists."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    bucket = f"outage-{port}"
    publish(r, M, T0, 45)  # windows 0 and 10 s closed (grace 1 s), 20 s open
    env = dict(os.environ, FUSION_REDIS_URL=redis_url, FUSION_STORE_URL=f"s3://{bucket}/pfx",
               FUSION_S3_ENDPOINT_URL=endpoint, FUSION_S3_REGION="us-east-1", FUSION_ARCHIVE_WINDOW_S="10",
               FUSION_ARCHIVE_GRACE_S="1", FUSION_ARCHIVER_ID="outage", FUSION_STORE_RETRY_MAX_S="4")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "archiver_svc"], env=env, stderr=subprocess.PIPE, text=True)
    server = None
    try:
        time.sleep(6)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        time.sleep(10)
        assert int(r.xpending(S, keys.ARCHIVER_GROUP)["pending"]) == 45  # nothing acked, nothing lost
        store = S3Store(bucket, prefix="pfx", endpoint_url=endpoint, region="us-east-1")
        store.ensure_bucket()
        deadline = time.monotonic() + 30
        while int(r.xpending(S, keys.ARCHIVER_GROUP)["pending"]) > 5 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert int(r.xpending(S, keys.ARCHIVER_GROUP)["pending"]) == 5
        assert len(list(store.list("market-data/"))) == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=30)[1]
        if server is not None:
            server.stop()
    lines = [ln for ln in err.splitlines() if "archiver" in ln and ("store" in ln or "write" in ln)][1:]
    assert 2 <= len(lines) <= 6, f"{len(lines)} lines:\n" + "\n".join(lines[:10])
    assert "unavailable" in lines[0] and "recovered" in lines[-1], "\n".join(lines)
