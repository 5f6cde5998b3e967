"""Shared fixtures: a real redis-server per test session (and per test when it must be killed)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from common.redisproc import RedisServer

ROOT = Path(__file__).resolve().parent.parent
#: licensed recordings shipped in the repository (tests/fixtures/real/README.md); the suite needs nothing else
RECORDED_DATA = ROOT / "tests" / "fixtures" / "real"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    srv = RedisServer().start()
    yield srv
    srv.close()


@pytest.fixture()
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """A clean database on the session's server."""
    r = redis.Redis.from_url(redis_server.url)
    r.flushall()
    yield redis_server.url
    r.flushall()
    r.close()


@pytest.fixture()
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture()
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A server this test may kill and restart (AOF on, fsync always)."""
    srv = RedisServer(appendonly=True, workdir=str(tmp_path / "redis")).start()
    yield srv
    srv.close()


@pytest.fixture(scope="session")
def recorded_data() -> Path:
    """The recorded excerpts in the repository (never a folder outside it)."""
    return RECORDED_DATA


@pytest.fixture(scope="session")
def synthetic_poly_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SYNTHETIC Polymarket 1 Hz top-of-book CSV (3 BTC 15-minute windows), in the recorded layout."""
    from tests.fixtures.synthetic_polymarket import write_csv

    return write_csv(tmp_path_factory.mktemp("poly") / "market_data_synthetic.csv")


def python_exe() -> str:
    return sys.executable


# --------------------------------------------------------------------------- S3 (moto server mode)
@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A real S3-compatible HTTP endpoint (moto's threaded server) on a free port, once per session.

    Dummy credentials are set in the environment here only (boto3's standard chain picks them up).
    """
    from moto.server import ThreadedMotoServer

    from common.redisproc import free_port

    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture()
def s3_store(moto_endpoint: str):  # -> S3Store
    """An S3Store on a fresh bucket of the moto server."""
    import uuid

    from common.store import S3Store

    store = S3Store(f"test-{uuid.uuid4().hex[:12]}", prefix="pfx", endpoint_url=moto_endpoint, region="us-east-1")
    store.ensure_bucket()
    return store
