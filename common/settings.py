"""Settings of every service: environment variables with prefix ``FUSION_`` (and a ``.env`` file).

Lists accept JSON (``["a","b"]``) or comma-separated text (``a,b``). Names follow :mod:`common.names`'
grammar (``markets``: the spec syntax of :mod:`common.markets`; ``trader_markets``, ``policy``,
``trader_id``: plain names), else the settings are refused with the rule. The venue endpoints are
plain URL settings: ``feed=sim`` / ``feed=replay`` only point them at the local simulator, so
the live code path is the tested code path.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from common.markets import parse_market
from common.names import check_name

Feed = Literal["live", "sim", "replay"]
Clock = Literal["auto", "wall", "event"]


def _split_list(v: Any) -> Any:
    if isinstance(v, str):
        s = v.strip()
        if s.startswith("["):
            import json

            return json.loads(s)
        return [p.strip() for p in s.split(",") if p.strip()]
    return v


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FUSION_", env_file=".env", extra="ignore")

    # --- infrastructure
    redis_url: str = "redis://127.0.0.1:6379/0"
    log_level: str = "INFO"
    log_json: bool = False
    metrics_port: int = Field(0, description="Prometheus /metrics port; 0 disables")
    metrics_host: str = Field(
        "127.0.0.1", description="address /metrics binds to (0.0.0.0 only where a scraper needs it, e.g. compose)"
    )

    # --- observer
    markets: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["BTC-15M"])
    feed: Feed = "live"
    clock: Clock = Field("auto", description="wall: tick on the wall-clock grid; event: on event time")
    tick_ms: int = Field(500, ge=50, le=60_000)
    sim_url: str = Field("http://127.0.0.1:8765", description="base URL of `fusion sim` / `fusion replay`")
    shared_data: str = Field(
        "", description="opt-in folder of full recordings for bigger runs (benchmarks); default: the repo's excerpts"
    )
    binance_kind: Literal["futures", "spot"] = "futures"
    binance_ws_url: str = "wss://fstream.binance.com"
    binance_rest_url: str = "https://fapi.binance.com"
    binance_streams: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["aggTrade", "kline_1m", "bookTicker", "depth@100ms"]
    )
    binance_reconnect_before_s: float = Field(23 * 3600.0, description="renew before Binance's 24 h cut")
    polymarket_ws_url: str = "wss://ws-subscriptions-clob.polymarket.com/ws/market"
    gamma_url: str = "https://gamma-api.polymarket.com"
    clob_url: str = "https://clob.polymarket.com"
    poly_ping_s: float = 10.0
    poly_watchdog_s: float = Field(30.0, description="resubscribe after this long without market data")
    discovery_lead_s: float = Field(120.0, description="discover the next window this long before expiry")
    stale_binance_ms: int = 5_000
    stale_poly_ms: int = 60_000
    flow_half_life_s: float = 60.0
    large_trade_multiple: float = Field(10.0, description="large trade = notional > k x median")
    max_frame_bytes: int = 1 << 20
    reconnect_base_s: float = 0.5
    reconnect_max_s: float = 30.0
    stream_max_age_s: int = Field(
        2 * 86400, ge=0, description="streams are trimmed to this age (MINID), never below what a consumer group needs"
    )
    stream_trim_every_s: float = Field(60.0, gt=0, description="how often producers trim their streams")
    stream_future_tolerance_ms: int = Field(
        5_000, ge=0, description="a stream top this far above the published tick grid is a forged entry (repaired)"
    )
    replicas: int = Field(1, ge=1, description="observer replicas per market (leases)")
    lease_ttl_s: float = 5.0
    observer_id: str = ""

    # --- store / archive
    store_url: str = Field("file://./fusion-data/store", description="file://DIR or s3://BUCKET/PREFIX")
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    cache_dir: str = "./fusion-data/cache"
    archive_window_s: int = 600
    archive_grace_s: int = 30
    archive_claim_idle_ms: int = 60_000
    archiver_id: str = Field("", description="archiver consumer name, stable across restarts (default: hostname)")
    store_retry_max_s: float = Field(30.0, gt=0, description="longest back-off between writes while the store is down")
    store_down_log_every_s: float = Field(300.0, gt=0, description="log 'store still unavailable' this often")

    # --- labeler
    label_horizons_s: Annotated[list[int], NoDecode] = Field(default_factory=lambda: [30, 60, 300])
    label_tolerance_ms: int = Field(2_000, description="future state must be within this of t + h")
    label_settle_wait_s: int = Field(900, ge=0, description="wait this long after a window's end for its settlement")
    taker_fee_rate: float = 0.07
    taker_fee_exponent: float = 1.0

    # --- trainer / trader
    policy: str = "default"
    train_backend: Literal["auto", "mlx", "torch"] = "auto"
    train_every_h: float = 6.0
    train_after_states: int = 100_000
    train_max_memory_gb: float = Field(
        12.0, gt=0, description="refuse a training job or an archive load estimated to need more memory than this"
    )
    train_scratch_dir: str | None = Field(
        None,
        description="where an awbc job spills its per-market arrays while it trains (default: the system's "
        "temporary directory; about 120 bytes per state, removed when the job ends)",
    )
    trader_id: str = "paper-1"
    trader_markets: Annotated[list[str], NoDecode] = Field(default_factory=list)
    position_usd: float = 100.0
    max_daily_loss_usd: float = Field(500.0, description="kill switch: the day's loss over all the trader's markets")
    max_exposure_usd: float = Field(0.0, ge=0, description="cost of all open positions, every market; 0: no limit")
    max_trades_per_day: int = Field(0, ge=0, description="opens per UTC day, every market; 0: no limit")
    max_model_bytes: int = Field(64 << 20, ge=1, description="a model file above this is refused before reading")
    trader_latency_ms: int = 0
    model_max_age_h: float = Field(
        0.0, ge=0, description="a model created longer ago is refused as stale (trader swap, promote); 0: off"
    )

    # --- monitor (``fusion monitor``: the champion's live results against its hold-out and its backtest)
    monitor_k: int = Field(3, ge=1, description="consecutive windows beyond a bound before the monitor acts")
    monitor_windows: int = Field(12, ge=1, description="live windows in the monitor's rolling mean (at most)")
    monitor_alpha: float = Field(
        0.001, gt=0, lt=0.5, description="lower quantile of the hold-out's mean over as many windows: the bound"
    )
    monitor_gap_bound: float = Field(
        1.0,
        gt=0,
        description="|live - backtest| PnL per window (rolling mean) beyond this x max(|backtest|, 1 stake): at 1.0,"
        " execution lost more than the backtest's whole edge",
    )
    monitor_rollback: bool = Field(False, description="roll the champion back when the monitor trips (else: alert)")
    monitor_every_s: float = Field(10.0, gt=0, description="how often the monitor looks for closed windows")
    monitor_min_coverage: float = Field(
        0.5, ge=0, le=1, description="share of a window the trader must have decided on with one model to judge it"
    )

    # --- ui (``fusion ui``)
    ui_host: str = Field("127.0.0.1", description="address the web UI binds to")
    ui_port: int = Field(8050, ge=0, le=65535)
    ui_token: SecretStr | None = Field(None, description="token that enables the UI's actions; unset: read-only")
    ui_refresh_s: float = Field(5.0, gt=0, description="how often the UI's pages refresh themselves")
    ui_cache_s: float = Field(30.0, ge=0, description="how long the UI reuses a store listing")
    ui_page_markets: int = Field(50, ge=1, description="markets per page of the UI (bounds its cost per refresh)")

    # --- alerts (common.alerts): off while the URL is empty
    alert_webhook_url: SecretStr = Field(SecretStr(""), description="incoming-webhook URL (a secret); empty: off")
    alert_format: Literal["json", "slack", "discord"] = Field("json", description="payload preset of the webhook")
    alert_dedup_s: float = Field(300.0, ge=0, description="the same alert (kind + key) is sent once per this period")
    alert_rate_per_min: int = Field(20, ge=1, description="at most this many alerts per minute; the rest are dropped")
    alert_queue: int = Field(100, ge=1, description="alerts waiting to be sent; when full new ones are dropped")
    alert_timeout_s: float = Field(5.0, gt=0, description="HTTP timeout of one webhook POST")
    alert_gap_s: float = Field(
        30.0, gt=0, description="data-gap: a market's states lack fresh venue data (or a market) this long (tick time)"
    )
    alert_stall_s: float = Field(
        120.0, gt=0, description="stream-stalled: a market's published tick has not moved for this long (wall time)"
    )
    alert_lag_s: float = Field(
        1800.0,
        gt=0,
        description="consumer-lag: a group's oldest unread or unacknowledged entry this far behind the top",
    )
    alert_lag_entries: int = Field(
        50_000, ge=0, description="consumer-lag: this many entries unread by a group; 0: off"
    )
    alert_redis_memory_pct: float = Field(
        80.0, ge=0, description="redis-memory: used memory above this % of Redis's maxmemory (0 or no maxmemory: off)"
    )
    alert_redis_memory_bytes: int = Field(
        0, ge=0, description="redis-memory: used memory above this many bytes; 0: off"
    )
    alert_restart_count: int = Field(5, ge=2, description="restart-loop: this many starts of one service instance ...")
    alert_restart_window_s: float = Field(600.0, gt=0, description="... within this many seconds")
    alert_health_every_s: float = Field(30.0, gt=0, description="how often the health checks run (common.healthwatch)")

    @field_validator("markets", "binance_streams", "trader_markets", mode="before")
    @classmethod
    def _lists(cls, v: Any) -> Any:
        return _split_list(v)

    @field_validator("markets")
    @classmethod
    def _market_specs(cls, v: list[str]) -> list[str]:
        for spec in v:
            parse_market(spec)  # MarketSpecError (a ValueError) names the grammar
        return v

    @field_validator("trader_markets")
    @classmethod
    def _market_names(cls, v: list[str]) -> list[str]:
        return [check_name(m, "market") for m in v]

    @field_validator("policy")
    @classmethod
    def _policy_name(cls, v: str) -> str:
        return check_name(v, "policy")

    @field_validator("trader_id")
    @classmethod
    def _trader_name(cls, v: str) -> str:
        return check_name(v, "trader")

    @field_validator("label_horizons_s", mode="before")
    @classmethod
    def _int_lists(cls, v: Any) -> Any:
        v = _split_list(v)
        return [int(x) for x in v] if isinstance(v, list) else v

    # ---------------------------------------------------------------- derived
    @property
    def market_names(self) -> list[str]:
        """The names of ``markets`` (a spec ``NAME=slug:..@SYM`` -> ``NAME``; ``btc-15m`` -> ``BTC-15M``)."""
        return [parse_market(m).name for m in self.markets]

    @property
    def event_clock(self) -> bool:
        """Tick on event time (replays are deterministic) or on the wall clock (live)."""
        if self.clock == "auto":
            return self.feed != "live"
        return self.clock == "event"

    def venue_urls(self) -> dict[str, str]:
        """Effective endpoints: the configured ones live, the simulator's otherwise."""
        if self.feed == "live":
            return {
                "binance_ws": self.binance_ws_url,
                "binance_rest": self.binance_rest_url,
                "polymarket_ws": self.polymarket_ws_url,
                "gamma": self.gamma_url,
                "clob": self.clob_url,
            }
        base = self.sim_url.rstrip("/")
        ws = base.replace("http://", "ws://").replace("https://", "wss://")
        return {
            "binance_ws": f"{ws}/binance",
            "binance_rest": f"{base}/binance",
            "polymarket_ws": f"{ws}/polymarket/ws/market",
            "gamma": f"{base}/gamma",
            "clob": f"{base}/clob",
        }


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
