"""The demo's run: start the stages, collect, train, swap, stop, report (see :mod:`fusion.demo.cli`)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from rich.live import Live

from common import keys
from common.log import redact_value
from common.markets import parse_market, split_markets
from common.redisproc import free_port, port_or_free
from common.store import LocalStore, ObjectStore, S3Store, open_store
from fusion.alert_receiver import AlertReceiver
from fusion.demo.loop import live_vs_backtest, sent_alerts, trade_record
from fusion.demo.quality import StreamQuality, from_columns
from fusion.demo.report import print_summary
from fusion.demo.stages import Demo, console


def _env(d: Demo, sim_url: str, store: ObjectStore) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUSION_")}
    env.update({
        "FUSION_REDIS_URL": d.redis_url,
        "FUSION_STORE_URL": store.url,
        **({"FUSION_S3_ENDPOINT_URL": os.environ["FUSION_S3_ENDPOINT_URL"]}
           if "FUSION_S3_ENDPOINT_URL" in os.environ else {}),
        "FUSION_CACHE_DIR": str(d.workdir / "cache"),
        "FUSION_FEED": "sim",
        "FUSION_SIM_URL": sim_url,
        "FUSION_MARKETS": ",".join(d.markets),
        "FUSION_REPLICAS": str(d.args.replicas),
        # the simulator runs 60x faster than the wall clock (a 5-minute window lasts 5 s): look the next
        # windows up 15 minutes (15 s of wall time) ahead, as far as the simulator lists them
        "FUSION_DISCOVERY_LEAD_S": "900",
        "FUSION_TRADER_MARKETS": ",".join(d.markets),
        "FUSION_TRADER_ID": "demo-trader",
        "FUSION_POLICY": "demo",
        "FUSION_LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    })  # fmt: skip
    return env


def run_demo(a: argparse.Namespace) -> int:
    workdir = Path(a.dir).resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    (workdir / "logs").mkdir(parents=True)
    markets = [parse_market(m).name for m in split_markets(a.markets)]
    d = Demo(a, workdir, markets)
    r = d.start_redis()
    try:
        return _run(a, d, r, markets, workdir)
    finally:  # the private Redis runs in its own session: stop it whatever happened
        if d.redis_server is not None:
            d.redis_server.stop()


def _run(a: argparse.Namespace, d: Demo, r: Any, markets: list[str], workdir: Path) -> int:
    from observer_svc.sim.synthetic import SyntheticDriver
    from observer_svc.sim.thread import SimServerThread

    r.delete(*[k for m in markets for k in (keys.states_stream(m), keys.labels_stream(m))], keys.EVENTS_STREAM)
    store = _open_store(workdir)
    receiver = AlertReceiver(workdir / "alerts.jsonl").start()  # every alert the stages send, shown at the end
    sim = SimServerThread(SyntheticDriver(markets, seed=a.seed, speed=a.speed, lead_lag=True, lag_s=a.lag_s)).start()
    d.env = _env(d, sim.url, store)
    # a state flagged stale for 5 simulated minutes (5 s of wall time at 60x) is a data gap worth telling
    d.env.update(FUSION_ALERT_WEBHOOK_URL=receiver.url, FUSION_ALERT_GAP_S="300")
    reuse = write_settings(d, store)
    d.quality = StreamQuality(markets, step_ms=int(d.env.get("FUSION_TICK_MS", "500")))
    t_observe = time.monotonic()
    interrupted = False
    report: dict[str, Any] = {}
    try:
        d.phase = "collecting"
        for n in ("observer-1", "observer-2"):
            port = free_port()  # each observer's /metrics: its discovery failures reach the live view
            d.metrics_urls.append(f"http://127.0.0.1:{port}/metrics")
            d.proc(n, "observe", "--leases", env={"FUSION_METRICS_PORT": str(port), "FUSION_OBSERVER_ID": n})
        d.proc("archiver", "archive")
        d.proc("labeler", "label")
        d.proc("worker", "worker")
        d.proc("trader", "trade")
        # the champion's live windows against its hold-out and its backtest (alerts only: no rollback in the demo)
        d.proc("monitor", "monitor", "--policy", "demo", "--trader", "demo-trader", "--no-rollback",
               env={"FUSION_MONITOR_EVERY_S": "2"})  # fmt: skip
        ui_port = port_or_free(int(os.environ.get("FUSION_UI_PORT", "8050")))  # 8050 unless another demo has it
        d.proc("ui", "ui", env={"FUSION_UI_PORT": str(ui_port)})
        console.print(f"dashboard while the demo runs: http://127.0.0.1:{ui_port}")
        live_view = not a.no_live and console.is_terminal
        with (
            Live(d.table(r, store), console=console, refresh_per_second=2, transient=False)
            if live_view
            else (contextlib.nullcontext()) as live
        ):
            last_line = [0.0]

            def wait(seconds: float, until: Any = None) -> None:
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    d.poll_job(r)
                    if live is not None:
                        live.update(d.table(r, store))
                    elif time.monotonic() - last_line[0] > 10:
                        last_line[0] = time.monotonic()
                        console.print(d.status_line(r))
                    if until is not None and until():
                        return
                    time.sleep(0.5)

            wait(a.collect)
            report["pnl_before_swap"] = _trader(r)  # the trader so far: no model yet, so it held
            d.phase = "training"
            from trainer_svc.jobs import enqueue_training

            # no secret in the job: the worker uses its own Redis connection

            params = {"market": ",".join(markets), "algo": a.algo, "backend": "auto", "policy": "demo", "from_ms": None,
                      "to_ms": None, "synthetic": 0, "synthetic_lag_s": 0.0, "store_url": store.url,
                      "seed": 0, "margin": 0.0, "promote": True, "overrides": {}}  # fmt: skip
            d.job_id = enqueue_training(r, params).id
            wait(600, until=lambda: d.job_info.get("status") in ("finished", "failed", "stopped", "canceled"))
            # 2 cores cannot run the simulator and observers at 60x and let the trader decide on every tick
            # too: trade at a slower pace, so the new model's decisions are the ones it would make live
            report["trader_at_swap"] = _trader(r)  # the trading phase is measured from here
            sim.driver.speed = a.trade_speed
            d.phase = _trading_phase(d.job_info, a.trade_speed)
            wait(a.after)
            report["pnl_after_swap"] = _trader(r)
    except KeyboardInterrupt:
        interrupted = True
        console.print("[yellow]interrupted: stopping every stage gracefully[/]")
    finally:
        d.phase = "stopping"
        d.update_quality(r, every_s=0.0)  # the last discovery failures, while the observers still answer
        report["observed_wall_s"] = round(time.monotonic() - t_observe, 1)
        _stop_all(d)
        sim.stop()
        receiver.close()
    report.update(_report(d, r, store))
    report["interrupted"] = interrupted
    report["files"]["reuse"] = reuse
    _print_report(report, d)
    return 0 if not interrupted else 130


def _trading_phase(job: dict[str, Any], speed: float) -> str:
    res = job.get("result") or {}
    if res.get("promoted"):
        return f"trading on the new model ({speed:g}x)"
    why = "training failed" if job.get("status") != "finished" else "no model promoted"
    return f"trading: {why}, the trader holds ({speed:g}x)"


def write_settings(d: Demo, store: ObjectStore) -> list[str]:
    """Write ``fusion.env`` (the settings the stages ran with, credentials redacted) and, for a private
    Redis, ``redis/redis.conf`` (same port, dir and AOF); return the commands that reuse them."""
    from common.log import redact

    names = ("FUSION_REDIS_URL", "FUSION_STORE_URL", "FUSION_S3_ENDPOINT_URL", "FUSION_CACHE_DIR", "FUSION_MARKETS",
             "FUSION_POLICY", "FUSION_TRADER_ID", "FUSION_TRADER_MARKETS")  # fmt: skip
    env_file = d.workdir / "fusion.env"
    env_file.write_text("".join(f"{k}={redact(d.env[k])}\n" for k in names if k in d.env))
    cmds = [f"set -a; . {_rel(env_file)}; set +a", "fusion models ls demo"]
    if d.redis_server is not None:
        conf = d.workdir / "redis" / "redis.conf"
        conf.write_text(f"port {d.redis_server.port}\nbind 127.0.0.1\ndir {d.redis_server.dir}\nappendonly yes\n"
                        f"save \"\"\nlogfile {d.redis_server.dir / 'redis.log'}\ndaemonize yes\n")  # fmt: skip
        cmds += [f"redis-server {_rel(conf)}      # the demo's Redis again, from its AOF",
                 f"fusion streams ls; redis-cli -p {d.redis_server.port} shutdown"]  # fmt: skip
    else:
        cmds.append("fusion streams ls")
    return cmds


def _rel(p: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(p.relative_to(Path.cwd()))
    return str(p)


def _open_store(workdir: Path) -> ObjectStore:
    """S3 (or MinIO) when FUSION_STORE_URL says s3://, else a fresh local directory in the work dir."""
    url = os.environ.get("FUSION_STORE_URL", "")
    if url.startswith("s3://"):
        store = open_store(url, os.environ.get("FUSION_S3_ENDPOINT_URL"), os.environ.get("FUSION_S3_REGION"))
        assert isinstance(store, S3Store)
        store.ensure_bucket()
        return store
    return LocalStore(workdir / "store")


