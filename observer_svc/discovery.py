"""Polymarket market discovery over Gamma and CLOB REST (async, never blocks the event loop).

Public API
----------
``Discovery(http: httpx.AsyncClient, gamma_url, clob_url, attempts=4, backoff_s=0.5, backoff_max_s=8.0)``
    ``await series_window(spec, start_s) -> PolymarketWindow | None``   the window starting at ``start_s``
    ``await current_window(spec, now_ms) -> PolymarketWindow | None``   series: the window containing
        ``now_ms`` (else the next one); fixed market: :meth:`fixed_window`
    ``await next_window(spec, after) -> PolymarketWindow | None``       the series window after ``after``
    ``await fixed_window(spec) -> PolymarketWindow | None``             by slug (Gamma) or condition id (CLOB)
``DiscoveryError``   the venue kept failing (after the retries) or answered nonsense
Pure helpers: ``parse_iso_ms``, ``tokens_from_clob``, ``tokens_from_gamma``, ``series_starts`` (the windows
a tick loop needs known: the current one and those starting within the discovery lead).

Rolling series: Gamma ``GET {gamma}/events?slug={asset}-updown-{5m|15m|1h|4h}-{start}`` gives
``events[0].endDate`` (ISO, Z) and ``markets[*].conditionId``; CLOB ``GET {clob}/markets/{conditionId}``
gives ``active``, ``closed`` and ``tokens [{token_id, outcome: Up|Down}]``. The window start is
``eventStartTime`` (market or event) or the event's ``startTime`` when present, else the slug's start
(Gamma's ``startDate`` of these events is their creation time, so it is not used for a series).
Fixed markets: Gamma ``GET {gamma}/markets?slug=`` (its
``clobTokenIds``/``outcomes`` are JSON-encoded strings) or CLOB ``/markets/{conditionId}``; Up = the
"Up"/"Yes" outcome (else the first), Down = "Down"/"No" (else the second); an unknown start is 0.

Guarantees: ``None`` means "not there (yet)" (404, empty list, closed/inactive series window, missing
tokens); transport errors, 5xx and 429 are retried with exponential backoff and full jitter
(``asyncio.sleep``), then raise :class:`DiscoveryError`.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from common.markets import MarketSpec
from common.schema import PolymarketWindow

log = logging.getLogger("observer.discovery")
_UP = ("up", "yes")
_DOWN = ("down", "no")


def series_starts(spec: MarketSpec, now_ms: int, lead_ms: int) -> tuple[list[int], int]:
    """Starts (unix s) of the series windows a tick loop at ``now_ms`` needs known: the current one and
    every one starting within ``lead_ms``; and the event time at which that list next changes."""
    assert spec.interval_s is not None
    iv = int(spec.interval_s)
    first = spec.window_start(now_ms / 1000.0)
    starts = [first]
    while (starts[-1] + iv) * 1000 < now_ms + lead_ms or len(starts) < 2:
        starts.append(starts[-1] + iv)
    return starts, min((first + iv) * 1000, (starts[-1] + iv) * 1000 - lead_ms)


class DiscoveryError(RuntimeError):
    """Discovery failed after its retries (or the venue answered something unusable)."""


class _Transient(Exception):
    pass


def parse_iso_ms(s: Any) -> int | None:
    """ISO-8601 (``Z`` or offset; date-only means midnight UTC) -> unix ms; None when absent/invalid."""
    if not isinstance(s, str) or not s:
        return None
    try:
        dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def _pick(pairs: list[tuple[str, str]]) -> tuple[str, str] | None:
    """(outcome, token) pairs -> (up_token, down_token)."""
    if len(pairs) < 2:
        return None
    up = next((t for o, t in pairs if o.lower() in _UP), None)
    dn = next((t for o, t in pairs if o.lower() in _DOWN), None)
    if up is None or dn is None:
        up, dn = pairs[0][1], pairs[1][1]
    return (up, dn) if up and dn and up != dn else None


def tokens_from_clob(m: Any) -> tuple[str, str] | None:
    toks = m.get("tokens") if isinstance(m, dict) else None
    if not isinstance(toks, list):
        return None
    pairs = [
        (str(t.get("outcome", "")), str(t.get("token_id", "")))
        for t in toks
        if isinstance(t, dict) and t.get("token_id") not in (None, "")
    ]
    return _pick(pairs)


def _json_list(v: Any) -> list[Any]:
    if isinstance(v, list):
        return v
    if isinstance(v, str) and v:
        try:
            out = orjson.loads(v)
        except orjson.JSONDecodeError:
            return []
        return out if isinstance(out, list) else []
    return []


def tokens_from_gamma(m: Any) -> tuple[str, str] | None:
    if not isinstance(m, dict):
        return None
    ids = [str(x) for x in _json_list(m.get("clobTokenIds"))]
    outs = [str(x) for x in _json_list(m.get("outcomes"))]
    if len(outs) != len(ids):
        outs = [""] * len(ids)
    return _pick(list(zip(outs, ids, strict=True)))


class Discovery:
    """Async Gamma/CLOB lookups; see the module docstring."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        gamma_url: str,
        clob_url: str,
        attempts: int = 4,
        backoff_s: float = 0.5,
        backoff_max_s: float = 8.0,
    ) -> None:
        self.http = http
        self.gamma = gamma_url.rstrip("/")
        self.clob = clob_url.rstrip("/")
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s

    # ------------------------------------------------------------------ HTTP
    async def _get_once(self, url: str, params: dict[str, str] | None) -> Any:
        try:
            r = await self.http.get(url, params=params)
        except httpx.TransportError as e:
            raise _Transient(f"{type(e).__name__}: {e}") from e
        if r.status_code == 404:
            return None
        if r.status_code == 429 or r.status_code >= 500:
            raise _Transient(f"HTTP {r.status_code}")
        if r.status_code != 200:
            raise DiscoveryError(f"GET {url}: HTTP {r.status_code}")
        try:
            return orjson.loads(r.content)
        except orjson.JSONDecodeError as e:
            raise DiscoveryError(f"GET {url}: not JSON ({e})") from e

    async def _get(self, url: str, params: dict[str, str] | None = None) -> Any:
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self.attempts),
                wait=wait_random_exponential(multiplier=self.backoff_s, max=self.backoff_max_s),
                retry=retry_if_exception_type(_Transient),
                reraise=True,
            ):
                with attempt:
                    return await self._get_once(url, params)
        except _Transient as e:
            raise DiscoveryError(f"GET {url}: {e} (after {self.attempts} attempts)") from e
        return None  # pragma: no cover (AsyncRetrying always yields)

    async def _clob_market(self, condition_id: str) -> dict[str, Any] | None:
        m = await self._get(f"{self.clob}/markets/{condition_id}")
        return m if isinstance(m, dict) and m.get("tokens") else None

    # ------------------------------------------------------------------ series
    async def series_window(self, spec: MarketSpec, start_s: int) -> PolymarketWindow | None:
        slug = spec.series_slug(start_s)
        events = await self._get(f"{self.gamma}/events", {"slug": slug})
        if not isinstance(events, list) or not events or not isinstance(events[0], dict):
            return None
        ev = events[0]
        markets = [m for m in ev.get("markets") or [] if isinstance(m, dict) and m.get("conditionId")]
        for gm in markets:
            cid = str(gm["conditionId"])
            cm = await self._clob_market(cid)
            if cm is None or cm.get("closed") or not cm.get("active", True):
                continue
            toks = tokens_from_clob(cm) or tokens_from_gamma(gm)
            if toks is None:
                continue
            start = (
                parse_iso_ms(gm.get("eventStartTime"))
                or parse_iso_ms(ev.get("eventStartTime"))
                or parse_iso_ms(ev.get("startTime"))
                or start_s * 1000
            )
            end = parse_iso_ms(ev.get("endDate")) or parse_iso_ms(gm.get("endDate"))
            if end is None:
                end = start + 1000 * (spec.interval_s or 0)
            if end <= start:
                log.warning("discovery: %s has end %s <= start %s", slug, end, start)
                continue
            return PolymarketWindow(slug, cid, toks[0], toks[1], start, end)
        return None

    async def current_window(self, spec: MarketSpec, now_ms: int) -> PolymarketWindow | None:
        if not spec.is_series:
            return await self.fixed_window(spec)
        assert spec.interval_s is not None
        start = spec.window_start(now_ms / 1000.0)
        for k in range(2):
            w = await self.series_window(spec, start + k * spec.interval_s)
            if w is not None and w.end_ms > now_ms:
                return w
        return None

    async def next_window(self, spec: MarketSpec, after: PolymarketWindow) -> PolymarketWindow | None:
        if not spec.is_series:
            return None
        return await self.series_window(spec, after.end_ms // 1000)

    # ------------------------------------------------------------------ fixed
    async def fixed_window(self, spec: MarketSpec) -> PolymarketWindow | None:
        if spec.fixed_slug:
            ms = await self._get(f"{self.gamma}/markets", {"slug": spec.fixed_slug})
            gm = ms[0] if isinstance(ms, list) and ms else ms if isinstance(ms, dict) else None
            if not isinstance(gm, dict) or not gm.get("conditionId"):
                return None
            toks = tokens_from_gamma(gm)
            if toks is None:
                cm = await self._clob_market(str(gm["conditionId"]))
                toks = tokens_from_clob(cm)
            if toks is None:
                return None
            start = parse_iso_ms(gm.get("eventStartTime")) or parse_iso_ms(gm.get("startDate")) or 0
            end = parse_iso_ms(gm.get("endDate")) or 0
            return PolymarketWindow(str(gm.get("slug") or spec.fixed_slug), str(gm["conditionId"]), *toks, start, end)
        if spec.fixed_condition_id:
            cm = await self._clob_market(spec.fixed_condition_id)
            toks = tokens_from_clob(cm)
            if cm is None or toks is None:
                return None
            start = parse_iso_ms(cm.get("game_start_time")) or 0
            end = parse_iso_ms(cm.get("end_date_iso")) or 0
            slug = str(cm.get("market_slug") or spec.fixed_condition_id)
            return PolymarketWindow(slug, str(cm.get("condition_id") or spec.fixed_condition_id), *toks, start, end)
        raise DiscoveryError(f"{spec.name}: neither a series nor a fixed market")
