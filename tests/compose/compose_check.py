"""Validators for compose/compose.yaml, .env.example and the Dockerfile (Docker cannot run here).

Each ``check_*`` takes parsed data and returns a list of problems (empty = fine), so the tests can
run them on the real files and on deliberately broken copies.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import re
import shlex
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from common.settings import Settings
from fusion.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"
DOCKERFILE = COMPOSE_DIR / "Dockerfile"

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")
SECRET_NAME = re.compile(r"SECRET|PASSWORD|ACCESS_KEY|TOKEN", re.I)


# ----------------------------------------------------------------------------- loading
def load_yaml(text: str) -> dict[str, Any]:
    data = yaml.safe_load(text)
    assert isinstance(data, dict), "compose file is not a mapping"
    return data


def parse_env_file(text: str) -> dict[str, str]:
    """KEY=VALUE lines (``#`` comments, optional quotes), as docker compose reads a ``.env``."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        k, sep, v = line.partition("=")
        if not sep:
            raise ValueError(f"bad .env line: {line!r}")
        v = v.strip()
        if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
            v = v[1:-1]
        out[k.strip()] = v
    return out


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose-style ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?err}``, ``$$``, recursively."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3) or ""
        val = env.get(name)
        unset = val is None or (op is not None and op.startswith(":") and val == "")
        if op in (":-", "-") and unset:
            return arg
        if op in (":?", "?") and unset:
            raise KeyError(f"${{{name}}} is required: {arg}")
        return val or ""

    return _VAR.sub(sub, value)


def referenced_vars(text: str) -> dict[str, str | None]:
    """Variables used in ``${...}`` of a text: name -> the operator (None, ':-', ':?', ...)."""
    out: dict[str, str | None] = {}
    for m in _VAR.finditer(text):
        name = m.group(1) or m.group(4)
        if name and (name not in out or out[name] is None):
            out[name] = m.group(2)
    return out


