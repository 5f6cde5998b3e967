"""The demo's closing summary: one short human report printed with rich (see :mod:`fusion.demo.cli`).

It says what was collected, archived and labelled, the data quality (with warnings), the candidate
against each baseline with 95 % intervals, whether it was promoted and why in words, what the paper
trader did before and after the swap (and the scale of that PnL), and where the files are.
``report.json`` holds the same facts for programs.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from fusion.demo.quality import WARN_FRACTION


def _pct(x: float) -> str:
    return f"{x:.1%}" if x else "0"


def _cell(q: dict[str, Any], name: str) -> str:
    f = float(q.get(f"{name}_fraction", 0.0))
    return f"[yellow]{_pct(f)}[/]" if f > WARN_FRACTION else _pct(f)


def collected_table(rep: dict[str, Any]) -> Table:
    t = Table(title="collected, archived, labelled — and the data quality", title_justify="left")
    for c in ("market", "windows", "states", "archived", "labels archived", "exactly once", "no market", "stale PM",
              "stale Binance", "missing ticks", "discovery failures"):  # fmt: skip
        t.add_column(c, justify="right")
    for m, x in rep["markets"].items():
        q = x.get("quality", {})
        once = "yes" if x["archive_exactly_once"] else "[red]no[/]"
        t.add_row(m, str(x.get("windows", "-")), f"{x['states_in_stream']:,}", f"{x['archived_states']:,}",
                  f"{x['archived_labels']:,}", once, _cell(q, "no_market"), _cell(q, "stale_poly"),
                  _cell(q, "stale_binance"), f"{q.get('gaps', 0):,}", str(q.get("discovery_errors", "-")))  # fmt: skip
    return t


def _money(x: float) -> str:
    return f"{x:+.4f}"


def training_lines(tr: dict[str, Any], comparisons: dict[str, dict[str, float]]) -> list[Any]:
    if not tr:
        return [Text("training: did not run (interrupted before it)")]
    if "error" in tr:
        last = str(tr["error"]).strip().splitlines()[-1:] or ["unknown"]
        return [Text(f"training failed: {last[0]} (logs/worker.log)", style="red")]
    if "holdout" not in tr:
        return [Text(f"training did not finish: {tr.get('status', '-')} at {tr.get('stage', '-')}", style="red")]
    ho = tr["holdout"]
    cand = ho.get("candidate", {})
    head = Text(f"training: {tr.get('algorithm')} on {tr.get('backend')}, policy {tr.get('policy')} version "
                f"{tr.get('version')}; hold-out of {cand.get('windows', '?')} windows (PnL per window of a $1 stake, "
                "after fees; 95 % bootstrap intervals)")  # fmt: skip
    t = Table(show_edge=False)
    for c in ("policy", "PnL / window", "95 % interval", "trades", "candidate minus it", "95 % interval"):
        t.add_column(c, justify="right")
    for name, mt in ho.items():
        lo, hi = mt.get("pnl_per_window_ci95", [0.0, 0.0])
        cmp = comparisons.get(name)
        diff = (_money(cmp["mean_diff"]), f"[{_money(cmp['ci_lo'])}, {_money(cmp['ci_hi'])}]") if cmp else ("", "")
        t.add_row(name, _money(mt.get("pnl_per_window", 0.0)), f"[{_money(lo)}, {_money(hi)}]",
                  str(mt.get("trades", "")), *diff)  # fmt: skip
    return [head, t, Text(verdict(tr, comparisons), style="bold green" if tr.get("promoted") else "bold yellow")]


def verdict(tr: dict[str, Any], comparisons: dict[str, dict[str, float]]) -> str:
    """Promoted or not, and why, in words."""
    if tr.get("promoted"):
        return (f"PROMOTED: version {tr.get('version')} beats every baseline: for each, the 95 % interval of "
                "its extra PnL per window lies above zero. The trader swapped to it.")  # fmt: skip
    losers = {k: c for k, c in comparisons.items() if not c.get("beats")}
    if not losers:
        reason = (tr.get("decision") or {}).get("reason", "")
        return f"NOT PROMOTED: {reason}. The trader keeps holding."
    parts = []
    for k, c in losers.items():
        where = "below zero" if c["ci_hi"] < 0 else "includes zero"
        parts.append(f"against {k} its extra PnL per window is {_money(c['mean_diff'])}, and the 95 % interval "
                     f"[{_money(c['ci_lo'])}, {_money(c['ci_hi'])}] {where}")  # fmt: skip
    return ("NOT PROMOTED: the candidate is not surely better than " + ", ".join(losers) + ": " + "; ".join(parts)
            + ". The trader keeps holding; `fusion models promote demo VERSION` deploys it by hand.")  # fmt: skip


def _trader_line(label: str, st: dict[str, Any], since: dict[str, Any] | None = None) -> Text:
    """What the trader did in a phase (``since``: the status at the phase's start, for deltas)."""
    b = since or {}
    bp = b.get("pnl") or {}
    p = st.get("pnl") or {}

    def delta(key: str, src: dict[str, Any], base: dict[str, Any]) -> float:
        return float(src.get(key) or 0) - float(base.get(key) or 0)

    ticks, dec, missed = (delta(k, st, b) for k in ("ticks", "decisions", "missed_ticks"))
    n_m = max(1, len(st.get("markets") or []))
    share = f" (decided on {dec / (dec + missed):.0%} of the market ticks)" if dec + missed else ""
    return Text(f"trader {label}: model {st.get('model') or 'none (holds)'}; {ticks:,.0f} ticks of {n_m} markets, "
                f"{dec:,.0f} decisions, {missed:,.0f} ticks missed{share}; {delta('fills', p, bp):.0f} fills, "
                f"realised ${delta('realised_usd', p, bp):+.2f}, equity ${delta('equity_usd', p, bp):+.2f}",
                )  # fmt: skip


def trader_lines(rep: dict[str, Any], position_usd: float, sim_minutes_after: float) -> list[Text]:
    before, at_swap, after = (rep.get(k) or {} for k in ("pnl_before_swap", "trader_at_swap", "pnl_after_swap"))
    out = [_trader_line("while collecting", before) if before else Text("trader: no status (interrupted early)")]
    if after:
        out.append(_trader_line(f"trading phase ({sim_minutes_after:.0f} simulated minutes)", after, at_swap or before))
    out.append(Text(f"scale: paper money; each position spends at most ${position_usd:g} on shares, so $1 of PnL is "
                    f"1 % of one position; the trading phase covered about {sim_minutes_after:.0f} simulated minutes: "
                    "a handful of trades on a simulator whose Polymarket lags Binance by design, far too few to "
                    "judge a policy by (the hold-out above is the test).", style="dim"))  # fmt: skip
    return out


def record_lines(rep: dict[str, Any]) -> list[Text]:
    """The trader's record in the store (exactly once against its stream) and its daily summary per model."""
    tr = rep.get("trade_record") or {}
    if not tr:
        return []
    if "error" in tr:
        return [Text(f"trade record: not readable ({tr['error']})", style="red")]
    once = "exactly once" if tr.get("exactly_once") else "NOT exactly once"
    kinds = ", ".join(f"{n} {k}" for k, n in sorted((tr.get("by_type") or {}).items())) or "no records"
    style = "" if tr.get("exactly_once") else "red"
    out = [Text(f"trade record: {tr.get('archived', 0):,} records archived of {tr.get('in_stream', 0):,} in the "
                f"stream ({once}): {kinds}", style=style)]  # fmt: skip
    for day, sm in (tr.get("summaries") or {}).items():
        if not sm:
            out.append(Text(f"  {day}: no summary written", style="yellow"))
            continue
        for version, v in sorted((sm.get("models") or {}).items()):
            wr = v.get("win_rate")
            name = version or "none (held)"
            out.append(Text(f"  {day} model {name}: PnL ${v.get('pnl_usd', 0):+.2f}, {v.get('trades', 0)} trades, "
                            f"fees ${v.get('fees_usd', 0):.2f}, win rate {'-' if wr is None else f'{wr:.0%}'}, "
                            f"max drawdown ${v.get('max_drawdown_usd', 0):.2f}", style="dim"))  # fmt: skip
    return out


def monitor_lines(rep: dict[str, Any]) -> list[Any]:
    """The swapped model's live windows against its hold-out bound and its backtest on the same windows."""
    c = rep.get("live_vs_backtest")
    if c is None:
        return []
    if "error" in c:
        return [Text(f"live vs backtest: not available ({c['error']})", style="yellow")]
    rows = c.get("windows") or []
    if not rows:
        skipped = len(c.get("skipped") or [])
        return [Text(f"live vs backtest of {c.get('version') or 'no model'}: no window judged yet (a window is judged "
                     f"once the champion alone traded it and it settled in the archive; {skipped} skipped)",
                     style="dim")]  # fmt: skip
    t = Table(title=f"live vs backtest of {c.get('version')} (PnL per window in stakes; the gap is execution)",
              title_justify="left")  # fmt: skip
    for col in ("market", "window", "trades", "live", "backtest", "live mean", "hold-out bound"):
        t.add_column(col, justify="right")
    for w in rows[-10:]:
        bound = w.get("bound")
        t.add_row(w["market"], _clock(w["start_ms"]), str(w.get("trades", "-")), _money(w["live"]),
                  "-" if w.get("backtest") is None else _money(w["backtest"]), _money(w["live_mean"]),
                  "-" if bound is None else _money(bound))  # fmt: skip
    verdict = (f"tripped: {c['tripped']} ({c.get('action') or 'alerted'})" if c.get("tripped")
               else "within the hold-out bound and the execution-gap bound: kept")  # fmt: skip
    gap = c.get("gap_per_window")
    return [t, Text(f"live total {_money(c.get('live_total') or 0)} vs backtest {_money(c.get('backtest_total') or 0)}"
                    f" over {len(rows)} windows (gap {'-' if gap is None else _money(gap)} per window); monitor: "
                    f"{verdict}")]  # fmt: skip


def _clock(ms: int) -> str:
    import time

    return time.strftime("%H:%M", time.gmtime(ms / 1000))


def alert_lines(rep: dict[str, Any]) -> list[Text]:
    """The alerts the stages sent to the demo's local webhook receiver."""
    alerts = rep.get("alerts")
    if alerts is None:
        return []
    if not alerts:
        return [Text("alerts sent: none (a local receiver listened; nothing crossed a threshold)", style="dim")]
    out = [Text(f"alerts sent to the local webhook ({len(alerts)}):")]
    for a in alerts[:12]:
        out.append(Text(f"  [{a.get('service', '?')}] {a.get('kind', '?')} {a.get('key', '')}: {a.get('text', '')}"))
    if len(alerts) > 12:
        out.append(Text(f"  ... and {len(alerts) - 12} more in report.json", style="dim"))
    return out


def files_lines(rep: dict[str, Any]) -> list[Text]:
    f = rep["files"]
    lines = [
        Text(f"report.json: {f['report_json']}"),
        Text(f"training report: {f.get('training_report') or '-'}"),
        Text(f"logs: {f['logs']}    store: {f['store']}"),
        Text("next: reuse the demo's settings and Redis (its data is kept in an AOF):", style="bold"),
    ]
    lines += [Text("  " + c, style="cyan") for c in f.get("reuse", [])]
    return lines


def print_summary(console: Console, rep: dict[str, Any], position_usd: float, sim_minutes_after: float) -> None:
    head = "interrupted" if rep.get("interrupted") else "finished"
    title = f"fusion demo {head} in {rep.get('wall_s', 0) / 60:.1f} min"
    parts: list[Any] = [collected_table(rep)]
    sim_s = max((x.get("simulated_s", 0.0) for x in rep["markets"].values()), default=0.0)
    if sim_s and rep.get("observed_wall_s"):
        wall = float(rep["observed_wall_s"])
        parts.append(Text(f"observed {sim_s / 3600:.1f} simulated hours in {wall / 60:.1f} min of wall time (collect, "
                          f"training and trading): the simulator ran at about {sim_s / wall:.0f}x on average (slower "
                          "than asked when the machine is busy)", style="dim"))  # fmt: skip
    for w in rep.get("warnings", []):
        parts.append(Text("warning: " + w, style="yellow"))
    parts += training_lines(rep.get("training") or {}, rep.get("comparisons") or {})
    parts += trader_lines(rep, position_usd, sim_minutes_after)
    parts += record_lines(rep)
    parts += monitor_lines(rep)
    parts += alert_lines(rep)
    parts += files_lines(rep)
    console.print(Panel(Group(*parts), title=title, title_align="left"))
