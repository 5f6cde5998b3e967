"""Binance's public daily dumps (data.binance.vision) downloaded for ``fusion backfill``, verified and resumable.

Layout (as the site serves it; ``{kind}`` is ``spot`` or ``futures/um``):

* ``/data/{kind}/daily/aggTrades/{SYMBOL}/{SYMBOL}-aggTrades-{YYYY-MM-DD}.zip``
* ``/data/{kind}/daily/klines/{SYMBOL}/1m/{SYMBOL}-1m-{YYYY-MM-DD}.zip``
* each zip has ``<zip>.CHECKSUM`` beside it: ``<sha256 hex>  <zip name>`` (``sha256sum``'s format).

Guarantees: a zip is accepted only when its sha256 matches its CHECKSUM (or, when the site has no CHECKSUM for it,
when it is a readable zip); a mismatching body is fetched again (``attempts`` times) and never cached, so a
corrupt download cannot poison a resumed run; every accepted answer is cached by the :class:`Fetcher`, so a rerun
after a kill asks the network only for the days it did not get. A day the site does not have yet (404, e.g.
today's file) is listed in ``missing``. Reading the files (ms or, for spot from 2025-01-01 on, us timestamps) is
:mod:`fusion.importers.binance`'s.
"""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fusion.importers.fetch import Fetcher, FetchError

HOUR_MS = 3_600_000
_HEX = re.compile(rb"^\s*([0-9a-fA-F]{64})\b")


@dataclass(slots=True)
class Dumps:
    paths: list[Path] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # days the site does not have (yet)
    verified: int = 0  # zips whose sha256 matched their CHECKSUM


def dump_url(base: str, symbol: str, kind: str, data: str, day: str) -> str:
    """The URL of one daily dump (``kind``: spot | um; ``data``: aggTrades | klines)."""
    root = f"{base}/data/{'spot' if kind == 'spot' else 'futures/um'}/daily/{data}/{symbol}/"
    if data == "klines":
        return f"{root}1m/{symbol}-1m-{day}.zip"
    return f"{root}{symbol}-aggTrades-{day}.zip"


def _is_zip(body: bytes) -> bool:
    try:
        with zipfile.ZipFile(io.BytesIO(body)) as z:
            return z.testzip() is None
    except zipfile.BadZipFile:
        return False


def fetch_day(f: Fetcher, url: str, attempts: int = 3) -> tuple[bytes | None, bool]:
    """(the zip's bytes or None when the site has no such day, whether a CHECKSUM verified it)."""
    ck_body = f.get(url + ".CHECKSUM")
    m = _HEX.match(ck_body or b"")
    want = m.group(1).decode().lower() if m else None

    def good(body: bytes) -> bool:
        return hashlib.sha256(body).hexdigest() == want if want else _is_zip(body)

    for _ in range(attempts):
        body = f.get(url, final=good)
        if body is None:
            return None, False
        if good(body):
            return body, want is not None
    raise FetchError(f"{url.rsplit('/', 1)[-1]}: {'sha256 differs from its CHECKSUM' if want else 'not a zip'} "
                     f"after {attempts} downloads")  # fmt: skip


def day_dumps(f: Fetcher, base: str, symbol: str, kind: str, data: str, from_ms: int, to_ms: int,
              out: Path) -> Dumps:  # fmt: skip
    """The daily dumps covering ``[from - 1 h, to)`` (the hour before: closes and volatility), as local zips."""
    res = Dumps()
    day = datetime.fromtimestamp((from_ms - HOUR_MS) / 1000, UTC).date()
    last = datetime.fromtimestamp((to_ms - 1) / 1000, UTC).date()
    while day <= last:
        url = dump_url(base, symbol, kind, data, day.isoformat())
        body, verified = fetch_day(f, url)
        if body is None:
            res.missing.append(day.isoformat())
        else:
            out.mkdir(parents=True, exist_ok=True)
            path = out / url.rsplit("/", 1)[-1]
            tmp = path.with_suffix(".part")
            tmp.write_bytes(body)
            tmp.replace(path)
            res.paths.append(path)
            res.verified += verified
        day += timedelta(days=1)
    return res
