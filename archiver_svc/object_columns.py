"""One decoded archive object -> numpy columns (states or labels), validated row by row.

``state_arrays(obj, problems, key)`` / ``label_arrays(obj, problems, key)`` take either decoded form
(:class:`~archiver_svc.windows.ArchiveObject` or :class:`~archiver_svc.windows.UniformObject`) and return
``{"ids": (N, 2) int64, column: array, ...}`` in entry-ID order. Payloads are decoded in bulk through the layout
templates (:mod:`common.layout`); the rows no template matches are decoded one by one. Every row that fails its
schema or :mod:`common.validate` is left out and reported in ``problems`` as ``"key: entry ID: reason"``; rows of a
minority width are dropped and reported. Pure: no IO.

States written under another feature set (e.g. ``market-v2`` before ``market-v3``) get their features recomputed
from their own raw fields with the current :func:`common.features.market_features` (tick length: the object's
median tick spacing), so an archive holding several feature sets reads back as one, never mixed or refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from archiver_svc.windows import ArchiveObject, UniformObject, parse_ids
from common.features import FEATURE_SET, infer_tick_s, market_features
from common.layout import Extracted, extract, match_matrix
from common.schema import N_RAW, SchemaError, decode_label, decode_state
from common.validate import check_state, row_problems

Arrays = dict[str, npt.NDArray[Any]]


def _prepare(
    obj: ArchiveObject | UniformObject, kind: str
) -> tuple[npt.NDArray[np.int64], list[Extracted], list[int], Callable[[int], bytes], Callable[[int], str]]:
    """(ids, template groups, leftover rows, payload of row, id of row) of either decoded form."""
    if isinstance(obj, UniformObject):
        groups, left = match_matrix(obj.payloads, kind)
        m = obj.payloads
        return obj.ids, groups, left, lambda i: m[i].tobytes(), obj.id_str
    groups, left = extract(obj.payloads, kind)
    return parse_ids(obj.ids), groups, left, obj.payloads.__getitem__, obj.ids.__getitem__


def _current_features(part: Arrays, feature_set: str, ids: npt.NDArray[np.int64]) -> None:
    """Replace the rows' features by the current feature set's, from their raw fields, when stored under another
    (tick length: the object's median tick spacing)."""
    if feature_set != FEATURE_SET and part["tick_ms"].size:
        tick_s = infer_tick_s(ids[:, 0]) if ids.shape[0] else 0.5
        part["features"] = market_features(part["raw"], part["tick_ms"], part["flags"], tick_s=tick_s)


def state_arrays(obj: ArchiveObject | UniformObject, problems: list[str], key: str) -> Arrays:
    ids, groups, left, payload_of, id_of = _prepare(obj, "states")
    parts: list[tuple[npt.NDArray[np.int64], Arrays]] = []
    slugs: dict[str, int] = {}  # per row an index into the object's slugs (no per-row strings)
    for g in groups:
        pm = g.template.values.get("pm")
        slug = str(pm.get("slug", "")) if isinstance(pm, dict) else ""
        n = g.rows.size
        part: Arrays = {
            "tick_ms": g.columns["t"].astype(np.int64),
            "raw": g.columns["x"].view("<f8").reshape(n, N_RAW),
            "features": g.columns["f"].view("<f4").reshape(n, -1),
            "flags": g.columns["st"].astype(np.int32),
            "slug": np.full(n, slugs.setdefault(slug, len(slugs)), np.int32),
        }
        gid = ids[g.rows]
        v = g.template.values
        bad = row_problems(obj.market, gid[:, 0], gid[:, 1], str(v.get("m")), part["tick_ms"], part["raw"],
                           part["features"], str(v.get("fs")))  # fmt: skip
        _current_features(part, str(v.get("fs")), ids)
        parts.append(_without(g.rows, part, bad, problems, key, id_of))
    for i in left:
        try:
            s = decode_state(payload_of(i))
        except SchemaError as e:
            problems.append(f"{key}: entry {id_of(i)}: {e}")
            continue
        why = check_state(obj.market, id_of(i), s)
        if why:
            problems.append(f"{key}: entry {id_of(i)}: {why}")
            continue
        row: Arrays = {
            "tick_ms": np.array([s.tick_ms], np.int64),
            "raw": s.raw.reshape(1, N_RAW),
            "features": s.features.reshape(1, -1),
            "flags": np.array([s.flags], np.int32),
            "slug": np.array([slugs.setdefault(s.pm.slug if s.pm else "", len(slugs))], np.int32),
        }
        _current_features(row, s.feature_set, ids)
        parts.append((np.array([i], np.int64), row))
    out = _assemble(parts, ids, problems, key)
    if "slug" in out:  # the slugs the kept rows use, sorted, and each row's index into them
        names = np.array(list(slugs), dtype=str)
        used = np.unique(out["slug"])
        order = np.argsort(names[used], kind="stable")
        remap = np.zeros(len(names), np.int32)
        remap[used[order]] = np.arange(used.size, dtype=np.int32)
        out["slug_idx"] = remap[out.pop("slug")]
        out["slug_table"] = names[used[order]]
    return out


def label_arrays(obj: ArchiveObject | UniformObject, problems: list[str], key: str) -> Arrays:
    ids, groups, left, payload_of, id_of = _prepare(obj, "labels")
    parts: list[tuple[npt.NDArray[np.int64], Arrays]] = []
    for g in groups:
        hs = np.asarray(g.template.values.get("h", []), dtype=np.int64)
        n, h = g.rows.size, hs.size
        part: Arrays = {
            "tick_ms": g.columns["t"].astype(np.int64),
            "horizons": np.broadcast_to(hs, (n, h)),
            "rewards": g.columns["r"].view("<f4").reshape(n, h, 3),
            "best": g.columns["b"].view(np.int8).reshape(n, h),
            "valid": g.columns["ok"].reshape(n, h),
            "exit_kind": g.columns["xs"].reshape(n, h),
        }
        gid = ids[g.rows]
        bad = row_problems(obj.market, gid[:, 0], gid[:, 1], str(g.template.values.get("m")), part["tick_ms"])
        parts.append(_without(g.rows, part, bad, problems, key, id_of))
    for i in left:
        try:
            lb = decode_label(payload_of(i))
        except SchemaError as e:
            problems.append(f"{key}: entry {id_of(i)}: {e}")
            continue
        one = row_problems(obj.market, ids[i : i + 1, 0], ids[i : i + 1, 1], lb.market,
                           np.array([lb.tick_ms if 0 <= lb.tick_ms < 1 << 63 else -1], np.int64))  # fmt: skip
        if one:
            problems.append(f"{key}: entry {id_of(i)}: {one[0][1]}")
            continue
        row: Arrays = {
            "tick_ms": np.array([lb.tick_ms], np.int64),
            "horizons": np.asarray([lb.horizons_s], np.int64),
            "rewards": lb.rewards[None],
            "best": lb.best[None],
            "valid": lb.valid[None],
            "exit_kind": lb.exit_kind[None],
        }
        parts.append((np.array([i], np.int64), row))
    return _assemble(parts, ids, problems, key)


def _without(
    rows: npt.NDArray[np.int64],
    part: Arrays,
    bad: list[tuple[int, str]],
    problems: list[str],
    key: str,
    id_of: Callable[[int], str],
) -> tuple[npt.NDArray[np.int64], Arrays]:
    """``(rows, part)`` without the rows that failed validation (each reported in ``problems``)."""
    if not bad:
        return rows, part
    problems.extend(f"{key}: entry {id_of(int(rows[j]))}: {why}" for j, why in bad)
    keep = np.ones(rows.size, bool)
    keep[[j for j, _ in bad]] = False
    return rows[keep], {k: v[keep] for k, v in part.items()}


def _assemble(
    parts: list[tuple[npt.NDArray[np.int64], Arrays]], ids: npt.NDArray[np.int64], problems: list[str], key: str
) -> Arrays:
    """Concatenate template groups back into entry order; rows of a minority width are dropped."""
    if not parts:
        return {"ids": ids[:0]}
    widths = [tuple(a.shape[1:] for name, a in sorted(p.items()) if a.ndim > 1) for _, p in parts]
    counts: dict[tuple[Any, ...], int] = {}
    for w, (rows, _) in zip(widths, parts, strict=True):
        counts[w] = counts.get(w, 0) + rows.size
    major = max(counts, key=lambda w: counts[w])
    keep = [(r, p) for w, (r, p) in zip(widths, parts, strict=True) if w == major]
    if len(keep) < len(parts):
        problems.append(f"{key}: {sum(counts.values()) - counts[major]} entries with another shape skipped")
    if len(keep) == 1 and keep[0][0].size == ids.shape[0]:  # one layout for the whole object: in order already
        rows, p = keep[0]
        if rows.size < 2 or bool((rows[1:] > rows[:-1]).all()):
            return {"ids": ids, **p}
    rows = np.concatenate([r for r, _ in keep])
    order = np.argsort(rows, kind="stable")
    out: Arrays = {"ids": ids[rows[order]]}
    for name in keep[0][1]:
        out[name] = np.concatenate([p[name] for _, p in keep])[order]
    return out
