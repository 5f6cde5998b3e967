"""compose/prometheus.yml: valid for Prometheus (``promtool check config``) and scraping every service of
compose.yaml on the port it serves its metrics on; broken copies are caught."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.compose import compose_check as cc

PROM = cc.COMPOSE_DIR / "prometheus.yml"
ONE_SHOT = {"minio-init"}  # exits after creating the bucket: nothing to scrape
EXPORTED = {"redis": "redis-exporter"}  # services scraped through an exporter (job named after the service)


def _targets(job: dict[str, Any]) -> list[tuple[str, int]]:
    out = []
    for sc in job.get("static_configs") or []:
        for t in sc.get("targets") or []:
            host, _, port = str(t).rpartition(":")
            out.append((host, int(port)))
    for sd in job.get("dns_sd_configs") or []:
        out += [(n, int(sd["port"])) for n in sd.get("names") or []]
    return out


def check_scrapes(prom: dict[str, Any], compose: dict[str, Any]) -> list[str]:
    problems = []
    services = compose["services"]
    jobs = {j["job_name"]: j for j in prom.get("scrape_configs") or []}
    for name in services:
        if name in ONE_SHOT or name in EXPORTED.values():
            continue
        if name not in jobs:
            problems.append(f"service {name} has no scrape job")
    apps = cc.app_services(compose)
    for jname, job in jobs.items():
        for host, port in _targets(job):
            if host == "localhost" and jname == "prometheus":
                continue
            if host not in services:
                problems.append(f"job {jname}: target {host} is not a compose service")
            elif host in apps and str(port) != cc.env_of(apps[host]).get("FUSION_METRICS_PORT"):
                problems.append(f"job {jname}: {host}:{port} is not its FUSION_METRICS_PORT")
    prom_svc = services.get("prometheus", {})
    if not any("prometheus.yml:/etc/prometheus/prometheus.yml" in str(v) for v in prom_svc.get("volumes") or []):
        problems.append("prometheus service does not mount compose/prometheus.yml")
    return problems


def promtool(path: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    assert exe, "promtool is required (Debian package prometheus; .ci/run installs it)"
    return subprocess.run([exe, "check", "config", str(path)], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return cc.interpolate(cc.load_yaml(cc.COMPOSE_FILE.read_text()), cc.parse_env_file(cc.ENV_EXAMPLE.read_text()))


def test_promtool_accepts_the_config() -> None:
    out = promtool(PROM)
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_refuses_a_broken_config(tmp_path: Path) -> None:
    bad = tmp_path / "prometheus.yml"
    bad.write_text(PROM.read_text().replace("scrape_interval: 15s", "scrape_interval: fifteen", 1))
    assert promtool(bad).returncode != 0


def test_every_service_is_scraped(compose: dict[str, Any]) -> None:
    prom = yaml.safe_load(PROM.read_text())
    assert check_scrapes(prom, compose) == []
    assert {"ui", "prometheus", "redis-exporter"} <= set(compose["services"])


def test_a_missing_or_wrong_job_is_reported(compose: dict[str, Any]) -> None:
    prom = yaml.safe_load(PROM.read_text())
    missing = copy.deepcopy(prom)
    missing["scrape_configs"] = [j for j in missing["scrape_configs"] if j["job_name"] != "trader"]
    assert check_scrapes(missing, compose) == ["service trader has no scrape job"]
    wrong = copy.deepcopy(prom)
    for j in wrong["scrape_configs"]:
        if j["job_name"] == "archiver":
            j["static_configs"] = [{"targets": ["archiver:9999"]}]
    assert check_scrapes(wrong, compose) == ["job archiver: archiver:9999 is not its FUSION_METRICS_PORT"]