def _trader(r: Any) -> dict[str, Any]:
    from fusion.demo.stages import _trader_status

    return _trader_status(r, "demo-trader")


def _stop_all(d: Demo) -> None:
    """Producers first, then consumers; the archiver flushes the windows still open. The observers
    are stopped together: stopping one first would hand its markets to the other, and the lease
    handover (seconds of wall time, minutes of simulated time) would show as a gap at the end.
    Whatever happens (a second Ctrl-C, a stage that hangs), no process of the demo outlives it."""
    try:
        with contextlib.suppress(KeyboardInterrupt):
            observers = [d.procs[n] for n in ("observer-1", "observer-2") if n in d.procs]
            for p in observers:
                p.terminate()
            for p in observers:
                p.stop()
            time.sleep(1.0)
            for name in ("trader", "monitor", "labeler"):
                if name in d.procs:
                    d.procs[name].stop()
            if "archiver" in d.procs:
                d.procs["archiver"].stop(60)
                d.proc("archiver-final", "archive", "--once", "--final").stop_after(120)
            if "worker" in d.procs:
                d.procs["worker"].stop(120)
    finally:
        for p in d.procs.values():
            p.kill()


def _report(d: Demo, r: Any, store: ObjectStore) -> dict[str, Any]:
    from archiver_svc.reader import load_market

    out: dict[str, Any] = {"workdir": str(d.workdir), "store": store.url, "redis": d.redis_url, "markets": {}}
    warnings: list[str] = []
    for m in d.markets:
        ids = [e for e, _ in r.xrange(keys.states_stream(m))]
        md = load_market(store, m)
        archived = md.states.tick_ms
        stream_ticks = [int(e.split(b"-")[0]) for e in ids]
        q = from_columns(md.states)  # what the trainer learns from
        q.discovery_errors = d.quality.q[m].discovery_errors if d.quality else 0
        warnings += q.warnings(m)
        out["markets"][m] = {
            "states_in_stream": len(ids),
            "labels_in_stream": int(r.xlen(keys.labels_stream(m))),
            "archived_states": len(archived),
            "archived_labels": len(md.labels) if md.labels is not None else 0,
            "archive_exactly_once": sorted(set(stream_ticks)) == [int(t) for t in archived],
            "archive_problems": md.problems[:3],
            "gap_free": q.gaps == 0,
            "quality": q.as_dict(),
            "windows": len({x for x in md.states.slugs if x}),
            "simulated_s": round(float(archived.max() - archived.min()) / 1000, 1) if len(archived) else 0.0,
        }
    out["warnings"] = warnings
    events = [(e.decode(), f) for e, f in r.xrange(keys.EVENTS_STREAM)]
    out["events"] = [_decode_event(f) for _, f in events]
    out["training"] = d.job_info.get("result") or {k: v for k, v in d.job_info.items() if k != "result"}
    meta = _model_meta(store, out["training"])
    out["comparisons"] = (meta.get("decision") or {}).get("comparisons", {})
    out["trade_record"] = trade_record(r, store, "demo-trader")
    out["live_vs_backtest"] = live_vs_backtest(r, store, "demo", "demo-trader")
    out["alerts"] = sent_alerts(d.workdir / "alerts.jsonl")
    out["dead_letters"] = int(r.xlen(keys.DEAD_LETTER_STREAM)) if r.exists(keys.DEAD_LETTER_STREAM) else 0
    out["observer_summaries"] = {n: _last_line(p.log) for n, p in d.procs.items() if n.startswith("observer")}
    out["wall_s"] = round(time.monotonic() - d.t0, 1)
    out["files"] = {"report_json": str(d.workdir / "report.json"), "logs": str(d.workdir / "logs"),
                    "store": store.url, "training_report": meta.get("report"),
                    "settings": str(d.workdir / "fusion.env")}  # fmt: skip
    return out


