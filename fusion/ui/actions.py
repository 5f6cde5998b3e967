"""The UI's actions: the same code paths as the CLI, behind a token, each one logged.

Guarantees: without a configured token every action is refused (:class:`Refused`, HTTP 403); a wrong token is
refused the same way (constant-time comparison); the token never appears in a log line or a reply. Names are
checked against :mod:`common.names` before anything is written. promote / rollback are
:func:`common.artefact.promote` / :func:`~common.artefact.rollback` (``fusion models``), a training job
is :func:`trainer_svc.jobs.enqueue_training` (``fusion train``), the kill switch is a command queued for the
trader (``keys.trader_command_key``), which applies it to its engine and records it on ``fusion:trades``.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from typing import Any

from common import keys
from common.log import kv
from common.names import InvalidName, check_name
from common.store import ObjectStore

log = logging.getLogger("ui")
ACTIONS = ("promote", "rollback", "kill-on", "kill-off", "train")


class Refused(Exception):
    """An action refused: ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


def check_token(expected: str | None, given: str | None) -> None:
    if not expected:
        raise Refused(403, "actions are disabled: no FUSION_UI_TOKEN is configured")
    if not given or not hmac.compare_digest(expected.encode(), given.encode()):
        raise Refused(403, "wrong or missing token")


def run_action(name: str, form: dict[str, str], r: Any, store: ObjectStore, remote: str) -> dict[str, Any]:
    """Do one action (token already checked); returns what it did. Raises :class:`Refused` on bad input."""
    try:
        out = _dispatch(name, form, r, store)
    except InvalidName as e:
        raise Refused(400, str(e)) from None
    kv(log, logging.WARNING, "ui action", action=name, remote=remote, **{k: str(v)[:80] for k, v in out.items()})
    return out


def _dispatch(name: str, form: dict[str, str], r: Any, store: ObjectStore) -> dict[str, Any]:
    from common import artefact as registry

    if name in ("promote", "rollback"):
        policy = check_name(form.get("policy", ""), "policy")
        try:
            if name == "promote":
                ptr = registry.promote(store, policy, check_name(form.get("version", ""), "version"), r)
            else:
                ptr = registry.rollback(store, policy, r)
        except registry.ModelError as e:
            raise Refused(409, str(e)) from None
        return {"policy": policy, "champion": ptr["version"]}
    if name in ("kill-on", "kill-off"):
        trader = check_name(form.get("trader", ""), "trader")
        r.rpush(keys.trader_command_key(trader), json.dumps({"cmd": name, "by": "ui", "ts": time.time()}))
        return {"trader": trader, "queued": name}
    if name == "train":
        from trainer_svc.jobs import AlreadyRunning, enqueue_training
        from trainer_svc.jobspec import InvalidJob

        params: dict[str, Any] = {"market": form.get("market", ""), "algo": form.get("algo") or "awbc"}
        if form.get("policy"):
            params["policy"] = form["policy"]
        if form.get("synthetic"):
            try:
                params["synthetic"] = int(form["synthetic"])
            except ValueError:
                raise Refused(400, "synthetic: not an integer") from None
        try:
            job = enqueue_training(r, params)
        except InvalidJob as e:
            raise Refused(400, str(e)) from None
        except AlreadyRunning as e:
            raise Refused(409, str(e)) from None
        return {"job": job.id}
    raise Refused(404, f"unknown action {name!r}")