def env_of(svc: Mapping[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) if "=" in e else (e, "") for e in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def app_services(compose: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Services built from our Dockerfile (entrypoint ``fusion``)."""
    return {
        n: s
        for n, s in compose["services"].items()
        if "build" in s or str(s.get("image", "")).startswith("market-fusion")
    }


def fusion_argv(svc: Mapping[str, Any]) -> list[str] | None:
    """The ``fusion`` arguments a service runs, or None when its entrypoint does not end in ``fusion``."""
    cmd = svc.get("command") or []
    cmd = shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]
    ep = svc.get("entrypoint")
    if ep is None:
        return cmd
    ep = shlex.split(ep) if isinstance(ep, str) else [str(c) for c in ep]
    if ep == ["fusion"]:
        return cmd
    # a shell wrapper: ["/bin/sh", "-c", '...; exec fusion "$@"', "fusion"] (after $$ -> $)
    if len(ep) == 4 and ep[1] == "-c" and re.search(r'exec fusion "\$@"\s*$', ep[2]) and ep[3] == "fusion":
        return cmd
    return None


def duration_s(text: str | int | float) -> float:
    """Compose duration (``1m30s``, ``10m``, ``30s``, ``500ms``, ``1h``) in seconds."""
    if isinstance(text, int | float):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", text)
    if not parts or "".join(a + b for a, b in parts) != text.strip():
        raise ValueError(f"bad duration {text!r}")
    unit = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6}
    return sum(float(a) * unit[b] for a, b in parts)


# ----------------------------------------------------------------------------- fusion subcommands
class _Parsed(Exception):
    pass


@contextlib.contextmanager
def _stop_after_parse() -> Iterator[None]:
    """Make ``ArgumentParser.parse_args`` raise right after a successful parse (the service never starts)."""
    orig = argparse.ArgumentParser.parse_args

    def wrapped(self: argparse.ArgumentParser, *a: Any, **k: Any) -> Any:
        orig(self, *a, **k)
        raise _Parsed

    argparse.ArgumentParser.parse_args = wrapped  # type: ignore[method-assign]
    try:
        yield
    finally:
        argparse.ArgumentParser.parse_args = orig  # type: ignore[method-assign]


def check_fusion_args(argv: list[str]) -> str | None:
    """None if ``fusion ARGV`` names a real subcommand whose parser accepts the flags, else why not."""
    if not argv:
        return "no fusion subcommand"
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        return f"{name!r} is not a fusion subcommand ({', '.join(COMMANDS)})"
    module, func, _ = COMMANDS[name]
    try:
        fn = getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError) as e:
        return f"fusion {name}: cannot import {module}.{func}: {e}"
    err = io.StringIO()
    with _stop_after_parse(), contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            fn(rest)
        except _Parsed:
            return None
        except SystemExit as e:
            return f"fusion {' '.join(argv)}: rejected (exit {e.code}): {err.getvalue().strip()}"
    return f"fusion {name}: parse_args was never called"


# ----------------------------------------------------------------------------- checks
def check_commands(compose: Mapping[str, Any]) -> list[str]:
    problems = []
    for name, svc in app_services(compose).items():
        argv = fusion_argv(svc)
        if argv is None:
            problems.append(f"{name}: entrypoint {svc.get('entrypoint')!r} does not run fusion")
            continue
        why = check_fusion_args(argv)
        if why:
            problems.append(f"{name}: {why}")
    return problems


def _settings_from(env: Mapping[str, str]) -> Settings:
    """Settings built from exactly these FUSION_* variables (the process's own are set aside)."""
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("FUSION_")}
    fusion = {k: v for k, v in env.items() if k.startswith("FUSION_")}
    try:
        os.environ.update(fusion)
        return Settings(_env_file=None)  # type: ignore[call-arg]
    finally:
        for k in fusion:
            os.environ.pop(k, None)
        os.environ.update(saved)


def check_settings(env_sets: Mapping[str, Mapping[str, str]]) -> list[str]:
    """Every FUSION_* name is a Settings field and each set of values builds a valid Settings."""
    problems = []
    fields = set(Settings.model_fields)
    for where, env in env_sets.items():
        for k in env:
            if k.startswith("FUSION_") and k[len("FUSION_") :].lower() not in fields:
                problems.append(f"{where}: {k} is not a setting (common/settings.py)")
        try:
            _settings_from(env)
        except Exception as e:  # pydantic ValidationError and friends
            problems.append(f"{where}: settings do not parse: {e}")
    return problems


def _host_ports(entry: Any) -> tuple[str, int | None, int]:
    """(host ip, host port or None, container port) of a ports entry."""
    if isinstance(entry, int):
        return "", None, entry
    if isinstance(entry, dict):
        pub = entry.get("published")
        return str(entry.get("host_ip", "")), int(pub) if pub not in (None, "") else None, int(entry["target"])
    spec = str(entry).split("/")[0]
    parts = spec.rsplit(":", 2)
    if len(parts) == 1:
        return "", None, int(parts[0])
    if len(parts) == 2:
        return "", int(parts[0]), int(parts[1])
    return parts[0], int(parts[1]), int(parts[2])


def check_ports_volumes(compose: Mapping[str, Any], compose_dir: Path = COMPOSE_DIR) -> list[str]:
    problems = []
    services = compose["services"]
    declared = set((compose.get("volumes") or {}).keys())
    used: set[str] = set()
    seen_host: dict[int, str] = {}
    for name, svc in services.items():
        for p in svc.get("ports") or []:
            try:
                _, host, _ = _host_ports(p)
            except (ValueError, KeyError) as e:
                problems.append(f"{name}: bad ports entry {p!r}: {e}")
                continue
            if host is not None:
                if host in seen_host:
                    problems.append(f"{name}: host port {host} already published by {seen_host[host]}")
                seen_host[host] = name
        for v in svc.get("volumes") or []:
            src = v.get("source", "") if isinstance(v, dict) else str(v).split(":")[0]
            if not src:
                continue
            if src.startswith((".", "/", "~")):
                if src.startswith(".") and not (compose_dir / src).exists():
                    problems.append(f"{name}: bind mount source {src} does not exist")
            else:
                used.add(src)
                if src not in declared:
                    problems.append(f"{name}: named volume {src!r} is not declared under volumes:")
        for ef in svc.get("env_file") or []:
            path, required = (ef, True) if isinstance(ef, str) else (ef["path"], ef.get("required", True))
            if required and not (compose_dir / path).exists():
                problems.append(f"{name}: env_file {path} is required but does not exist")
        deps = svc.get("depends_on") or {}
        for dep, cond in deps.items() if isinstance(deps, dict) else ((d, {}) for d in deps):
            if dep not in services:
                problems.append(f"{name}: depends_on {dep!r} which is not a service")
                continue
            c = (cond or {}).get("condition")
            if c == "service_healthy" and "healthcheck" not in services[dep]:
                problems.append(f"{name}: waits for {dep} healthy but {dep} has no healthcheck")
            if c == "service_completed_successfully" and services[dep].get("restart", "no") != "no":
                problems.append(f"{name}: waits for {dep} to complete but {dep} restarts")
    for v in declared - used:
        problems.append(f"volume {v!r} is declared but not used")
    obs = services.get("observer")
    if obs is None:
        problems.append("no observer service")
    else:
        if obs.get("ports"):
            problems.append("observer publishes host ports: --scale observer=N would clash")
        if "container_name" in obs:
            problems.append("observer has a container_name: --scale observer=N would clash")
    for name, svc in services.items():
        if "container_name" in svc and name in app_services(compose):
            problems.append(f"{name}: container_name prevents scaling")
    return problems


def check_operations(compose: Mapping[str, Any]) -> list[str]:
    """Grace periods, restart policies, metrics, credentials by reference, redis AOF + healthcheck."""
    problems = []
    services = compose["services"]
    for name, svc in app_services(compose).items():
        if svc.get("restart") not in ("always", "unless-stopped", "on-failure"):
            problems.append(f"{name}: no restart policy")
        grace = duration_s(svc.get("stop_grace_period", "10s"))
        if grace < 10:
            problems.append(f"{name}: stop_grace_period {grace:.0f}s is too short for a clean stop")
        port = env_of(svc).get("FUSION_METRICS_PORT", "0")
        if not port.isdigit() or int(port) == 0:
            problems.append(f"{name}: FUSION_METRICS_PORT not set: no Prometheus metrics")
        elif port not in [str(e).split("/")[0] for e in svc.get("expose") or []]:
            problems.append(f"{name}: metrics port {port} is not declared in expose:")
    worker = services.get("worker")
    if worker is None or (fusion_argv(worker) or [""])[0] != "worker":
        problems.append("no `fusion worker` service named worker")
    elif duration_s(worker.get("stop_grace_period", "10s")) < 60:
        problems.append("worker: stop_grace_period < 60s cuts RQ's warm shutdown")
    redis = services.get("redis", {})
    cmd = " ".join(redis.get("command") or [])
    if "--appendonly yes" not in cmd:
        problems.append("redis: AOF is not on (--appendonly yes)")
    if "redis-cli" not in json.dumps(redis.get("healthcheck", {})) or "ping" not in json.dumps(
        redis.get("healthcheck", {})
    ):
        problems.append("redis: healthcheck is not `redis-cli ping`")
    return problems


def check_no_literal_secrets(raw_compose: Mapping[str, Any]) -> list[str]:
    """Secret-looking variables are references (``${VAR}`` / ``${VAR:?...}``), never literals or defaults."""
    problems = []
    for name, svc in raw_compose["services"].items():
        for k, v in env_of(svc).items():
            if SECRET_NAME.search(k) or k.startswith("MINIO_ROOT"):
                m = re.fullmatch(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:?\?[^}]*)?\}", v)
                if not m:
                    problems.append(f"{name}: {k} is not a plain ${{VAR}} reference: secrets belong in .env")
    return problems


