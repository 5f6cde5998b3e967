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
SHARED_DATA = Path(os.environ.get("FUSION_SHARED_DATA", ROOT.parent / "shared" / "data" / "real"))


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
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.fail(f"shared real data not found at {SHARED_DATA} (set FUSION_SHARED_DATA)")
    return SHARED_DATA


def python_exe() -> str:
    return sys.executable
