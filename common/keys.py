"""Every Redis key, stream, group and queue name of the system, in one place.

Per-market keys carry a hash tag (``{MARKET}``) so a Redis Cluster shards by market and
all of one market's keys live in one slot. Every builder that takes a name checks it against
:mod:`common.names`' grammar (raises :class:`common.names.InvalidName`), and :func:`market_of_stream`
never returns a name outside it, so no key built here can alias another market's.
"""

from __future__ import annotations

import re

from common.names import check_name, is_valid_name

PREFIX = "fusion"

# Streams (msgpack payload under the single field ``d``)
PAYLOAD_FIELD = b"d"
EVENTS_STREAM = f"{PREFIX}:events"  # model-updated, model-rejected, ... (global)
TRADES_STREAM = f"{PREFIX}:trades"  # legacy global trade stream: only read (recovery), see trades_stream
DEAD_LETTER_STREAM = f"{PREFIX}:deadletter"  # undecodable entries, with their reason (see common.deadletter)
DEAD_LETTER_BYTES = f"{PREFIX}:deadletter:bytes"  # payload bytes held in the dead-letter stream
DEAD_LETTER_SEEN_PREFIX = f"{PREFIX}:deadletter:seen"  # one marker per parked (stream, entry id)
MARKETS_SET = f"{PREFIX}:markets"  # every market name that ever published a state

# Consumer groups (created with the stream at ID 0 by its producer, so trimming waits for them from the first entry)
ARCHIVER_GROUP = "archiver"
LABELER_GROUP = "labeler"
STATES_GROUPS = (ARCHIVER_GROUP, LABELER_GROUP)
LABELS_GROUPS = (ARCHIVER_GROUP,)
TRADES_GROUPS = (ARCHIVER_GROUP,)
STREAM_KINDS = ("states", "labels", "trades")  # kinds of ``fusion:{NAME}:<kind>`` streams

# Observer leases (market -> holders), see observer_svc.leases
LEASE_PREFIX = f"{PREFIX}:lease"
OBSERVERS_ZSET = f"{PREFIX}:observers"  # observer id -> last heartbeat (ms), lease mode only (the assignment)
# Every observer, either mode (observer_svc.presence): id -> last beat (ms), and what it reports, with a TTL
OBSERVERS_SEEN_ZSET = f"{PREFIX}:observers:seen"
OBSERVER_PRESENCE_PREFIX = f"{PREFIX}:observer"

# RQ
TRAINING_QUEUE = "training"
TRAINING_LOCK_PREFIX = f"{PREFIX}:trainlock"  # one training job per policy at a time
SCHEDULE_KEY = f"{PREFIX}:schedule"

# Trader
TRADER_STATUS_PREFIX = f"{PREFIX}:trader"
MONITOR_PREFIX = f"{PREFIX}:monitor"

# Alerts and health (common.episodes, common.lifecycle, common.healthwatch)
ALERT_EPISODES = f"{PREFIX}:alerts:episodes"  # hash "kind|key" -> JSON {since_ms, ...}: the open alert episodes
HEALTH_LEADER = f"{PREFIX}:health:leader"  # the process that runs the health checks now (value: its id, with a TTL)
ALERT_EPISODES_CLOSED = f"{PREFIX}:alerts:closed"  # hash "kind|key" -> when its last episode ended (ms)
SERVICES_SET = f"{PREFIX}:services"  # "service/instance" of every process that recorded a start
STARTS_PREFIX = f"{PREFIX}:starts"


def states_stream(market: str) -> str:
    """Stream of fused market states, entry ID = tick time ``<tick_ms>-0``."""
    return f"{PREFIX}:{{{check_name(market)}}}:states"


def labels_stream(market: str) -> str:
    """Stream of hindsight labels, entry ID = the labelled state's ID."""
    return f"{PREFIX}:{{{check_name(market)}}}:labels"


def trades_stream(trader: str) -> str:
    """Stream of one trader's records (decisions, fills, refusals, settlements, swaps, day, kill), auto IDs
    (Redis time); archived by the archiver as kind ``trades``, written in one MULTI with its state key."""
    return f"{PREFIX}:{{{check_name(trader, 'trader')}}}:trades"


