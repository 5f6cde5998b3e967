"""Chart.js configurations of each page (plain JSON: the page's script draws them with Chart.js)."""

from __future__ import annotations

from typing import Any

COLOURS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"]
MAX_SERIES = 8


def _ds(label: str, points: list[Any], i: int, **kw: Any) -> dict[str, Any]:
    c = COLOURS[i % len(COLOURS)]
    return {"label": label, "data": points, "borderColor": c, "backgroundColor": c, "pointRadius": 0,
            "borderWidth": 2, **kw}  # fmt: skip


def _chart(cid: str, title: str, kind: str, datasets: list[dict[str, Any]], labels: list[Any] | None = None,
           time_x: bool = False, y: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    scales: dict[str, Any] = {"y": y or {}}
    if time_x:
        scales["x"] = {"type": "linear", "timeAxis": True}
    data: dict[str, Any] = {"datasets": datasets}
    if labels is not None:
        data["labels"] = labels
    return {"id": cid, "title": title, "config": {
        "type": kind, "data": data,
        "options": {"animation": False, "responsive": True, "maintainAspectRatio": False, "scales": scales,
                    "plugins": {"title": {"display": True, "text": title}}},
    }}  # fmt: skip


def for_page(name: str, d: dict[str, Any]) -> list[dict[str, Any]]:
    return {"markets": _markets, "archive": _archive, "training": _training, "trader": _trader}[name](d)


def _markets(d: dict[str, Any]) -> list[dict[str, Any]]:
    rows = d["markets"][:MAX_SERIES]
    cov = [_ds(m["market"], [[t, c] for t, c in zip(m["minutes"], m["minute_coverage"], strict=True)], i)
           for i, m in enumerate(rows)]  # fmt: skip
    lag_names = sorted({k for m in d["markets"] for k in m["lag"] if not k.endswith(":pending")})
    lags = [_ds(k, [m["lag"].get(k) or 0 for m in d["markets"]], i) for i, k in enumerate(lag_names)]
    return [
        _chart("coverage", f"tick coverage per minute, last {d['hours']:g} h", "line", cov, time_x=True,
               y={"min": 0, "max": 1.05}),
        _chart("lag", "consumer lag (entries)", "bar", lags, labels=[m["market"] for m in d["markets"]]),
    ]  # fmt: skip


def _archive(d: dict[str, Any]) -> list[dict[str, Any]]:
    cal = d["calendar"]
    ds = [_ds(m, [cal["cells"][m].get(day, {}).get("coverage", 0) for day in cal["days"]], i)
          for i, m in enumerate(cal["markets"][:MAX_SERIES])]  # fmt: skip
    return [_chart("daycov", "archived coverage per UTC day", "bar", ds, labels=cal["days"], y={"min": 0})]


def _training(d: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for j in d["jobs"].get("running", [])[:2]:
        curve = j.get("curve") or []
        names = sorted({k for _, figs in curve for k in figs})[:MAX_SERIES]
        if curve:
            ds = [_ds(k, [[p, figs[k]] for p, figs in curve if k in figs], i) for i, k in enumerate(names)]
            out.append(_chart(f"job-{j['id']}", f"running {j['id']}: figures by progress", "line", ds)
                       | {"xlinear": True})  # fmt: skip
    for p in d["registry"][:4]:
        curves, i = [], 0
        for v in p["versions"][:3]:
            hist = [h for h in v["history"] if isinstance(h, dict)]
            for k in sorted({k for h in hist for k, x in h.items() if isinstance(x, int | float) and k != "epoch"}):
                pts = [[h.get("epoch", j), h[k]] for j, h in enumerate(hist) if isinstance(h.get(k), int | float)]
                curves.append(_ds(f"{v['version'][-10:]} {k}", pts, i))
                i += 1
        if curves:
            out.append(_chart(f"curve-{p['policy']}", f"{p['policy']}: learning curves", "line",
                              curves[:MAX_SERIES], y={}) | {"xlinear": True})  # fmt: skip
        if p["versions"]:
            v = p["versions"][0]
            names = ["candidate", *(["champion"] if v.get("champion_metrics") else []), *sorted(v["baselines"])]
            metrics = {"candidate": v["holdout"], "champion": v.get("champion_metrics") or {}, **v["baselines"]}
            pnl = [float((metrics.get(n) or {}).get("pnl", 0) or 0) for n in names]
            out.append(_chart(f"holdout-{p['policy']}", f"{p['policy']} {v['version']}: hold-out PnL vs baselines",
                              "bar", [_ds("PnL", pnl, 0)], labels=names))  # fmt: skip
    for c in out:
        if c.pop("xlinear", False):
            axis = "progress" if c["id"].startswith("job-") else "epoch"
            c["config"]["options"]["scales"]["x"] = {"type": "linear", "title": {"display": True, "text": axis}}
    return out


def _trader(d: dict[str, Any]) -> list[dict[str, Any]]:
    ds = [_ds(k, pts, i, stepped=True) for i, (k, pts) in enumerate(sorted(d["equity"].items())[:MAX_SERIES])]
    return [_chart("equity", "realised equity (USD) per trader and model version", "line", ds, time_x=True)]
