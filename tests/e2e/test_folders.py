"""The location of a clone never matters: in a private (0700) folder, as root in CI or as a normal user, the dev stack
starts and serves; `./signoffw` called from another folder reads that folder's files and uses the clone's stack."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator

import pytest

from signoff.devstack.postgres import shared_root
from signoff.devstack.process import unprivileged_account
from tests.support.checkout import Checkout, private_checkout
from tests.support.waiting import eventually_sync

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e-folders")]  # one worker: one private checkout


@pytest.fixture(scope="module")
def checkout() -> Iterator[Checkout]:
    with private_checkout() as checkout:
        yield checkout


def test_the_stack_of_a_clone_in_a_private_folder_serves(checkout: Checkout) -> None:
    assert stat.S_IMODE(checkout.folder.stat().st_mode) == 0o700
    served = eventually_sync(
        lambda: (done := checkout.run("./signoffw groups show docs")).returncode == 0 and done.stdout,
        timeout=60,
        what="the example directory, loaded by the approval role into PostgreSQL",
    )
    assert "dana" in served
    data = checkout.root / ".signoff" / "dev" / "postgres" / "pgdata"
    if os.geteuid() == 0:
        # The server's account cannot reach into the private folder: its data is kept where it can, and said so.
        account = unprivileged_account()
        assert data.is_symlink() and data.resolve().parent.parent == shared_root()
        assert data.resolve().stat().st_uid == account.uid
        assert (data.resolve().parent / "state-dir").read_text().strip() == str(data.parent.resolve())
        assert f"postgres   data in {data.resolve().parent}" in checkout.stack_log.read_text()
    else:
        assert data.is_dir() and not data.is_symlink()


def test_signoffw_reads_the_callers_files_and_uses_the_clones_stack(checkout: Checkout) -> None:
    elsewhere = checkout.folder / "elsewhere"
    elsewhere.mkdir()
    pipeline = "folders_blue_green"
    text = (checkout.root / "examples" / "pipelines" / "blue-green.yaml").read_text()
    (elsewhere / "p.yaml").write_text(text.replace("checkout_blue_green", pipeline))

    alice = 'SIGNOFF_TOKEN="$(../x/signoffw dev token alice 2>/dev/null)"'
    started = checkout.run(f"{alice} ../x/signoffw run ./p.yaml --var tag=2.0.0", cwd=elsewhere)
    assert started.returncode == 0, started.stdout
    execution_id = started.stdout.strip().splitlines()[-1]

    def waiting_token() -> str | None:
        state = checkout.run(f"{alice} ../x/signoffw get-pipeline-state --name {pipeline} --json", cwd=elsewhere)
        if state.returncode != 0:
            return None
        document = json.loads(state.stdout)
        assert document["pipelineExecutionId"] == execution_id
        for stage in document["stageStates"]:
            for action in stage["actionStates"]:
                if "token" in action.get("latestExecution", {}):
                    return action["latestExecution"]["token"]
        return None

    token = eventually_sync(waiting_token, timeout=90, what=f"{pipeline} waiting at its approval step")
    decision = json.loads((checkout.root / "examples" / "decisions" / "approvalstage-approved.json").read_text())
    decision |= {"pipelineName": pipeline, "token": token}
    (elsewhere / "d.json").write_text(json.dumps(decision))
    dana = 'SIGNOFF_TOKEN="$(../x/signoffw dev token dana 2>/dev/null)"'
    answer = f"{dana} ../x/signoffw put-approval-result --cli-input-json file://./d.json"
    answered = checkout.run(answer, cwd=elsewhere)
    assert answered.returncode == 0, answered.stdout
    assert "gate is now approved" in answered.stdout
    assert not (elsewhere / ".signoff").exists()  # the clone's stack, not a new one here
