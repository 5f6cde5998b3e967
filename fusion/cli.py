"""The ``fusion`` console script: one entry point that dispatches to every service and tool.

Each command lives in its own package's module as ``main(argv) -> int``; it is imported only
when used, so ``fusion observe`` never imports torch.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import sys
from typing import Any

COMMANDS: dict[str, tuple[str, str, str]] = {
    # name: (module, function, help)
    "observe": ("observer_svc.__main__", "main", "run observers: venue feeds -> fused states in Redis"),
    "sim": (
        "observer_svc.sim.__main__",
        "main",
        "local venue simulator / recorded-data replayer (websockets)",
    ),
    "streams": ("common.streams_cli", "main", "inspect streams: ls | info | tail | read NAME (states, labels, trades)"),
    "health": ("common.healthwatch", "main", "health checks: consumer lag, Redis memory, restart loops, stalls"),
    "alerts": ("fusion.alert_receiver", "main", "a local webhook receiver that records alerts: listen | show"),
    "archive": ("archiver_svc.__main__", "main", "archive states and labels to the store (exactly once)"),
    "sync": ("archiver_svc.cli", "sync_main", "pull new archive objects from the store into the local cache"),
    "import": ("fusion.importers.cli", "import_main", "import recordings (any layout) into the archive"),
    "backfill": ("fusion.importers.backfill", "backfill_main", "a market's history (series or fixed) from public APIs"),
    "compact": ("archiver_svc.compact", "main", "compact closed archive days into Parquet files + manifests"),
    "replay": ("archiver_svc.cli", "replay_main", "push archived windows back into a stream"),
    "label": ("labeler_svc.__main__", "main", "hindsight labels as the future arrives"),
    "worker": ("trainer_svc.cli", "worker_main", "RQ worker on the training queue"),
    "train": ("trainer_svc.cli", "train_main", "enqueue (or run inline) a training job"),
    "models": ("trainer_svc.cli", "models_main", "model registry: ls | show | promote | rollback"),
    "backtest": ("trainer_svc.backtest", "main", "replay any model version on any archived range vs the baselines"),
    "monitor": ("trainer_svc.monitor_svc", "main", "the champion's live PnL vs its hold-out and backtest; roll back"),
    "schedule": ("trainer_svc.cli", "schedule_main", "enqueue training every N hours or K new labels"),
    "trade": ("trader_svc.__main__", "main", "PyTorch paper trader with hot swap"),
    "trader": ("trader_svc.cli", "trader_main", "trader tools: status"),
    "demo": ("fusion.demo.cli", "main", "the whole loop on one machine, then a report"),
    "stack": ("fusion.stack", "main", "fusion stack up | down | status"),
    "ui": ("fusion.ui.__main__", "main", "web dashboard: markets, archive, training, trader"),
    "bench": ("benchmarks.run", "main", "run benchmarks, print JSON"),
}


_NO_HELP = "\x00no help\x00"  # stands for the help of an option that has none, so its default still shows


def show_defaults_in_help() -> None:
    """Every ``fusion COMMAND --help`` shows each option's default, as ``argparse.ArgumentDefaultsHelpFormatter``
    does, whatever formatter the command's parser uses (set once, for the ``fusion`` process only).
    Unset (None) and off (False) defaults are not shown; URLs in defaults are shown without credentials."""
    base = argparse.HelpFormatter
    if getattr(base, "_fusion_defaults", False):
        return
    plain, plain_format = base._get_help_string, base._format_action

    def _shown(action: argparse.Action) -> bool:
        d = action.default
        return not (d is None or d is False or d == argparse.SUPPRESS)

    def _format_action(self: argparse.HelpFormatter, action: argparse.Action) -> str:
        if not action.help and action.option_strings and _shown(action):  # argparse skips help-less options
            action = copy.copy(action)
            action.help = _NO_HELP
        return plain_format(self, action)

    def _get_help_string(self: argparse.HelpFormatter, action: argparse.Action) -> str | None:
        text = plain(self, action)
        text = "" if text == _NO_HELP else text
        if self.__class__ is argparse.ArgumentDefaultsHelpFormatter or not _shown(action):
            return text
        if "%(default)" in (text or "") or not (action.option_strings or action.nargs in ("?", "*")):
            return text
        from common.log import redact

        d = action.default
        shown = redact(",".join(map(str, d)) if isinstance(d, list | tuple) else str(d)).replace("%", "%%")
        return f"{text or ''} (default: {shown})".strip()

    patched: Any = _get_help_string
    base._get_help_string = patched  # type: ignore[method-assign]
    patched_format: Any = _format_action
    base._format_action = patched_format  # type: ignore[method-assign]
    base._fusion_defaults = True  # type: ignore[attr-defined]


def usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = ["usage: fusion COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {n.ljust(width)}  {h}" for n, (_, _, h) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"fusion: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module, func, _ = COMMANDS[name]
    show_defaults_in_help()
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        print(f"fusion {name}: not available ({e})", file=sys.stderr)
        return 2
    fn = getattr(mod, func)
    rc = fn(rest)
    return int(rc or 0)


if __name__ == "__main__":
    raise SystemExit(main())
