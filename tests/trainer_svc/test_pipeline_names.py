"""Issue 10, defect 4: a training run checks its policy and market names before any work (it used to
train, then fail at saving)."""

from __future__ import annotations

from typing import Any

import pytest

from common.names import GRAMMAR
from common.store import LocalStore
from trainer_svc.pipeline import JobParams, run_training


@pytest.mark.parametrize(
    "market,policy",
    [("BTC-5M", "../x"), ("BTC-5M", "a.b"), ("BTC-5M", "p\nFORGED"), ("BTC-5M,..", "p"), ("a/b", None)],
)
def test_bad_names_refused_before_any_work(tmp_path, market: str, policy: str | None) -> None:
    store = LocalStore(tmp_path / "store")
    stages: list[Any] = []
    p = JobParams(market=market, policy=policy, synthetic=2_000, store_url=store.url, promote=False,
                  overrides={"epochs": 1})  # fmt: skip
    with pytest.raises(ValueError, match="invalid (policy|market) name") as e:
        run_training(p, lambda f, info: stages.append(info))
    assert GRAMMAR in str(e.value)
    assert stages == [] and list(store.list("")) == []  # nothing loaded, trained or written