def published_tick_key(market: str) -> str:
    """Newest tick (ms) an observer published on ``states_stream(market)``: the authority on the tick grid
    (an entry above it + a tolerance was not XADDed by an observer, see common.streams.repair_forged_top)."""
    return f"{PREFIX}:{{{market}}}:published"


def dead_letter_seen_key(stream: str, entry_id: str) -> str:
    """Marker that ``entry_id`` of ``stream`` is parked already (so it is parked once, by the first service)."""
    return f"{DEAD_LETTER_SEEN_PREFIX}:{stream}:{entry_id}"


def archive_lock_key(stream: str, window_start_ms: int) -> str:
    """Lock held by the archiver that merges the stored object of one window of ``stream``."""
    return f"{stream}:archlock:{window_start_ms}"


def lease_key(market: str, slot: int) -> str:
    """Lease of replica slot ``slot`` of ``market`` (value: observer id, with a TTL)."""
    return f"{LEASE_PREFIX}:{{{check_name(market)}}}:{slot}"


def trader_status_key(trader: str) -> str:
    return f"{TRADER_STATUS_PREFIX}:{check_name(trader, 'trader')}:status"


def trader_state_key(trader: str) -> str:
    """Hash ``{seq, d}``: the trader's positions, cash, PnL, day and kill switch (msgpack under ``d``), written in
    the same MULTI as its records on ``trades_stream(trader)`` (see trader_svc.recovery): both carry the hash tag
    ``{trader}``, so a Redis Cluster keeps them in one slot (a MULTI cannot span slots)."""
    return f"{TRADER_STATUS_PREFIX}:{{{check_name(trader, 'trader')}}}:state"


def legacy_trader_state_key(trader: str) -> str:
    """Where the state lived before it carried a hash tag: read once on start when the new key is absent."""
    return f"{TRADER_STATUS_PREFIX}:{check_name(trader, 'trader')}:state"


def trader_command_key(trader: str) -> str:
    """List of operator commands for a trader (``kill-on`` / ``kill-off``, JSON), popped by its housekeeping."""
    return f"{TRADER_STATUS_PREFIX}:{check_name(trader, 'trader')}:commands"


def monitor_state_key(policy: str, trader: str) -> str:
    """Hash of ``fusion monitor`` watching ``policy`` through ``trader``'s records: ``{cursor, fold, machine,
    checked, recent, last}`` (msgpack / JSON), written in one MULTI so a restart resumes where it stopped."""
    return f"{MONITOR_PREFIX}:{check_name(policy, 'policy')}:{check_name(trader, 'trader')}"


def observer_presence_key(observer_id: str) -> str:
    """JSON of what an observer reports (markets, mode, ticks), expiring when it stops beating."""
    return f"{OBSERVER_PRESENCE_PREFIX}:{instance_name(observer_id)}"


def instance_name(text: str) -> str:
    """``text`` (a hostname, an observer id, ...) as a name of the grammar: other characters become ``_``."""
    out = re.sub(r"[^A-Za-z0-9_-]", "_", text)[:128].lstrip("_-")
    return out or "unknown"


def service_starts_key(service: str, instance: str) -> str:
    """Sorted set of the recent starts (score: ms) of one service instance, capped (see common.lifecycle)."""
    return f"{STARTS_PREFIX}:{check_name(service, 'service')}:{check_name(instance, 'service')}"


def training_lock_key(policy: str) -> str:
    return f"{TRAINING_LOCK_PREFIX}:{check_name(policy, 'policy')}"


def market_of_stream(stream: str | bytes) -> tuple[str, str] | None:
    """Parse ``fusion:{M}:states`` / ``fusion:{M}:labels`` / ``fusion:{T}:trades`` into ``(name, kind)`` (for
    trades the name is the trader's); None otherwise, and None when the name is outside the name grammar
    (e.g. ``fusion:{BTC-5M/.}:states``: never another market's)."""
    s = stream.decode(errors="replace") if isinstance(stream, bytes) else stream
    head = f"{PREFIX}:{{"
    if not s.startswith(head):
        return None
    close = s.find("}:", len(head))
    if close < 0:
        return None
    kind = s[close + 2 :]
    if kind not in STREAM_KINDS:
        return None
    market = s[len(head) : close]
    return (market, kind) if is_valid_name(market) else None
