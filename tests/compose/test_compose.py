"""compose/: the compose file, .env.example, Dockerfile and MinIO bootstrap, validated without Docker.

The validators (tests/compose/compose_check.py) run on the real files (no problems) and on broken
copies (the expected problem is reported), so a regression in either the files or the checks shows.
"""

from __future__ import annotations

import copy
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.compose import compose_check as cc


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return cc.load_yaml(cc.COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def example() -> dict[str, str]:
    return cc.parse_env_file(cc.ENV_EXAMPLE.read_text())


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any], example: dict[str, str]) -> dict[str, Any]:
    """compose.yaml as docker compose would see it with .env = .env.example."""
    return cc.interpolate(raw, example)


def _env_sets(compose: dict[str, Any], example: dict[str, str]) -> dict[str, dict[str, str]]:
    sets = {f"service {n}": cc.env_of(s) for n, s in compose["services"].items()}
    sets[".env.example"] = example
    return sets


# ----------------------------------------------------------------------------- the real files
def test_expected_services(compose: dict[str, Any]) -> None:
    want = {
        "redis",
        "minio",
        "minio-init",
        "observer",
        "archiver",
        "compactor",
        "labeler",
        "worker",
        "scheduler",
        "trader",
        "monitor",
        "ui",
        "prometheus",
    }
    assert want <= set(compose["services"])
    apps = cc.app_services(compose)
    assert set(apps) == {"observer", "archiver", "compactor", "labeler", "worker", "scheduler", "trader", "monitor",
                         "ui"}  # fmt: skip
    assert {s["build"]["dockerfile"] for s in apps.values()} == {"compose/Dockerfile"}
    argv = {n: cc.fusion_argv(s) for n, s in apps.items()}
    assert argv["observer"] == ["observe", "--leases"]
    assert cc.env_of(compose["services"]["observer"])["FUSION_REPLICAS"] == "2"
    assert [argv[n][0] for n in ("archiver", "labeler", "worker", "scheduler", "trader", "monitor")] == [
        "archive", "label", "worker", "schedule", "trade", "monitor"]  # fmt: skip
    assert argv["compactor"][:2] == ["compact", "--every"]


def test_commands_are_real_fusion_subcommands_with_valid_flags(compose: dict[str, Any]) -> None:
    assert cc.check_commands(compose) == []


def test_every_fusion_variable_is_a_setting_and_parses(compose: dict[str, Any], example: dict[str, str]) -> None:
    assert cc.check_settings(_env_sets(compose, example)) == []
    st = cc._settings_from(cc.env_of(compose["services"]["observer"]))
    assert st.redis_url == "redis://redis:6379/0"
    assert st.store_url == "s3://market-fusion/" and st.s3_endpoint_url == "http://minio:9000"
    assert st.markets == ["BTC-15M", "ETH-15M"] and st.replicas == 2 and st.metrics_port == 9100


def test_ports_volumes_depends_on(compose: dict[str, Any]) -> None:
    assert cc.check_ports_volumes(compose) == []


def test_operations(compose: dict[str, Any]) -> None:
    assert cc.check_operations(compose) == []
    assert cc.duration_s(compose["services"]["worker"]["stop_grace_period"]) >= 60


def test_no_literal_secrets(raw: dict[str, Any], example: dict[str, str]) -> None:
    assert cc.check_no_literal_secrets(raw) == []
    assert cc.check_env_example(cc.COMPOSE_FILE.read_text(), example) == []
    with pytest.raises(KeyError, match="AWS_ACCESS_KEY_ID"):  # compose refuses to start without the .env
        cc.interpolate(raw, {})


def test_dockerfile() -> None:
    assert cc.check_dockerfile(cc.DOCKERFILE.read_text()) == []


def test_markets_consistent(compose: dict[str, Any]) -> None:
    assert cc.check_markets_consistent(compose) == []


@pytest.mark.parametrize(
    "module",
    [
        "observer_svc/__main__.py",
        "archiver_svc/__main__.py",
        "archiver_svc/compactor.py",
        "labeler_svc/__main__.py",
        "trader_svc/__main__.py",
        "trainer_svc/cli.py",
        "trainer_svc/monitor_svc.py",
        "fusion/ui/__main__.py",
    ],
)  # fmt: skip
def test_services_serve_metrics(module: str) -> None:
    """The metrics port in compose means something only if the entry point serves it."""
    assert "serve_metrics(" in (cc.ROOT / module).read_text()


def _fake_mc(tmp_path: Path) -> tuple[dict[str, str], Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "mc.log"
    mc = bin_dir / "mc"
    mc.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    mc.chmod(mc.stat().st_mode | stat.S_IEXEC)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}
    return env, log


