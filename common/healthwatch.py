"""Runs the health checks of :mod:`common.health` and alerts once per episode (:mod:`common.episodes`).

Where it runs: a daemon thread (:func:`start`) in every archiver and labeler process, while alerts are on. They
are the services that must run anyway for the pipeline, read every stream's groups already, and are not on the
observers' tick path; running in both means the checker survives either of them dying (a dead archiver is then
reported by the labeler's checker as consumer lag). They elect one runner through a Redis lease
(``keys.HEALTH_LEADER``, ``SET NX PX``, renewed by its holder), so the checks run once per period whatever the
number of processes; episodes live in Redis, so a new leader closes the episodes the old one opened.
``fusion health`` runs the same checks once and prints them (``--watch``: the loop in the foreground).

Per round (every ``alert_health_every_s``): each stream's groups (one Lua call per stream), ``INFO memory``, the
recorded starts (:mod:`common.lifecycle`) and the markets' published ticks; each finding opens its episode, each
open episode of these kinds without a finding now is closed ("recovered").
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
import uuid
from typing import Any

import redis

from common import health, held_keys, keys
from common.episodes import Episodes, episodes
from common.health import Finding, GroupLag
from common.lifecycle import recent_starts
from common.log import kv, log_once
from common.names import is_valid_name
from common.settings import Settings, get_settings
from common.streams import connect, scan_streams

log = logging.getLogger("fusion.health")

# KEYS: stream. Returns {top ms or -1, then per group: name, behind ms, lag or -1, pending}.
_GROUP_LAGS = """
local function ms(id) return tonumber(string.match(id, '^(%d+)')) end
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #top == 0 then return {-1} end
local top_ms = ms(top[1][1])
local out = {top_ms}
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local f = {}
  for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
  local oldest = top_ms
  local nxt = redis.call('XRANGE', KEYS[1], '(' .. f['last-delivered-id'], '+', 'COUNT', 1)
  if #nxt > 0 then oldest = ms(nxt[1][1]) end
  local pending = tonumber(f['pending'])
  if pending > 0 then
    local p = redis.call('XPENDING', KEYS[1], f['name'])
    if p[2] and ms(p[2]) < oldest then oldest = ms(p[2]) end
  end
  local lag = f['lag']
  if type(lag) ~= 'number' then lag = -1 end
  out[#out + 1] = f['name']
  out[#out + 1] = top_ms - oldest
  out[#out + 1] = lag
  out[#out + 1] = pending
end
return out
"""


def _s(v: Any) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)


def group_lags(r: redis.Redis) -> list[GroupLag]:
    """Every consumer group of every states/labels/trades stream, with how far it is behind."""
    streams = [s for kind in keys.STREAM_KINDS for s in scan_streams(r, kind)]
    script = r.register_script(_GROUP_LAGS)
    pipe = r.pipeline(transaction=False)
    for s in streams:
        script(keys=[s], client=pipe)
    out = []
    for s, res in zip(streams, pipe.execute(raise_on_error=False), strict=True):
        if isinstance(res, Exception) or not res or int(res[0]) < 0:
            continue
        for i in range(1, len(res) - 3, 4):
            lag = int(res[i + 2])
            out.append(GroupLag(s, _s(res[i]), int(res[i + 1]), None if lag < 0 else lag, int(res[i + 3])))
    return out


def published_ticks(r: redis.Redis) -> dict[str, int]:
    """market -> its newest published tick (ms), for every market that ever published."""
    markets = sorted(m for m in (_s(x) for x in r.smembers(keys.MARKETS_SET)) if is_valid_name(m))
    vals = r.mget([keys.published_tick_key(m) for m in markets]) if markets else []
    return {m: int(v) for m, v in zip(markets, vals, strict=True) if v is not None}


class HealthWatch:
    """The checks of one process: :meth:`run_once` collects, checks and alerts; :meth:`loop` repeats it while this
    process holds the lease. ``clock`` (monotonic seconds) measures how long a published tick has not moved."""

    def __init__(self, r: redis.Redis, settings: Settings, ep: Episodes | None = None, *, ident: str = "",
                 clock: Any = time.monotonic) -> None:  # fmt: skip
        self.r, self.s = r, settings
        self.ep = ep or episodes(settings.redis_url)
        self.ident = ident or uuid.uuid4().hex[:12]
        self.clock = clock
        self._seen: dict[str, tuple[int, float]] = {}  # market -> (published tick, clock when it last moved)
        self._moved: set[str] = set()  # markets whose tick moved while this process watched
        self._stop = threading.Event()

    def findings(self) -> list[Finding]:
        s, now_ms = self.s, int(time.time() * 1000)
        out = health.check_lag(group_lags(self.r), s.alert_lag_s, s.alert_lag_entries)
        mem = self.r.info("memory")
        out += health.check_memory(mem, s.alert_redis_memory_pct, s.alert_redis_memory_bytes)
        starts = recent_starts(self.r, now_ms - int(s.alert_restart_window_s * 1000))
        out += health.check_restarts(starts, now_ms, s.alert_restart_count, s.alert_restart_window_s)
        now = self.clock()
        unchanged: dict[str, tuple[int, float]] = {}
        for m, tick in published_ticks(self.r).items():
            old = self._seen.get(m)
            if old is None or old[0] != tick:
                self._seen[m] = (tick, now)
                if old is not None:
                    self._moved.add(m)
            unchanged[m] = (tick, now - self._seen[m][1])
        return out + health.check_stalled(unchanged, s.alert_stall_s)

    def run_once(self) -> list[Finding]:
        """One round: findings open their episodes; open episodes of these kinds without a finding are closed (a
        stalled stream only once this process saw its tick move)."""
        found = self.findings()
        for f in found:
            self.ep.open(f.kind, f.key, f.text, **f.fields)
        for kind in health.KINDS:
            now_keys = {f.key for f in found if f.kind == kind}
            for key in self.ep.open_keys(kind) - now_keys:
                if kind == health.STALLED and key not in self._moved:
                    continue  # a new leader has not seen this market move yet: not over
                self.ep.close(kind, key, f"{kind} over: {key}")
        return found

    def lead(self) -> bool:
        """Take or renew the lease (TTL: three periods); True while this process holds it."""
        ttl = int(self.s.alert_health_every_s * 3000)
        if self.r.set(keys.HEALTH_LEADER, self.ident, nx=True, px=ttl):
            return True
        return held_keys.renew(self.r, keys.HEALTH_LEADER, self.ident, ttl)

    def loop(self) -> None:
        """Run a round every ``alert_health_every_s`` while leading, until :meth:`stop`. Never raises."""
        while not self._stop.is_set():
            try:
                if self.lead():
                    self.run_once()
            except Exception as e:  # the checker must never take its host service down
                log_once(log, f"health:{type(e).__name__}", "health check round failed", error=repr(e)[:200])
            self._stop.wait(self.s.alert_health_every_s)

    def stop(self) -> None:
        self._stop.set()


def start(settings: Settings | None = None) -> HealthWatch | None:
    """Start the checker thread of this process when alerts are on (None when off)."""
    s = settings or get_settings()
    if not s.alert_webhook_url.get_secret_value():
        return None
    w = HealthWatch(connect(s.redis_url, socket_timeout=10), s)
    threading.Thread(target=w.loop, name="health-watch", daemon=True).start()
    kv(log, logging.INFO, "health checks on", every_s=s.alert_health_every_s)
    return w


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="fusion health", description="run the health checks: consumer lag, Redis "
                                 "memory, restart loops, stalled streams; exit 1 when something is wrong")  # fmt: skip
    ap.add_argument("--json", action="store_true", help="one JSON object per finding")
    ap.add_argument("--watch", action="store_true", help="keep running and alert (as the archiver's checker does)")
    ap.add_argument("--redis-url", default=None)
    a = ap.parse_args(argv)
    s = get_settings()
    r = connect(a.redis_url or s.redis_url)
    w = HealthWatch(r, s, episodes(a.redis_url or s.redis_url))
    if a.watch:
        from common.log import setup_logging

        setup_logging(s.log_level, s.log_json)
        w.loop()
        return 0
    found = w.findings()
    for f in found:
        print(
            json.dumps({"kind": f.kind, "key": f.key, "text": f.text, **f.fields}) if a.json else f"{f.kind}: {f.text}"
        )
    if not found:
        print("healthy" if not a.json else "")
    return 1 if found else 0
