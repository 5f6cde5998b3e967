"""A local HTTP server answering like the public venues ``fusion backfill`` reads, in their response shapes
(Gamma ``/events`` and ``/markets``, CLOB ``/prices-history``, data API ``/trades``, Binance's daily dump zips with
their ``.CHECKSUM`` files), on 127.0.0.1.

Synthetic content, deterministic per window; ``fail`` injects faults: path-substring -> number of 500s (or
429s with ``Retry-After: 0``) to answer before answering properly (-1: always); ``corrupt``: path-substring ->
number of zips answered with bytes that do not match their CHECKSUM. ``times`` holds each request's arrival
(``time.monotonic``). Binance dumps, as data.binance.vision serves them:

* spot ``klines`` (``/data/spot/daily/klines/SYM/1m/SYM-1m-DAY.zip``): no header, 12 columns, open and close
  times in ms before 2025-01-01 and in **microseconds** from that day on;
* USD-M futures ``klines`` (``/data/futures/um/daily/klines/...``): a header line, times in ms;
* USD-M futures ``aggTrades``: a header line, times in ms.

:func:`kline_close` gives the close price the dumps hold for a minute, so a test can check what was read.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
import zipfile
from collections import Counter
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import numpy as np

W_S = 900


def _iso(s: int) -> str:
    return datetime.fromtimestamp(s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _tokens(start_s: int) -> tuple[str, str, str]:
    rng = np.random.default_rng(start_s)
    up = "".join(map(str, rng.integers(1, 10, 77)))
    dn = "".join(map(str, rng.integers(1, 10, 77)))
    return "0x" + rng.bytes(32).hex(), up, dn


def _path_prob(start_s: int) -> tuple[np.ndarray, float]:
    """Up price per minute of the window and the outcome (1 Up, 0 Down)."""
    rng = np.random.default_rng(start_s + 1)
    p = np.clip(0.5 + np.cumsum(rng.normal(0, 0.05, W_S // 60)), 0.02, 0.98).round(3)
    return p, float(p[-1] > 0.5)


US_FROM_MS = 1_735_689_600_000  # 2025-01-01: spot dumps switch to microseconds


def kline_close(kind: str, open_ms: int) -> float:
    """The close of the 1-minute bar opening at ``open_ms`` in the ``kind`` (spot | um) dumps."""
    day0 = open_ms - open_ms % 86_400_000
    return float(_kline_day(kind, day0)[1][(open_ms - day0) // 60_000])


def _kline_day(kind: str, day0: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([day0 // 1000, 7 if kind == "spot" else 11])
    close = (94_000 + np.cumsum(rng.normal(0, 8, 1440))).round(2)
    return day0 + 60_000 * np.arange(1440, dtype=np.int64), close


def _klines_csv(kind: str, day0: int) -> str:
    opens, close = _kline_day(kind, day0)
    scale = 1000 if kind == "spot" and day0 >= US_FROM_MS else 1
    lines = [] if kind == "spot" else ["open_time,open,high,low,close,volume,close_time,quote_volume,count,"
                                       "taker_buy_volume,taker_buy_quote_volume,ignore"]  # fmt: skip
    prev = close[0]
    for i, (t, c) in enumerate(zip(opens.tolist(), close.tolist(), strict=True)):
        hi, lo = max(prev, c) + 1.5, min(prev, c) - 1.5
        vol = 5 + i % 13
        lines.append(f"{t * scale},{prev:.2f},{hi:.2f},{lo:.2f},{c:.2f},{vol:.5f},{(t + 59_999) * scale + scale - 1},"
                     f"{vol * c:.4f},{40 + i % 17},{vol / 2:.5f},{vol * c / 2:.4f},0")  # fmt: skip
        prev = c
    return "\n".join(lines) + "\n"


def _zip(name: str, text: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        info = zipfile.ZipInfo(name, (2025, 1, 1, 0, 0, 0))  # fixed date: the same bytes on every request
        z.writestr(info, text, zipfile.ZIP_DEFLATED)
    return buf.getvalue()


class Venues:
    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.fail: dict[str, int] = {}
        self.corrupt: dict[str, int] = {}
        self.fail_status = 500
        self.times: list[float] = []
        self.fixed: dict[str, dict[str, object]] = {}  # slug -> fixed market (add_fixed)
        self.no_checksum = False
        venues = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                u = urlsplit(self.path)
                venues.hits[u.path] += 1
                venues.times.append(time.monotonic())
                for frag, n in list(venues.fail.items()):
                    if frag in self.path and n != 0:
                        venues.fail[frag] = n - 1 if n > 0 else n
                        self.send_response(venues.fail_status)
                        self.send_header("Retry-After", "0")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                status, ctype, body = venues.answer(u.path, {k: v[0] for k, v in parse_qs(u.query).items()})
                for frag, n in list(venues.corrupt.items()):
                    if frag in self.path and u.path.endswith(".zip") and n != 0:
                        venues.corrupt[frag] = n - 1 if n > 0 else n
                        body = body[: len(body) // 2]
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, path: str, q: dict[str, str]) -> tuple[int, str, bytes]:
        js = "application/json"
        if path == "/gamma/events":
            slug = q.get("slug", "")
            start = int(slug.rsplit("-", 1)[-1])
            cid, up, dn = _tokens(start)
            _, won = _path_prob(start)
            market = {"id": str(start), "question": f"Bitcoin Up or Down - {_iso(start)}", "conditionId": cid,
                      "slug": slug, "endDate": _iso(start + W_S), "startDate": _iso(start - 86_400),
                      "eventStartTime": _iso(start), "outcomes": json.dumps(["Up", "Down"]),
                      "outcomePrices": json.dumps(["1", "0"] if won else ["0", "1"]),
                      "clobTokenIds": json.dumps([up, dn]), "active": True, "closed": True,
                      "umaResolutionStatus": "resolved"}  # fmt: skip
            ev = {"id": str(start), "slug": slug, "title": market["question"], "startTime": _iso(start),
                  "endDate": _iso(start + W_S), "closed": True, "markets": [market]}  # fmt: skip
            return 200, js, json.dumps([ev]).encode()
        if path == "/gamma/markets":
            hit = [f["market"] for f in self.fixed.values()
                   if q.get("slug") == f["market"]["slug"] or q.get("condition_ids") == f["cid"]]  # fmt: skip
            return 200, js, json.dumps(hit).encode()
        if path == "/clob/prices-history" and (fx := self._fixed_by_token(q["market"])) is not None:
            a, b = int(q["startTs"]), int(q["endTs"])
            t = np.arange(int(fx["start"]), int(fx["end"]) + 1, 60)
            p = np.clip(0.5 + 0.3 * np.sin(t / 3600.0), 0.02, 0.98).round(3)
            p = p if q["market"] == fx["yes"] else (1 - p).round(3)
            pts = [{"t": int(x), "p": float(y)} for x, y in zip(t.tolist(), p.tolist(), strict=True) if a <= x <= b]
            return 200, js, json.dumps({"history": pts}).encode()
        if path == "/clob/prices-history":
            tok, a, b = q["market"], int(q["startTs"]), int(q["endTs"])
            p, _ = _path_prob(a)
            _, up, _ = _tokens(a)
            pts = p if tok == up else (1 - p).round(3)
            return 200, js, json.dumps({"history": [{"t": a + 60 * i, "p": float(x)} for i, x in enumerate(pts)
                                                    if a + 60 * i <= b]}).encode()  # fmt: skip
        if path == "/data/trades":
            cid, off, lim = q["market"], int(q.get("offset", "0")), int(q.get("limit", "100"))
            start = next((s for s in self._starts if _tokens(s)[0] == cid), None)
            if start is None:
                return 200, js, b"[]"
            _, up, dn = _tokens(start)
            p, _ = _path_prob(start)
            trades = []
            for i in range(W_S // 10):  # one taker trade every 10 s, newest first as the API sorts
                t = start + W_S - 10 * (i + 1)
                pu = float(p[min((t - start) // 60, p.size - 1)])
                buy_up = i % 2 == 0
                trades.append({"proxyWallet": "0x" + "ab" * 20, "side": "BUY", "asset": up if buy_up else dn,
                               "conditionId": cid, "size": 10.0 + i % 7, "price": round(pu if buy_up else 1 - pu, 3),
                               "timestamp": t, "title": "Bitcoin Up or Down", "slug": f"btc-updown-15m-{start}",
                               "outcome": "Up" if buy_up else "Down", "outcomeIndex": 0 if buy_up else 1,
                               "transactionHash": "0x" + f"{t:064x}"})  # fmt: skip
            return 200, js, json.dumps(trades[off : off + lim]).encode()
        if path.startswith("/binance/data/futures/um/daily/aggTrades/BTCUSDT/"):
            day = path.rsplit("-aggTrades-", 1)[-1][:10]
            t0 = int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp() * 1000)
            rng = np.random.default_rng(t0 // 1000)
            n = 86_400 // 20
            ts = t0 + np.sort(rng.integers(0, 86_400_000, n))
            px = 95_000 + np.cumsum(rng.normal(0, 5, n)).round(1)
            lines = ["agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker"]
            lines += [f"{i},{x:.1f},{0.01 + (i % 9) / 100:.3f},{i * 3},{i * 3 + 2},{t},{'true' if i % 3 else 'false'}"
                      for i, (t, x) in enumerate(zip(ts.tolist(), px.tolist(), strict=True))]  # fmt: skip
            return 200, "application/zip", _zip(f"BTCUSDT-aggTrades-{day}.csv", "\n".join(lines) + "\n")
        for kind, root in (("spot", "/binance/data/spot/daily/klines/BTCUSDT/1m/"),
                           ("um", "/binance/data/futures/um/daily/klines/BTCUSDT/1m/")):  # fmt: skip
            if path.startswith(root) and path.endswith(".zip"):
                day = path.rsplit("-1m-", 1)[-1][:10]
                d0 = int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp() * 1000)
                if d0 >= self.last_day_ms:  # not published yet
                    return 404, "application/xml", b"<Error><Code>NoSuchKey</Code></Error>"
                return 200, "application/zip", _zip(f"BTCUSDT-1m-{day}.csv", _klines_csv(kind, d0))
        if path.startswith("/binance/") and path.endswith(".zip.CHECKSUM"):
            status, _, body = self.answer(path[: -len(".CHECKSUM")], q)
            if status != 200 or self.no_checksum:
                return 404, "application/xml", b"<Error><Code>NoSuchKey</Code></Error>"
            name = path[: -len(".CHECKSUM")].rsplit("/", 1)[-1]
            return 200, "text/plain", f"{hashlib.sha256(body).hexdigest()}  {name}\n".encode()
        return 404, js, b'{"error": "not found"}'

    last_day_ms = 1 << 62

    def add_fixed(self, slug: str, start_s: int, end_s: int, yes_won: bool, event_start: bool = False) -> dict:
        """A fixed (non-rolling) Yes/No market served by Gamma ``/markets?slug=`` and ``?condition_ids=``;
        its window is ``startDate`` (or ``eventStartTime`` when ``event_start``) .. ``endDate``."""
        cid, yes, no = _tokens(start_s + 17)
        m: dict[str, object] = {"id": str(start_s), "question": f"Will {slug}?", "conditionId": cid, "slug": slug,
                                "startDate": _iso(start_s - (0 if not event_start else 86_400)),
                                "endDate": _iso(end_s), "outcomes": json.dumps(["Yes", "No"]),
                                "outcomePrices": json.dumps(["1", "0"] if yes_won else ["0", "1"]),
                                "clobTokenIds": json.dumps([yes, no]), "active": True, "closed": True,
                                "orderPriceMinTickSize": 0.01, "negRisk": False}  # fmt: skip
        if event_start:
            m["eventStartTime"] = _iso(start_s)
        self.fixed[slug] = {"market": m, "start": start_s, "end": end_s, "yes": yes, "no": no, "cid": cid}
        return m

    def _fixed_by_token(self, tok: str) -> dict | None:
        return next((f for f in self.fixed.values() if tok in (f["yes"], f["no"])), None)

    _starts: list[int] = []

    def serve_windows(self, starts: list[int]) -> None:
        self._starts = starts