@pytest.mark.parametrize(("url", "bucket"), [("s3://market-fusion/", "market-fusion"), ("s3://bkt/a/b", "bkt")])
def test_minio_init_creates_the_bucket_of_the_store_url(tmp_path: Path, url: str, bucket: str) -> None:
    env, log = _fake_mc(tmp_path)
    env |= {"FUSION_STORE_URL": url, "FUSION_S3_ENDPOINT_URL": "http://minio:9000"}
    out = subprocess.run(["sh", str(cc.COMPOSE_DIR / "minio-init.sh")], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    calls = log.read_text().splitlines()
    assert calls == ["alias set fusion http://minio:9000 k s", f"mb --ignore-existing fusion/{bucket}"]


def test_minio_init_rejects_a_url_without_bucket(tmp_path: Path) -> None:
    env, log = _fake_mc(tmp_path)
    env["FUSION_STORE_URL"] = "s3:///prefix"
    out = subprocess.run(["sh", str(cc.COMPOSE_DIR / "minio-init.sh")], env=env, capture_output=True, text=True)
    assert out.returncode == 2 and not log.exists()


# ----------------------------------------------------------------------------- the validators can fail
def test_interpolate_and_durations() -> None:
    env = {"A": "x", "E": ""}
    assert cc.interpolate("${A}-${B:-d}-${E:-e}-${E-f}-$$A-$A", env) == "x-d-e--$A-x"
    with pytest.raises(KeyError):
        cc.interpolate("${B:?needed}", env)
    assert cc.duration_s("1m30s") == 90 and cc.duration_s("10m") == 600 and cc.duration_s("500ms") == 0.5
    with pytest.raises(ValueError):
        cc.duration_s("ten minutes")


def test_check_fusion_args_rejects_bad_commands() -> None:
    assert cc.check_fusion_args(["observe", "--leases", "--replicas", "2"]) is None
    assert cc.check_fusion_args(["sim", "synthetic", "--speed", "5"]) is None
    assert "not a fusion subcommand" in (cc.check_fusion_args(["observer"]) or "")
    assert "rejected" in (cc.check_fusion_args(["observe", "--lease-ttl", "3"]) or "")
    assert "rejected" in (cc.check_fusion_args(["observe", "--replicas", "two"]) or "")
    assert "rejected" in (cc.check_fusion_args(["schedule", "--every-h", "soon"]) or "")


def _broken(compose: dict[str, Any], svc: str, **changes: Any) -> dict[str, Any]:
    bad = copy.deepcopy(compose)
    for k, v in changes.items():
        if v is None:
            bad["services"][svc].pop(k, None)
        else:
            bad["services"][svc][k] = v
    return bad


def test_validators_catch_broken_copies(compose: dict[str, Any], raw: dict[str, Any], example: dict[str, str]) -> None:
    assert any("archiver" in p for p in cc.check_commands(_broken(compose, "archiver", command=["archiv"])))
    assert any(
        "--no-such-flag" in p
        for p in cc.check_commands(_broken(compose, "labeler", command=["label", "--no-such-flag"]))
    )
    assert any("does not run fusion" in p for p in cc.check_commands(_broken(compose, "trader", entrypoint=["python"])))

    env = dict(cc.env_of(compose["services"]["observer"]))
    assert any("FUSION_REPLICA " in p + " " for p in cc.check_settings({"x": env | {"FUSION_REPLICA": "2"}}))
    assert any("do not parse" in p for p in cc.check_settings({"x": env | {"FUSION_REPLICAS": "0"}}))
    assert any("do not parse" in p for p in cc.check_settings({"x": env | {"FUSION_FEED": "fake"}}))

    assert any(
        "observer publishes" in p for p in cc.check_ports_volumes(_broken(compose, "observer", ports=["9100:9100"]))
    )
    assert any(
        "container_name" in p for p in cc.check_ports_volumes(_broken(compose, "observer", container_name="obs"))
    )
    assert any("host port 9000" in p for p in cc.check_ports_volumes(_broken(compose, "redis", ports=["9000:6379"])))
    assert any("not declared" in p for p in cc.check_ports_volumes(_broken(compose, "worker", volumes=["nope:/x"])))
    assert any("declared but not used" in p for p in cc.check_ports_volumes(_broken(compose, "worker", volumes=None)))
    assert any("'mongo'" in p for p in cc.check_ports_volumes(_broken(compose, "trader", depends_on={"mongo": {}})))
    assert any("env_file" in p for p in cc.check_ports_volumes(_broken(compose, "labeler", env_file=["missing.env"])))
    no_hc = _broken(compose, "redis", healthcheck=None)
    assert any("no healthcheck" in p for p in cc.check_ports_volumes(no_hc))

    assert any("warm shutdown" in p for p in cc.check_operations(_broken(compose, "worker", stop_grace_period="30s")))
    assert any("restart policy" in p for p in cc.check_operations(_broken(compose, "archiver", restart=None)))
    assert any("expose" in p for p in cc.check_operations(_broken(compose, "labeler", expose=["9200"])))
    assert any("AOF" in p for p in cc.check_operations(_broken(compose, "redis", command=["redis-server"])))

    leaky = _broken(raw, "minio", environment={"MINIO_ROOT_USER": "admin", "MINIO_ROOT_PASSWORD": "hunter22"})
    assert len(cc.check_no_literal_secrets(leaky)) == 2
    defaulted = _broken(raw, "archiver", environment={"AWS_SECRET_ACCESS_KEY": "${AWS_SECRET_ACCESS_KEY:-abc}"})
    assert cc.check_no_literal_secrets(defaulted)
    assert cc.check_env_example(
        cc.COMPOSE_FILE.read_text(), {k: v for k, v in example.items() if k != "AWS_ACCESS_KEY_ID"}
    )
    assert cc.check_env_example("", example | {"AWS_SECRET_ACCESS_KEY": "real-looking-secret"})

    df = cc.DOCKERFILE.read_text()
    assert any(
        "ENTRYPOINT" in p for p in cc.check_dockerfile(df.replace('ENTRYPOINT ["fusion"]', 'ENTRYPOINT ["python"]'))
    )
    assert any("installed" in p for p in cc.check_dockerfile(df.replace('pip install ".[torch]"', "pip install rq")))
    assert any("trader_svc" in p for p in cc.check_dockerfile(df.replace("COPY trader_svc ./trader_svc\n", "")))

    assert cc.check_markets_consistent(_broken(compose, "scheduler", command=["schedule", "--market", "BTC-15M"]))
    assert cc.check_markets_consistent(_broken(compose, "trader", command=["trade", "--policy", "SOL-1H"]))
