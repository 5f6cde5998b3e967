"""A self-contained training report: one HTML file with inline SVG charts (no matplotlib, no JS,
no external assets): the learning curve and the hold-out equity curves against the baselines,
plus the metrics table and the promotion decision."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf")


def svg_lines(series: Mapping[str, Sequence[float]], title: str, xlabel: str, w: int = 640, h: int = 300) -> str:
    pad_l, pad_r, pad_t, pad_b = 60, 130, 28, 36
    vals = [np.asarray(v, dtype=np.float64) for v in series.values() if len(v)]
    if not vals:
        return f"<p>{html.escape(title)}: no data</p>"
    lo = min(float(np.nanmin(v)) for v in vals)
    hi = max(float(np.nanmax(v)) for v in vals)
    lo, hi = (lo - 1, hi + 1) if hi == lo else (lo, hi)
    n = max(len(v) for v in vals)
    pw, ph = w - pad_l - pad_r, h - pad_t - pad_b

    def xy(i: int, y: float) -> str:
        x = pad_l + (pw * i / max(n - 1, 1))
        yy = pad_t + ph * (1 - (y - lo) / (hi - lo))
        return f"{x:.1f},{yy:.1f}"

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
        f'<text x="{pad_l}" y="16" font-size="13">{html.escape(title)}</text>',
        f'<rect x="{pad_l}" y="{pad_t}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>',
        f'<text x="{pad_l - 4}" y="{pad_t + 4}" text-anchor="end">{hi:.3g}</text>',
        f'<text x="{pad_l - 4}" y="{pad_t + ph}" text-anchor="end">{lo:.3g}</text>',
        f'<text x="{pad_l + pw / 2}" y="{h - 6}" text-anchor="middle">{html.escape(xlabel)}</text>',
    ]
    if lo < 0 < hi:
        y0 = pad_t + ph * (1 - (0 - lo) / (hi - lo))
        parts.append(
            f'<line x1="{pad_l}" x2="{pad_l + pw}" y1="{y0:.1f}" y2="{y0:.1f}" stroke="#ccc" stroke-dasharray="4"/>'
        )
    for k, (name, v) in enumerate(series.items()):
        c = COLORS[k % len(COLORS)]
        pts = " ".join(xy(i, float(y)) for i, y in enumerate(v) if np.isfinite(y))
        parts.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.6" points="{pts}"/>')
        parts.append(f'<text x="{pad_l + pw + 8}" y="{pad_t + 14 * (k + 1)}" fill="{c}">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def render(
    summary: Mapping[str, Any],
    history: Sequence[Mapping[str, Any]],
    equity: Mapping[str, Sequence[float]],
    heading: str | None = None,
) -> str:
    """The report page for one training run (or a backtest: ``heading`` replaces the promotion decision)."""
    learn: dict[str, list[float]] = {}
    for key in ("loss", "val_pnl", "mean_reward"):
        vals = [float(h[key]) for h in history if key in h]
        if vals:
            learn[key] = vals
    charts = [svg_lines({k: v}, f"learning curve: {k}", "epoch / iteration") for k, v in learn.items()]
    charts.append(svg_lines(equity, "hold-out equity (cumulative PnL per window, stake units)", "hold-out window"))
    rows = []
    for name, m in summary.get("holdout", {}).items():
        ci = m.get("pnl_per_window_ci95", ["", ""])
        rows.append(
            f"<tr><td>{html.escape(name)}</td><td>{m.get('pnl', '')}</td><td>{m.get('roi', '')}</td>"
            f"<td>{m.get('trades', '')}</td><td>{m.get('win_rate', '')}</td><td>{m.get('max_drawdown', '')}</td>"
            f"<td>{m.get('pnl_per_window', '')}</td><td>[{ci[0]}, {ci[1]}]</td></tr>"
        )
    decision = summary.get("decision", {})
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>training report</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 10px;text-align:right}"
        "td:first-child{text-align:left}</style></head><body>"
        f"<h2>{html.escape(str(summary.get('policy', '')))} {html.escape(str(summary.get('version', '')))}</h2>"
        f"<p>algorithm <b>{html.escape(str(summary.get('algorithm', '')))}</b>, backend "
        f"{html.escape(str(summary.get('backend', '')))}, market {html.escape(str(summary.get('market', '')))}</p>"
        + (
            f"<p>{html.escape(heading)}</p>"
            if heading is not None
            else f"<p>decision: <b>{'promoted' if decision.get('promote') else 'not promoted'}</b>: "
            f"{html.escape(str(decision.get('reason', '')))}</p>"
        )
        + "<table><tr><th>policy</th><th>PnL</th><th>ROI</th><th>trades</th><th>win rate</th><th>max DD</th>"
        "<th>PnL/window</th><th>95% CI</th></tr>"
        + "".join(rows)
        + "</table>"
        + "".join(f"<div>{c}</div>" for c in charts)
        + "</body></html>"
    )
