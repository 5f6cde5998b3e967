"""A local HTTP server answering like the public venues ``fusion backfill`` reads, in their response shapes
(Gamma ``/events``, CLOB ``/prices-history``, data API ``/trades``, Binance's daily dump zips), on 127.0.0.1.

Synthetic content, deterministic per window; ``fail`` injects faults: path-substring -> number of 500s (or
429s with ``Retry-After: 0``) to answer before answering properly (-1: always).
"""

from __future__ import annotations

import io
import json
import threading
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


class Venues:
    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.fail: dict[str, int] = {}
        self.fail_status = 500
        venues = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                u = urlsplit(self.path)
                venues.hits[u.path] += 1
                for frag, n in list(venues.fail.items()):
                    if frag in self.path and n != 0:
                        venues.fail[frag] = n - 1 if n > 0 else n
                        self.send_response(venues.fail_status)
                        self.send_header("Retry-After", "0")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                status, ctype, body = venues.answer(u.path, {k: v[0] for k, v in parse_qs(u.query).items()})
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
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
                z.writestr(f"BTCUSDT-aggTrades-{day}.csv", "\n".join(lines) + "\n")
            return 200, "application/zip", buf.getvalue()
        return 404, js, b'{"error": "not found"}'

    _starts: list[int] = []

    def serve_windows(self, starts: list[int]) -> None:
        self._starts = starts
