"""The reader's columnar cache: one ``.cols`` sidecar file per archive object, keyed by the object's etag.

A sidecar holds the validated columns of one object (:mod:`archiver_svc.object_columns`) so a second load reads
arrays instead of gunzipping msgpack. Format: magic, 4-byte header length, JSON header (etag, version, dtypes,
shapes, offsets), raw little-endian data; no pickle, no object dtypes. Written atomically (temp file + rename).
A sidecar of another etag or :data:`SIDECAR_VERSION` is ignored (rebuilt); a corrupt one raises ``ValueError``.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

SIDECAR_VERSION = 2  # 2: rows validated by common.validate (older sidecars are rebuilt)
Arrays = dict[str, npt.NDArray[Any]]


def sidecar_path(cache: Path, key: str) -> Path:
    return cache / (key + ".cols")


SIDECAR_MAGIC = b"FUSIONCOLS\n"


def write_sidecar(path: Path, etag: str, arrays: Arrays) -> None:
    """Columns as one file: magic, 4-byte header length, JSON header (etag, dtypes, shapes, offsets), raw
    little-endian data. Read back with one ``read`` and zero-copy ``frombuffer`` views (no pickle)."""
    fields = []
    offset = 0
    blobs = []
    for name, a in arrays.items():
        a = np.ascontiguousarray(a)
        if a.dtype.hasobject:
            raise ValueError(f"column {name} has object dtype")
        fields.append([name, a.dtype.str, list(a.shape), offset, a.nbytes])
        blobs.append(a.tobytes())
        offset += a.nbytes
    header = json.dumps({"etag": etag, "version": SIDECAR_VERSION, "fields": fields}).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{threading.get_ident()}-{path.name}")
    with open(tmp, "wb") as f:
        f.write(SIDECAR_MAGIC + len(header).to_bytes(4, "little") + header)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def read_sidecar(path: Path, etag: str) -> Arrays | None:
    """The columns when the sidecar exists and matches ``etag``; None otherwise; ValueError if corrupt."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    n = len(SIDECAR_MAGIC)
    if data[:n] != SIDECAR_MAGIC:
        raise ValueError("bad magic")
    hlen = int.from_bytes(data[n : n + 4], "little")
    header = json.loads(data[n + 4 : n + 4 + hlen])
    if header.get("etag") != etag or header.get("version") != SIDECAR_VERSION:
        return None
    base = n + 4 + hlen
    out: Arrays = {}
    for name, dtype, shape, offset, nbytes in header["fields"]:
        dt = np.dtype(dtype)
        if dt.hasobject or base + offset + nbytes > len(data):
            raise ValueError(f"bad column {name}")
        out[name] = np.frombuffer(data, dtype=dt, count=nbytes // max(dt.itemsize, 1), offset=base + offset).reshape(
            shape
        )
    return out
