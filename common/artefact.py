"""The model artefact: the one contract between the trainer (writes through it) and the trader (reads through
it), in an object store (a local directory or S3, same keys).

Layout (DESIGN.md): ``models/{policy}/{version}/model.safetensors`` (float32 weights),
``models/{policy}/{version}/meta.json`` (the trainer's fields plus ``policy, version, sha256, uri, size_bytes,
created``, ``report``), ``models/{policy}/{version}/report.html`` (optional), ``models/{policy}/champion.json`` ->
``{version, uri, sha256, promoted_at}`` and ``models/{policy}/champion-history.json`` (for rollback).

Guarantees: a version's files are written once (``put_if_absent``; the weights before meta.json, so
a listed version is complete); :func:`load_model` verifies the sha256 (and the expected one, if
given) and the architecture before returning weights, else raises :class:`ModelError`;
:func:`fetch_verified` (serving) also enforces size limits before reading and meta's features and
architecture and freshness (:mod:`common.modelcheck`), raising :class:`ModelRejected` whose ``kind`` names the
failed check; a stale version is never made champion (:func:`promote`, :func:`rollback`). The ``model-updated`` /
``model-rolled-back`` events (:mod:`common.events`) are published only by :func:`promote` / :func:`rollback`. No
pickle.
Policies and versions follow :mod:`common.names`' grammar (versions made here: ``YYYYmmddTHHMMSSZ-xxxxxx``):
every key is built by :func:`model_prefix`, which raises :class:`ModelError` for any other name, and
listings skip folders whose names are outside it.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from common import events
from common.alerts import notify
from common.metrics import counter
from common.modelcheck import ModelRejected as ModelRejected  # re-exported: callers name them common.artefact.*
from common.modelcheck import check_fresh as check_fresh
from common.modelcheck import check_meta as check_meta
from common.modelcheck import rejected_weights as rejected_weights
from common.names import InvalidName, NameKind, check_name, is_valid_name
from common.policy import WeightsError, check_weights
from common.store import ObjectStore

F32 = npt.NDArray[np.float32]
EVENT_VERSION = events.EVENT_VERSION
MAX_MODEL_BYTES = 64 << 20  # default of ``FUSION_MAX_MODEL_BYTES``
MAX_META_BYTES = 1 << 20
STALE = counter("fusion_models_stale_refused_total", "models refused as stale", ("where",))


class ModelError(ValueError):
    """A model that is missing, fails its checksum or does not match the architecture."""


class ChampionError(ModelError):
    """``champion.json`` exists but is not a pointer (not JSON, not an object, bad version or sha256)."""


@dataclass(frozen=True, slots=True)
class ModelRef:
    policy: str
    version: str
    uri: str
    sha256: str


def checked_name(kind: NameKind, v: object) -> str:
    """``v`` when it follows the name grammar; :class:`ModelError` (with the rule) otherwise."""
    try:
        return check_name(v, kind)
    except InvalidName as e:
        raise ModelError(str(e)) from None


def model_prefix(policy: str, version: str | None = None) -> str:
    """``models/{policy}/`` or ``models/{policy}/{version}/``; :class:`ModelError` for a name outside the grammar."""
    p = f"models/{checked_name('policy', policy)}/"
    return p + f"{checked_name('version', version)}/" if version is not None else p


def uri_of(store: ObjectStore, key: str) -> str:
    return f"{store.url.rstrip('/')}/{key}"


def new_version(now: float | None = None, salt: bytes = b"") -> str:
    t = time.gmtime(now if now is not None else time.time())
    return (
        time.strftime("%Y%m%dT%H%M%SZ", t) + "-" + hashlib.sha256(salt or str(time.time_ns()).encode()).hexdigest()[:6]
    )


def weights_bytes(weights: Mapping[str, Any]) -> bytes:
    arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in sorted(weights.items())}
    return bytes(st_save(arrays, metadata={"format": "mlp-ln-tanh"}))


def save_model(
    store: ObjectStore,
    policy: str,
    weights: Mapping[str, Any],
    meta: Mapping[str, Any],
    version: str | None = None,
    report_html: str | None = None,
) -> ModelRef:
    """Write a new immutable version; returns its reference. ``meta`` gains policy, version, sha256, uri."""
    check_weights(weights)
    data = weights_bytes(weights)
    sha = hashlib.sha256(data).hexdigest()
    version = version or new_version(salt=data)
    prefix = model_prefix(policy, version)
    wkey = prefix + "model.safetensors"
    if not store.put_if_absent(wkey, data):
        raise ModelError(f"version {policy}/{version} already exists")
    full = {**meta, "policy": policy, "version": version, "sha256": sha, "uri": uri_of(store, wkey),
            "size_bytes": len(data)}  # fmt: skip
    full.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    if report_html is not None:
        store.put(prefix + "report.html", report_html.encode())
        full["report"] = uri_of(store, prefix + "report.html")
    store.put(prefix + "meta.json", json.dumps(full, indent=2, sort_keys=True, default=_json_default).encode())
    return ModelRef(policy, version, full["uri"], sha)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_meta(store: ObjectStore, policy: str, version: str) -> dict[str, Any]:
    try:
        meta: dict[str, Any] = json.loads(store.get(model_prefix(policy, version) + "meta.json"))
    except KeyError:
        raise ModelError(f"no model {policy}/{version}") from None
    return meta


def parse_weights(data: bytes, expect_sha256: str | None = None) -> dict[str, F32]:
    """Weights from safetensors bytes after checking the sha256 and the architecture."""
    sha = hashlib.sha256(data).hexdigest()
    if expect_sha256 is not None and sha != expect_sha256:
        raise ModelError(f"sha256 mismatch: file {sha[:12]}..., expected {expect_sha256[:12]}...")
    try:
        weights = st_load(data)
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise ModelError(f"not a safetensors file: {e}") from e
    try:
        check_weights(weights)
    except WeightsError as e:
        raise ModelError(str(e)) from e
    return weights


def load_model(
    store: ObjectStore, policy: str, version: str | None = None, expect_sha256: str | None = None
) -> tuple[dict[str, F32], dict[str, Any]]:
    """(weights, meta) of a version (default: the champion), verified against meta's sha256 and
    ``expect_sha256`` when given."""
    if version is None:
        champ = champion(store, policy)
        if champ is None:
            raise ModelError(f"policy {policy} has no champion")
        version, expect_sha256 = champ["version"], expect_sha256 or champ["sha256"]
    meta = read_meta(store, policy, version)
    if expect_sha256 is not None and meta.get("sha256") != expect_sha256:
        raise ModelError(f"meta sha256 {str(meta.get('sha256'))[:12]} != expected {expect_sha256[:12]}")
    try:
        data = store.get(model_prefix(policy, version) + "model.safetensors")
    except KeyError:
        raise ModelError(f"weights of {policy}/{version} missing") from None
    return parse_weights(data, meta.get("sha256")), meta


def list_versions(store: ObjectStore, policy: str) -> list[str]:
    out = set()
    for info in store.list(model_prefix(policy)):
        parts = info.key.split("/")
        if len(parts) == 4 and parts[3] == "meta.json" and is_valid_name(parts[2]):
            out.add(parts[2])
    return sorted(out)


def list_policies(store: ObjectStore) -> list[str]:
    names = {i.key.split("/")[1] for i in store.list("models/") if i.key.count("/") >= 2}
    return sorted(n for n in names if is_valid_name(n))


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def champion(store: ObjectStore, policy: str) -> dict[str, Any] | None:
    """The champion pointer ``{version, uri, sha256, promoted_at}``; None when there is none. Raises
    :class:`ChampionError` when ``champion.json`` exists but cannot be read as a pointer."""
    key = model_prefix(policy) + "champion.json"
    try:
        raw = store.get(key)
    except KeyError:
        return None
    try:
        d = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ChampionError(f"{key} is not JSON ({len(raw)} bytes): {e}") from None
    if not isinstance(d, dict):
        raise ChampionError(f"{key} is not an object")
    if not isinstance(d.get("version"), str) or not d["version"]:
        raise ChampionError(f"{key} has no version")
    if not isinstance(d.get("sha256"), str) or not _SHA256.match(d["sha256"]):
        raise ChampionError(f"{key} has no valid sha256")
    return d


def _history(store: ObjectStore, policy: str) -> list[dict[str, Any]]:
    try:
        h: list[dict[str, Any]] = json.loads(store.get(model_prefix(policy) + "champion-history.json"))
        return h
    except KeyError:
        return []


def _set_champion(
    store: ObjectStore, policy: str, version: str, history: list[dict[str, Any]], max_age_h: float | None
) -> dict[str, Any]:
    meta = read_meta(store, policy, version)
    try:
        check_fresh(meta, _max_age(max_age_h))
    except ModelRejected as e:
        STALE.labels("registry").inc()
        notify("model-stale", f"{policy} {version} refused: {e.reason}", key=f"{policy}/{version}", policy=policy,
               version=version)  # fmt: skip
        raise ModelError(f"{policy}/{version} refused: {e.reason}") from None
    load_model(store, policy, version)  # refuses a corrupt version before it becomes champion
    ptr = {
        "version": version,
        "uri": meta["uri"],
        "sha256": meta["sha256"],
        "promoted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    try:
        champion(store, policy)
    except ChampionError:  # an explicit promotion replaces an unreadable pointer: keep its bytes for inspection
        key = model_prefix(policy) + "champion.json"
        store.put(f"quarantine/{key}.{int(time.time() * 1000)}", store.get(key))
    store.put(model_prefix(policy) + "champion-history.json", json.dumps(history + [ptr], indent=1).encode())
    store.put(model_prefix(policy) + "champion.json", json.dumps(ptr, indent=2).encode())
    return ptr


def publish_model_updated(redis: Any, policy: str, ptr: Mapping[str, Any]) -> bytes:
    """:func:`common.events.publish_model_updated`; :class:`ModelError` for a name outside the grammar."""
    try:
        return events.publish_model_updated(redis, policy, ptr)
    except InvalidName as e:
        raise ModelError(str(e)) from None


def _max_age(max_age_h: float | None) -> float:
    if max_age_h is not None:
        return max_age_h
    from common.settings import get_settings

    return get_settings().model_max_age_h


def promote(
    store: ObjectStore, policy: str, version: str, redis: Any = None, max_age_h: float | None = None
) -> dict[str, Any]:
    """Make ``version`` the champion (verified first, refused when stale: :func:`check_fresh` with ``max_age_h``,
    default ``FUSION_MODEL_MAX_AGE_H``) and publish ``model-updated`` if ``redis``; alert."""
    ptr = _set_champion(store, policy, version, _history(store, policy), max_age_h)
    if redis is not None:
        publish_model_updated(redis, policy, ptr)
    notify("model-promoted", f"{policy} {version} is the champion", key=f"{policy}/{version}", policy=policy,
           version=version)  # fmt: skip
    return ptr


def rollback(
    store: ObjectStore, policy: str, redis: Any = None, reason: str = "by hand", max_age_h: float | None = None
) -> dict[str, Any]:
    """Re-promote the champion before the current one (checked as :func:`promote` checks) and publish
    ``model-rolled-back`` with ``reason`` if ``redis``; alert."""
    hist = _history(store, policy)
    if len(hist) < 2:
        raise ModelError(f"policy {policy} has no previous champion to roll back to")
    ptr = _set_champion(store, policy, hist[-2]["version"], hist[:-2], max_age_h)
    old, new = hist[-1]["version"], ptr["version"]
    if redis is not None:
        try:
            events.publish_model_rolled_back(redis, policy, ptr, old, reason)
        except InvalidName as e:
            raise ModelError(str(e)) from None
    notify("model-rolled-back", f"{policy} rolled back from {old} to {new}: {reason}", key=f"{policy}/{new}",
           policy=policy, version=new, previous=old, reason=reason)  # fmt: skip
    return ptr


# ------------------------------------------------------------------ verification for serving


@dataclass(slots=True)
class VerifiedArtefact:
    """Weights and meta of a version that passed every check of :func:`fetch_verified`."""

    weights: dict[str, F32]
    meta: dict[str, Any]
    sha256: str
    hidden: int
    timings_s: dict[str, float] = field(default_factory=dict)  # download_s, verify_s


def _check_size(name: str, size: int, limit: int, how: str) -> None:
    if size > limit:
        raise ModelRejected("size", f"{name} is {size} bytes ({how}) > limit {limit} (FUSION_MAX_MODEL_BYTES)")


def fetch_verified(
    store: ObjectStore,
    policy: str,
    version: str,
    expect_sha256: str | None = None,
    uri: str | None = None,
    max_bytes: int = MAX_MODEL_BYTES,
    max_age_h: float = 0.0,
) -> VerifiedArtefact:
    """Download and verify ``policy/version`` for serving, in this order: names, sizes (the store's object
    sizes and meta's ``size_bytes`` before the weights are read, then the bytes read), sha256 (meta's and
    ``expect_sha256``), freshness (:func:`check_fresh` with ``max_age_h``), meta (:func:`check_meta`), safetensors
    format, weights (names, shapes, finite).
    Raises :class:`ModelRejected`."""
    t0 = time.perf_counter()
    try:
        prefix = model_prefix(policy, version)
    except ValueError as e:
        raise ModelRejected("missing", str(e)) from e
    wkey = prefix + "model.safetensors"
    if uri is not None and not uri.endswith(wkey):
        raise ModelRejected("missing", f"uri {uri!r} does not name {wkey!r}")
    try:
        sizes = {i.key: i.size for i in store.list(prefix)}  # object sizes, no bytes read
        _check_size("model.safetensors", sizes.get(wkey, 0), max_bytes, "in the store")
        _check_size("meta.json", sizes.get(prefix + "meta.json", 0), MAX_META_BYTES, "in the store")
        meta = json.loads(store.get(prefix + "meta.json"))
        if isinstance(meta, dict) and isinstance(meta.get("size_bytes"), int):
            _check_size("model.safetensors", meta["size_bytes"], max_bytes, "declared by meta.json")
        data = store.get(wkey)
        _check_size("model.safetensors", len(data), max_bytes, "read")  # replaced since it was listed
    except ModelRejected:
        raise
    except KeyError as e:
        raise ModelRejected("missing", f"{e.args[0]} not in the store") from None
    except ValueError as e:
        raise ModelRejected("missing", f"meta.json is not JSON: {e}") from None
    if not isinstance(meta, dict):
        raise ModelRejected("missing", "meta.json is not an object")
    t1 = time.perf_counter()
    sha = hashlib.sha256(data).hexdigest()
    if meta.get("sha256") != sha:
        raise ModelRejected("sha256", f"file {sha[:12]}... != meta.json {str(meta.get('sha256'))[:12]}...")
    if expect_sha256 is not None and expect_sha256 != sha:
        raise ModelRejected("sha256", f"file {sha[:12]}... != announced {expect_sha256[:12]}...")
    check_fresh(meta, max_age_h)
    hidden = check_meta(meta)
    try:
        weights: dict[str, F32] = st_load(data)
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise ModelRejected("format", f"not a safetensors file: {e}") from e
    try:
        check_weights(weights, hidden=hidden)
    except WeightsError as e:
        raise rejected_weights(e) from e
    t2 = time.perf_counter()
    return VerifiedArtefact(weights, meta, sha, hidden, {"download_s": t1 - t0, "verify_s": t2 - t1})
