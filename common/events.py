"""The model events on ``fusion:events`` (msgpack under ``d``): their payloads, in one place.

* ``model-updated`` ``{v, type, policy, version, uri, sha256, ts}``: ``version`` is the new champion
  (:func:`common.artefact.promote`).
* ``model-rolled-back`` ``{v, type, policy, version, uri, sha256, ts, previous, reason}``: ``version`` is the new
  champion (the one before ``previous``), ``reason`` says why (the monitor's rule, or "by hand")
  (:func:`common.artefact.rollback`).

Both name a champion to serve: a consumer (the trader) treats them alike, after checking the names. ``reason`` is
capped at ``MAX_REASON`` characters and ``previous`` follows the version grammar, so a hostile event cannot make a
consumer log or store more than that.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import msgpack

from common import keys
from common.names import check_name

EVENT_VERSION = 1
MODEL_UPDATED = "model-updated"
MODEL_ROLLED_BACK = "model-rolled-back"
CHAMPION_EVENTS = (MODEL_UPDATED, MODEL_ROLLED_BACK)  # events that name a champion to serve
MAX_REASON = 500


def _champion_msg(kind: str, policy: str, ptr: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "v": EVENT_VERSION,
        "type": kind,
        "policy": check_name(policy, "policy"),
        "version": check_name(ptr["version"], "version"),
        "uri": ptr["uri"],
        "sha256": ptr["sha256"],
        "ts": int(time.time() * 1000),
    }


def _xadd(redis: Any, msg: dict[str, Any]) -> bytes:
    eid: bytes = redis.xadd(keys.EVENTS_STREAM, {keys.PAYLOAD_FIELD: msgpack.packb(msg, use_bin_type=True)})
    return eid


def publish_model_updated(redis: Any, policy: str, ptr: Mapping[str, Any]) -> bytes:
    """XADD ``{v, type: model-updated, policy, version, uri, sha256, ts}``."""
    return _xadd(redis, _champion_msg(MODEL_UPDATED, policy, ptr))


def publish_model_rolled_back(redis: Any, policy: str, ptr: Mapping[str, Any], previous: str, reason: str) -> bytes:
    """XADD ``{v, type: model-rolled-back, policy, version, uri, sha256, ts, previous, reason}``: ``ptr`` is the
    champion rolled back to, ``previous`` the version it replaces."""
    msg = _champion_msg(MODEL_ROLLED_BACK, policy, ptr)
    msg.update(previous=check_name(previous, "version"), reason=str(reason)[:MAX_REASON])
    return _xadd(redis, msg)
