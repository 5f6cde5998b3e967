"""Issue 10, defect 4: every ``fusion`` flag that takes a market, policy, trader or version name refuses a
name outside the grammar at parse time (exit 2, the rule in the message), before any work is done."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import redis

from common import keys
from common.names import GRAMMAR
from fusion.cli import main as fusion

HOSTILE = [".", "..", "a/b", "a\nb", "{x}", "A" * 200, "BTC\u00e9", "", "-lead"]

# (command, argv with X where the name goes); flags take ``--flag=X`` so ``-lead`` reaches the check
CASES: list[tuple[str, list[str]]] = [
    ("observe", ["--market=X"]),
    ("observe", ["--market=BTC-15M,X"]),
    ("sim", ["synthetic", "--markets=BTC-15M,X"]),
    ("sim", ["recorded", "--market=X"]),
    ("streams", ["info", "X"]),
    ("streams", ["tail", "X"]),
    ("sync", ["--market=X"]),
    ("replay", ["--market=X"]),
    ("train", ["--market=X"]),
    ("train", ["--market=BTC-5M,X"]),
    ("train", ["--market=BTC-5M", "--policy=X"]),
    ("models", ["ls", "X"]),
    ("models", ["show", "X"]),
    ("models", ["show", "pol", "X"]),
    ("models", ["promote", "X", "v1"]),
    ("models", ["promote", "pol", "X"]),
    ("models", ["rollback", "X"]),
    ("schedule", ["--market=X"]),
    ("trade", ["--market=X"]),
    ("trade", ["--policy=X"]),
    ("trade", ["--trader=X"]),
    ("trader", ["status", "--trader=X"]),
    ("demo", ["--markets=BTC-5M,X"]),
    ("stack", ["up", "--markets=X"]),
]


@pytest.mark.parametrize("cmd,argv", CASES, ids=[f"{c}-{' '.join(a)}" for c, a in CASES])
@pytest.mark.parametrize("name", HOSTILE, ids=repr)
def test_hostile_names_exit_2_with_the_grammar(
    cmd: str, argv: list[str], name: str, capsys: pytest.CaptureFixture[str], tmp_path, monkeypatch
) -> None:
    if "X" in argv and name.startswith("-"):
        name = "a/-lead"  # an option-like positional is argparse's own usage error, before any type check
    if not name and "BTC-" in " ".join(argv):
        name = "a b"  # an empty entry in a list is dropped (an empty list is the --market=X case)
    monkeypatch.chdir(tmp_path)  # nothing may be written anyway; if it were, not in the repo
    with pytest.raises(SystemExit) as e:
        fusion([cmd, *[a.replace("X", name) for a in argv]])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert GRAMMAR in err, err
    assert "\nb" not in err  # the name is quoted: no forged second line


def test_train_refuses_a_default_policy_name_outside_the_grammar(capsys: pytest.CaptureFixture[str]) -> None:
    markets = ",".join(f"M{i:02d}-LONG-MARKET-NAME" for i in range(8))  # joined with _: > 128 characters
    with pytest.raises(SystemExit) as e:
        fusion(["train", f"--market={markets}", "--inline"])
    assert e.value.code == 2 and GRAMMAR in capsys.readouterr().err


def test_streams_ls_ignores_hostile_streams(redis_url: str, r: redis.Redis) -> None:
    good = keys.states_stream("BTC-5M")
    bad = ["fusion:{BTC-5M/.}:states", "fusion:{..}:labels", "fusion:{x\nFORGED}:states", b"fusion:{\xff}:states"]
    for s in [good, *bad]:
        r.xadd(s, {keys.PAYLOAD_FIELD: b"x"})
    env = {**os.environ, "FUSION_REDIS_URL": redis_url}
    out = subprocess.run([sys.executable, "-m", "fusion.cli", "streams", "ls"], env=env, capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert [line.split("\t")[0] for line in out.stdout.splitlines()] == [good]
    assert out.stderr.count("stream ignored") == len(bad), out.stderr
    assert "\nFORGED" not in out.stderr
