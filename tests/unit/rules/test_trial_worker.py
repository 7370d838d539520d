"""The trial child belongs to whoever made its `TrialWorker`: started at the first request, ended by `close`
(the app closes its own at shutdown); nothing of it is kept by the module."""

from __future__ import annotations

import os
from pathlib import Path

from service.rules.language import parse_ruleset
from service.rules.trial import TrialWorker, durable_trial
from tests.apiclient import api_client, make_settings
from tests.unit.lifecycle.samples import NAME, transfer_yaml

TEXT = transfer_yaml()


def running(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def test_a_worker_starts_its_child_at_the_first_request_and_close_ends_it() -> None:
    worker = TrialWorker()
    assert worker.pid is None
    status, results = durable_trial(worker, parse_ruleset(TEXT))
    assert status == "ok" and all(r["passed"] for r in results), results
    pid = worker.pid
    assert pid is not None and running(pid)
    worker.close()
    assert worker.pid is None and not running(pid)


def test_two_workers_have_children_of_their_own() -> None:
    with TrialWorker() as one, TrialWorker() as other:
        assert (
            durable_trial(one, parse_ruleset(TEXT))[0] == durable_trial(other, parse_ruleset(TEXT))[0] == "ok"
        )
        assert one.pid is not None and other.pid is not None and one.pid != other.pid
        pids = (one.pid, other.pid)
    assert not any(running(pid) for pid in pids)


async def test_the_app_checks_in_its_own_trial_child_and_ends_it_at_shutdown(
    migrated_sqlite_url: str,
) -> None:
    async with api_client(make_settings(migrated_sqlite_url)) as client:
        trials = client.services.trials
        assert isinstance(trials, TrialWorker)
        response = await client.as_("author").post(f"/v1/rulesets/{NAME}/versions", json={"yaml": TEXT})
        assert response.status_code == 201, response.text
        pid = trials.pid
        assert pid is not None and pid != os.getpid() and running(pid)
    assert trials.pid is None and not running(pid)