def check_env_example(compose_text: str, example: Mapping[str, str]) -> list[str]:
    """Variables compose requires (no default) are in .env.example; its secrets are placeholders."""
    problems = []
    for var, op in referenced_vars(compose_text).items():
        if op in (None, ":?", "?") and var not in example:
            problems.append(f".env.example lacks {var}, which compose.yaml requires")
    for k, v in example.items():
        if SECRET_NAME.search(k) and "change-me" not in v:
            problems.append(f".env.example: {k} should be a change-me placeholder")
    return problems


def check_dockerfile(text: str, root: Path = ROOT) -> list[str]:
    problems = []
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    if not lines or not lines[0].startswith("FROM python:3.11"):
        problems.append("Dockerfile: base image is not python:3.11*")
    if not any(re.match(r'RUN pip install .*"?\.\[torch\]"?', ln) for ln in lines):
        problems.append('Dockerfile: the project is not installed (pip install ".[torch]")')
    entry = [ln for ln in lines if ln.startswith("ENTRYPOINT")]
    if not entry or json.loads(entry[-1][len("ENTRYPOINT") :].strip()) != ["fusion"]:
        problems.append('Dockerfile: ENTRYPOINT is not ["fusion"]')
    copied = set()
    for ln in lines:
        if ln.startswith("COPY "):
            for src in ln.split()[1:-1]:
                if not src.startswith("--"):
                    copied.add(src.rstrip("/"))
                    if not (root / src).exists():
                        problems.append(f"Dockerfile: COPY source {src} does not exist")
    pyproject = (root / "pyproject.toml").read_text()
    m = re.search(r"include\s*=\s*\[([^\]]*)\]", pyproject)
    packages = [p.strip().strip('"').rstrip("*") for p in m.group(1).split(",")] if m else []
    for pkg in packages:
        if pkg and pkg not in copied:
            problems.append(f"Dockerfile: package {pkg} is not copied into the image")
    return problems


def check_markets_consistent(compose: Mapping[str, Any]) -> list[str]:
    """The scheduler trains every observed market; the trader follows a policy that gets trained."""
    problems = []
    services = compose["services"]
    markets = set(Settings.model_validate({"markets": env_of(services["observer"]).get("FUSION_MARKETS", "")}).markets)
    sched = fusion_argv(services.get("scheduler", {})) or []
    sched_m = {sched[i + 1] for i, a in enumerate(sched[:-1]) if a == "--market"}
    if sched_m != markets:
        problems.append(f"scheduler --market {sorted(sched_m)} != FUSION_MARKETS {sorted(markets)}")
    trade = fusion_argv(services.get("trader", {})) or []
    pol = next((trade[i + 1] for i, a in enumerate(trade[:-1]) if a == "--policy"), None)
    pol = pol or env_of(services.get("trader", {})).get("FUSION_POLICY", "default")
    if pol not in sched_m:
        problems.append(f"trader follows policy {pol!r}, which the scheduler never trains ({sorted(sched_m)})")
    return problems