def _model_meta(store: ObjectStore, training: dict[str, Any]) -> dict[str, Any]:
    """The trained version's meta.json (its comparisons with intervals, its report's URL); {} if none."""
    from common import artefact

    if not training.get("version"):
        return {}
    try:
        return artefact.read_meta(store, str(training.get("policy", "demo")), str(training["version"]))
    except Exception:  # a missing or unreadable meta only leaves the report shorter
        return {}


def _decode_event(fields: dict[bytes, bytes]) -> dict[str, Any]:
    import msgpack

    with contextlib.suppress(Exception):
        return dict(msgpack.unpackb(fields[keys.PAYLOAD_FIELD], raw=False))
    return {"undecodable": True}


def _last_line(p: Path) -> str:
    with contextlib.suppress(OSError):
        lines = [ln for ln in p.read_text(errors="replace").splitlines() if "states_added=" in ln]
        return lines[-1] if lines else ""
    return ""


def _print_report(rep: dict[str, Any], d: Demo) -> None:
    from common.settings import Settings

    rep = redact_value(rep)  # credentials of any URL (Redis, store) never reach the report or the terminal
    (d.workdir / "report.json").write_text(json.dumps(rep, indent=2, default=str))
    position_usd = Settings().position_usd
    if not console.is_terminal:  # a log file or a pipe: wide enough for the tables
        console.width = max(console.width, 140)
    print_summary(console, rep, position_usd, d.args.after * d.args.trade_speed / 60.0)
