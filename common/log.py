"""Structured logging: ``key=value`` text or JSON lines, one logger per service.

``log_once(logger, key, ...)`` logs a given problem once per key (malformed input is logged once
with its reason, then only counted).
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any

import orjson

_seen: set[str] = set()

# scheme://user:secret@host -> scheme://user:***@host ; scheme://secret@host (redis://:pw@ / token) likewise
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@\s]*)(?::[^@/\s]*)?@")
_SECRET_PARAMS = re.compile(r"(?i)(?P<k>(?:password|passwd|secret|token|access_key|secret_key|api_key)=)[^&\s]+")


def redact(text: str) -> str:
    """``text`` with the credentials of every URL in it (``scheme://user:password@``, ``?password=``)
    replaced by ``***``. Apply to anything logged, printed, stored or reported that may hold a URL."""
    out = _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user'] and m['user'] + ':'}***@", text)
    return _SECRET_PARAMS.sub(lambda m: f"{m['k']}***", out)


def redact_value(value: Any) -> Any:
    """:func:`redact` applied to every string inside ``value`` (dicts, lists and tuples are copied)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_value(v) for v in value)
    return value


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        d: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        extra = getattr(record, "kv", None)
        if isinstance(extra, dict):
            d.update({k: redact(v) if isinstance(v, str) else v for k, v in extra.items()})
        if record.exc_info:
            d["exc"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(d, default=str).decode()


class _KvFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%H:%M:%S", time.localtime(record.created))
        extra = getattr(record, "kv", None)
        kv = " ".join(f"{k}={_kv_value(v)}" for k, v in extra.items()) if isinstance(extra, dict) else ""
        line = f"{ts} {record.levelname[0]} {record.name}: {record.getMessage()}" + (f" {kv}" if kv else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return redact(line)


def _kv_value(v: Any) -> str:
    """A field value as one token: strings with spaces, quotes or control characters are ``repr``-quoted,
    so a value can never start a forged log line."""
    s = str(v)
    if any(c.isspace() or c in "\"'=" or ord(c) < 32 for c in s):
        return repr(s)
    return s


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


def kv(logger: logging.Logger, level: int, msg: str, /, **fields: Any) -> None:
    logger.log(level, msg, extra={"kv": fields})


def log_once(logger: logging.Logger, key: str, msg: str, /, **fields: Any) -> bool:
    """Log ``msg`` at WARNING the first time ``key`` is seen; returns True when it logged."""
    if key in _seen:
        return False
    _seen.add(key)
    kv(logger, logging.WARNING, msg, **fields)
    return True
