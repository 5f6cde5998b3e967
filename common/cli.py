"""The ``fusion`` console script: one entry point that dispatches to every service and tool.

Each command lives in its own package's module as ``main(argv) -> int``; it is imported only
when used, so ``fusion observe`` never imports torch.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str, str]] = {
    # name: (module, function, help)
    "observe": ("observer_svc.__main__", "main", "run observers: venue feeds -> fused states in Redis"),
    "sim": (
        "observer_svc.sim.__main__",
        "main",
        "local venue simulator / recorded-data replayer (websockets)",
    ),
    "streams": ("common.streams_cli", "main", "inspect streams: ls | info | tail MARKET"),
    "archive": ("archiver_svc.__main__", "main", "archive states and labels to the store (exactly once)"),
    "sync": ("archiver_svc.cli", "sync_main", "pull new archive objects from the store into the local cache"),
    "replay": ("archiver_svc.cli", "replay_main", "push archived windows back into a stream"),
    "label": ("labeler_svc.__main__", "main", "hindsight labels as the future arrives"),
    "worker": ("trainer_svc.cli", "worker_main", "RQ worker on the training queue"),
    "train": ("trainer_svc.cli", "train_main", "enqueue (or run inline) a training job"),
    "models": ("trainer_svc.cli", "models_main", "model registry: ls | show | promote | rollback"),
    "schedule": ("trainer_svc.cli", "schedule_main", "enqueue training every N hours or K new labels"),
    "trade": ("trader_svc.__main__", "main", "PyTorch paper trader with hot swap"),
    "trader": ("trader_svc.cli", "trader_main", "trader tools: status"),
    "demo": ("common.demo", "main", "the whole loop on one machine, then a report"),
    "stack": ("common.stack", "main", "fusion stack up | down | status"),
    "bench": ("benchmarks.run", "main", "run benchmarks, print JSON"),
}


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
