"""Structured logging: ``key=value`` text or JSON lines, one logger per service.

``log_once(logger, key, ...)`` logs a given problem once per key (malformed input is logged once
with its reason, then only counted).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

_seen: set[str] = set()


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        d: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        extra = getattr(record, "kv", None)
        if isinstance(extra, dict):
            d.update(extra)
        if record.exc_info:
            d["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(d, default=str).decode()


class _KvFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%H:%M:%S", time.localtime(record.created))
        extra = getattr(record, "kv", None)
        kv = " ".join(f"{k}={v}" for k, v in extra.items()) if isinstance(extra, dict) else ""
        line = f"{ts} {record.levelname[0]} {record.name}: {record.getMessage()}" + (f" {kv}" if kv else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(level: str = "INFO", json: bool = False) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(_JsonFormatter() if json else _KvFormatter())
    root.addHandler(h)
    root.setLevel(level.upper())
    for noisy in ("websockets", "botocore", "boto3", "urllib3", "s3transfer", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def kv(logger: logging.Logger, level: int, msg: str, **fields: Any) -> None:
    logger.log(level, msg, extra={"kv": fields})


def log_once(logger: logging.Logger, key: str, msg: str, **fields: Any) -> bool:
    """Log ``msg`` at WARNING the first time ``key`` is seen; returns True when it logged."""
    if key in _seen:
        return False
    _seen.add(key)
    kv(logger, logging.WARNING, msg, **fields)
    return True
