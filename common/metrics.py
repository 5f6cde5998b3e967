"""Prometheus metrics helpers: one registry per process, served on ``metrics_host:metrics_port`` when set."""

from __future__ import annotations

from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry(auto_describe=True)
_BY_NAME: dict[str, Counter] = {}


def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
    """A process-wide counter; asking again for the same name returns the same counter (modules of
    different venues may share e.g. ``fusion_observer_frames_in{venue}``)."""
    c = _BY_NAME.get(name)
    if c is None:
        c = _BY_NAME[name] = Counter(name, doc, labels, registry=REGISTRY)
    return c


def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
    return Gauge(name, doc, labels, registry=REGISTRY)


def histogram(name: str, doc: str, labels: tuple[str, ...] = (), buckets: tuple[float, ...] = ()) -> Histogram:
    if buckets:
        return Histogram(name, doc, labels, registry=REGISTRY, buckets=buckets)
    return Histogram(name, doc, labels, registry=REGISTRY)


def serve_metrics(port: int, host: str | None = None) -> WSGIServer | None:
    """Expose ``/metrics`` on ``host:port`` (no-op when ``port`` is 0); ``host`` defaults to the
    ``metrics_host`` setting, 127.0.0.1 unless configured. Returns the server (``shutdown()`` stops it)."""
    if not port:
        return None
    if host is None:
        from common.settings import get_settings

        host = get_settings().metrics_host
    server, _thread = start_http_server(port, addr=host, registry=REGISTRY)
    return server


def snapshot() -> dict[str, float]:
    """Current value of every sample (name{labels} -> value), for summaries and tests."""
    out: dict[str, float] = {}
    for metric in REGISTRY.collect():
        for s in metric.samples:
            if s.name.endswith("_created"):
                continue
            lab = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{lab}}}" if lab else s.name] = float(s.value)
    return out
