"""Shared pieces of the simulator: output records, Polymarket windows, the driver interface.

A driver is a pure, deterministic event source: ``steps()`` yields ``(sim_time_ms, [Out...])`` in
event-time order and the server only paces, routes and serialises. REST answers come from the
driver's current state (``now_ms`` is the time of the last step handed out).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import orjson

from observer_svc.sim import wire_out as wo

ASSET_NAMES = {"btc": "Bitcoin", "eth": "Ethereum", "sol": "Solana", "xrp": "XRP", "doge": "Dogecoin"}
try:
    _ET: Any = ZoneInfo("America/New_York")
except Exception:  # pragma: no cover - no tz database
    _ET = UTC


@dataclass(slots=True)
class BOut:
    """One Binance frame for stream ``stream`` (e.g. ``btcusdt@aggTrade``): ``data`` (or ``make()``) to
    serialise, or ``raw`` = the exact recorded combined-stream frame (sent byte for byte)."""

    stream: str
    data: dict | None = None
    raw: bytes | None = None
    make: Callable[[], dict] | None = None  # lazy ``data``: only called when someone subscribed

    def payload(self) -> dict:
        if self.data is None and self.make is not None:
            self.data = self.make()
        return self.data if self.data is not None else orjson.loads(self.raw or b"null")["data"]


@dataclass(slots=True)
class POut:
    """One Polymarket frame: a single event object, or a JSON array when ``as_array``.

    Routed to connections subscribed to any of ``assets`` (all custom-feature connections when
    ``broadcast``); ``custom`` events go only to ``custom_feature_enabled`` subscribers."""

    assets: tuple[str, ...]
    events: list[dict]
    as_array: bool = False
    custom: bool = False
    broadcast: bool = False

    def encode(self) -> bytes:
        if self.as_array or len(self.events) != 1:
            return wo.dumps(self.events)
        return wo.dumps(self.events[0])


@dataclass(slots=True)
class End:
    """The driver has no more data for ``venue``: its sockets get a normal close ("end of data")."""

    venue: str


Out = BOut | POut | End


@dataclass(slots=True)
class PolyWindow:
    """One Polymarket Up/Down market (a window of a rolling series, or a fixed market)."""

    market: str  # our market name (e.g. BTC-15M)
    symbol: str  # paired Binance symbol
    slug: str
    start_ms: int
    end_ms: int
    cid: str = ""
    up: str = ""
    down: str = ""
    question: str = ""
    market_id: str = ""
    event_id: str = ""
    created_ms: int = 0
    winner_up: bool | None = None
    resolved: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.cid:
            self.cid = wo.condition_id(self.slug)
        if not self.up:
            self.up, self.down = wo.token_ids(self.slug)
        self.market_id = self.market_id or wo.numeric_id(self.slug, "market")
        self.event_id = self.event_id or wo.numeric_id(self.slug, "event")
        self.created_ms = self.created_ms or (self.start_ms - 86_400_000)
        if not self.question:
            self.question = question_for(self.slug, self.start_ms, self.end_ms)


def question_for(slug: str, start_ms: int, end_ms: int) -> str:
    """ "Bitcoin Up or Down - January 1, 4:45PM-5:00PM ET", as the live series titles read."""
    name = ASSET_NAMES.get(slug.split("-", 1)[0], slug.split("-", 1)[0].upper())
    a = datetime.fromtimestamp(start_ms / 1000, tz=_ET)
    b = datetime.fromtimestamp(end_ms / 1000, tz=_ET)

    def hm(d: datetime) -> str:
        return d.strftime("%I:%M%p").lstrip("0")

    return f"{name} Up or Down - {a.strftime('%B')} {a.day}, {hm(a)}-{hm(b)} ET"


class Driver(ABC):
    """Interface the server uses. Subclasses: SyntheticDriver, RecordedDriver."""

    name = "driver"
    binance_kind = "futures"  # shapes of the Binance frames this driver emits
    speed: float = 1.0
    wait_for_clients = False  # start the clock only once a client subscribed
    exact_streams = False  # recorded frames: no stream-name aliasing (bytes are fixed)
    max_gap_ms: int | None = None  # paced replay jumps over event-time gaps longer than this
    # recorded rows: hold a Polymarket book for tokens nobody subscribed yet (the observer subscribes a
    # window's tokens once event time reached it) instead of dropping it; give up after this many seconds
    hold_unsubscribed_s: float | None = None
    now_ms: int = 0

    @abstractmethod
    def steps(self) -> Iterator[tuple[int, list[Out]]]:
        """(sim time ms, outputs) in time order."""

    def venues(self) -> set[str]:
        """Venues with data: subset of {"binance", "polymarket"}."""
        return {"binance", "polymarket"}

    # ---- Binance REST (None = unknown symbol)
    def depth(self, symbol: str, limit: int, futures: bool) -> bytes | dict | None:
        return None

    def klines(self, symbol: str, limit: int, start: int | None, end: int | None) -> list | None:
        return None

    def last_price(self, symbol: str) -> str | None:
        return None

    # ---- Polymarket state
    def windows(self) -> list[PolyWindow]:
        return []

    def window_by_slug(self, slug: str) -> PolyWindow | None:
        return next((w for w in self.windows() if w.slug == slug), None)

    def window_by_cid(self, cid: str) -> PolyWindow | None:
        return next((w for w in self.windows() if w.cid == cid), None)

    def window_by_token(self, token: str) -> PolyWindow | None:
        return next((w for w in self.windows() if token in (w.up, w.down)), None)

    def up_price(self, w: PolyWindow) -> float:
        return 0.5

    def book_event(self, asset: str) -> dict | None:
        """Current ``book`` event of an asset (initial dump on subscribe), None if no book."""
        return None

    def status(self) -> dict:
        return {}


class SimControl(Protocol):
    """What the REST routes (:mod:`observer_svc.sim.rest`) see of the running server: the driver, the simulated
    clock, the Polymarket silence switch and the three control actions. :class:`~observer_svc.sim.server.SimServer`
    implements it; the routes never import the server (one way: server -> rest -> core)."""

    driver: Driver
    sim_now: int
    poly_silent_until: int

    def status(self) -> dict[str, Any]: ...

    def inject(self, venue: str, oversize: int) -> int: ...

    def drop(self, venue: str) -> int: ...
