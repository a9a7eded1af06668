"""The roles together on the real topics: the executor asks, the approval role opens the gate, an approver answers
through the api with CodePipeline's command and the example decision file (its token taken from
`get-pipeline-state`), and the pipeline goes on with the approver's input. Topics are shared with other tests, so
everything is filtered by this test's execution."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from datetime import UTC, datetime, timedelta

import pytest
import structlog
from click.testing import CliRunner

from signoff import contracts as wire
from signoff.api.identity import issue_token
from signoff.api.repository import ApiRepository
from signoff.api.service import ApiRole
from signoff.api.settings import ApiSettings
from signoff.approval.service import approval_spec
from signoff.approval.settings import ApprovalSettings
from signoff.cli.main import cli
from signoff.executor.service import GATES_TOPIC, executor_spec
from signoff.runtime.clock import FixedClock
from signoff.runtime.service import Service
from tests.integration.executor.conftest import EXAMPLE, REPO, START, ExecutorRole, execution_request
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

KEY = "api-secret-for-this-test"


def cli_clock() -> FixedClock:
    """The approval role's clock for tests that decide through the api, which stamps decisions with the wall clock
    (the role refuses a decision decided too far from its own now)."""
    return FixedClock(datetime.now(UTC))


class RealGatesRole(ExecutorRole):
    def spec(self):
        return dataclasses.replace(
            executor_spec(self.settings, self.clock), group_id=self.group, consumes=(self.requests, GATES_TOPIC)
        )


async def test_an_approval_through_the_approval_role_resumes_the_example(settings, names, database_url, tmp_path):
    previous_logging = structlog.get_config()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.__stderr__))
    directory = tmp_path / "directory.yaml"
    directory.write_text("groups:\n  docs:\n    - {user: dana, email: dana@example.com}\n")
    approval_settings = ApprovalSettings(
        **{**settings.model_dump(), "decision_keys": {"api": KEY}, "directory_file": directory}
    )
    approval = Service(
        dataclasses.replace(approval_spec(approval_settings, cli_clock()), group_id=names.group("approval")),
        approval_settings,
    )
    executor = RealGatesRole(settings, names, database_url)
    await approval.start()
    await executor.start()
    api = ApiRole(
        ApiSettings(**{**settings.model_dump(), "api_decision_key": KEY, "api_port": 0, "api_host": "127.0.0.1"}),
        requests_topic=executor.requests,
    )
    await api.start()
    async with executor.pool.acquire() as conn:
        _, token_text = await issue_token(
            conn,
            ApiRepository(),
            user="dana",
            name="test",
            permissions=(),
            lifetime=timedelta(days=1),
            now=datetime.now(UTC),
        )
    env = {
        "SIGNOFF_HOME": str(tmp_path / "home"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "SIGNOFF_API_URL": api.url,
        "SIGNOFF_TOKEN": token_text,
    }

    async def signoff(*args: str):
        result = await asyncio.to_thread(CliRunner().invoke, cli, list(args), env=env, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result

    try:
        request = execution_request(EXAMPLE.read_text(), pipeline_id="checkout_blue_green")
        await executor.send(request)

        async def token():
            gate = await executor.gate_row(request.execution_id)
            return gate["token"] if gate is not None else None

        await eventually(token, timeout=30, what="the approval role's GateOpened")
        state = json.loads((await signoff("get-pipeline-state", "--name", "checkout_blue_green", "--json")).stdout)
        (staging, _) = state["stageStates"]
        waiting = next(a for a in staging["actionStates"] if a["actionName"] == "Harness_Approval_Step")
        shown_token = waiting["latestExecution"]["token"]

        decision = json.loads((REPO / "examples" / "decisions" / "approvalstage-approved.json").read_text())
        decision["token"] = shown_token
        decision_file = tmp_path / "approvalstage-approved.json"
        decision_file.write_text(json.dumps(decision))
        result = await signoff("put-approval-result", "--cli-input-json", f"file://{decision_file}")
        assert "gate is now approved" in result.stdout

        await executor.wait_step(request.execution_id, "production_rollout.roll_out.bake", "RUNNING")
        # No approver set foo: the default of the seed's approverInputs reaches the later step.
        assert (await executor.logs(request.execution_id))["staging_blue_green.echo_input"].strip() == "foo is bar"
        step = await executor.step(request.execution_id, "staging_blue_green.Harness_Approval_Step")
        assert step["approval"]["activities"][0]["approver"]["name"] == "dana"
        assert step["approval"]["activities"][0]["comments"] == decision["result"]["summary"]
        executor.advance(timedelta(minutes=15))
        await executor.wait_status(request.execution_id, "SUCCEEDED")
        assert len(await executor.published(wire.ExecutionSucceeded.event_type, request.execution_id)) == 1
    finally:
        await api.stop()
        await executor.stop()
        await approval.stop()
        structlog.configure(**previous_logging)


HOSTILE = '$(touch {marker}) `touch {marker}` ; touch {marker} && echo it\'s "quoted"\nEOF\nsecond line'


async def test_values_from_an_approval_and_the_run_reach_a_script_as_data(settings, names, database_url, tmp_path):
    """An approver input, comment and name and a run's variable full of shell syntax pass through the real approval
    role (decided through the api) into a script that echoes them: the script prints them verbatim and none runs.
    Two approvers decide, each with a comment of their own: each approval activity is its vote's, with its own
    comment and time (when the approver decided, not when the executor, whose clock stays at START, resumed)."""
    from tests.unit.executor.builders import approval as approval_step
    from tests.unit.executor.builders import as_yaml, pipeline, shell, stage

    marker = tmp_path / "pwned"
    hostile = HOSTILE.format(marker=marker)
    approver = "o'brien;$(echo${IFS}ran)`echo${IFS}ran`\""  # user ids hold no spaces or slashes
    directory = tmp_path / "directory.yaml"
    second = "dana"
    directory.write_text(json.dumps({"groups": {"docs": [{"user": approver}, {"user": second}]}}))
    approval_settings = ApprovalSettings(
        **{**settings.model_dump(), "decision_keys": {"api": KEY}, "directory_file": directory}
    )
    approval = Service(
        dataclasses.replace(approval_spec(approval_settings, cli_clock()), group_id=names.group("approval")),
        approval_settings,
    )
    steps = "approve.output"
    script = "\n".join(
        [
            "echo <+pipeline.variables.v>",
            'echo "<+execution.steps.' + steps + '.approverInputs.foo>"',
            "echo '<+execution.steps." + steps + ".approvalActivities[0].comments>'",
            "cat <<EOF",
            "<+execution.steps." + steps + ".approvalActivities[0].user.name>",
            "EOF",
            "echo '<+execution.steps." + steps + ".approvalActivities[1].comments>'",
            "echo '<+execution.steps." + steps + ".approvalActivities[1].user.name>'",
            "echo '<+execution.steps." + steps + ".approvalActivities[0].approvedAt>'",
            "echo '<+execution.steps." + steps + ".approvalActivities[1].approvedAt>'",
        ]
    )
    two = approval_step("approve", approvers={"userGroups": ["docs"], "minimumCount": 2})
    document = pipeline(
        stage("release", two, shell("show", script)),
        variables=[{"name": "v", "type": "String", "value": "<+input>"}],
    )
    executor = RealGatesRole(settings, names, database_url)
    await approval.start()
    await executor.start()
    api = ApiRole(
        ApiSettings(**{**settings.model_dump(), "api_decision_key": KEY, "api_port": 0, "api_host": "127.0.0.1"}),
        requests_topic=executor.requests,
    )
    await api.start()
    tokens = {}
    async with executor.pool.acquire() as conn:
        for user in (approver, second):
            _, tokens[user] = await issue_token(
                conn,
                ApiRepository(),
                user=user,
                name="test",
                permissions=(),
                lifetime=timedelta(days=1),
                now=datetime.now(UTC),
            )
    env = {
        "SIGNOFF_HOME": str(tmp_path / "home"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "SIGNOFF_API_URL": api.url,
        "SIGNOFF_TOKEN": tokens[approver],
    }
    try:
        before = datetime.now(UTC)
        request = execution_request(as_yaml(document), pipeline_id="test_pipeline", variables={"v": hostile})
        await executor.send(request)
        gate = await eventually(lambda: executor.gate_row(request.execution_id), timeout=30, what="GateOpened")
        args = ["approve", gate["gate_id"], "--token", gate["token"], "--comment", hostile, "--input", f"foo={hostile}"]
        result = await asyncio.to_thread(CliRunner().invoke, cli, args, env=env, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        args = ["approve", gate["gate_id"], "--token", gate["token"], "--comment", "second look"]
        env_second = {**env, "SIGNOFF_TOKEN": tokens[second], "SIGNOFF_HOME": str(tmp_path / "home-second")}
        result = await asyncio.to_thread(CliRunner().invoke, cli, args, env=env_second, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        after = datetime.now(UTC)
        await executor.wait_status(request.execution_id, "SUCCEEDED")
        printed = (await executor.logs(request.execution_id))["release.show"]
        *lines, first_at, second_at = printed.removesuffix("\n").split("\n")
        assert "\n".join(lines) + "\n" == f"{hostile}\n{hostile}\n{hostile}\n{approver}\nsecond look\n{second}\n"
        decided = [datetime.fromisoformat(first_at), datetime.fromisoformat(second_at)]
        assert before <= decided[0] <= decided[1] <= after, (decided, before, after)
        assert not marker.exists()
    finally:
        await api.stop()
        await executor.stop()
        await approval.stop()


async def test_a_request_the_approval_role_cannot_serve_fails_the_pipeline_at_once(
    settings, names, database_url, tmp_path
):
    """A typo'd user group: the approval role refuses the request (RequestRefused) and the executor fails the step
    with its reason at once, instead of waiting a day for a gate nobody can approve."""
    from tests.unit.executor.builders import approval as approval_step
    from tests.unit.executor.builders import as_yaml, pipeline, stage

    directory = tmp_path / "directory.yaml"
    directory.write_text("groups:\n  docs:\n    - {user: dana}\n")
    approval_settings = ApprovalSettings(
        **{**settings.model_dump(), "decision_keys": {"cli": KEY}, "directory_file": directory}
    )
    approval = Service(
        dataclasses.replace(approval_spec(approval_settings, FixedClock(START)), group_id=names.group("approval")),
        approval_settings,
    )
    step = approval_step("approve")
    step["step"]["spec"]["approvers"]["userGroups"] = ["dosc"]
    document = pipeline(stage("release", step))
    executor = RealGatesRole(settings, names, database_url)
    await approval.start()
    await executor.start()
    try:
        request = execution_request(as_yaml(document), pipeline_id="test_pipeline")
        await executor.send(request)
        row = await executor.wait_status(request.execution_id, "FAILED")
        reason = (
            "the approval service refused the request: policy.user_groups: unknown user group 'dosc'; "
            "policy.minimum_count: 1 approvals needed but only 0 eligible people"
        )
        assert row["reason"] == f"step release.approve failed: {reason}"
        assert (await executor.step(request.execution_id, "release.approve"))["reason"] == reason
        (failed,) = await eventually(
            lambda: executor.published(wire.ExecutionFailed.event_type, request.execution_id),
            timeout=30,
            what="the ExecutionFailed of the refused run",
        )
        assert reason in failed.error

        # `signoff logs` (the api's logs of the execution) says why the step that ran no script failed, to who
        # started it (no gate opened, so nobody else may read them).
        api = ApiRole(ApiSettings(**{**settings.model_dump(), "api_port": 0, "api_host": "127.0.0.1"}))
        await api.start()
        try:
            async with executor.pool.acquire() as conn:
                _, token_text = await issue_token(
                    conn, ApiRepository(), user="alice", name="test", permissions=(), lifetime=timedelta(hours=1),
                    now=datetime.now(UTC),
                )  # fmt: skip
            env = {"SIGNOFF_HOME": str(tmp_path / "home"), "SIGNOFF_API_URL": api.url, "SIGNOFF_TOKEN": token_text}
            shown = await asyncio.to_thread(
                CliRunner().invoke, cli, ["logs", request.execution_id], env=env, catch_exceptions=False
            )
            assert shown.exit_code == 0, shown.output
            assert shown.stdout == f"== release.approve (attempt 1, FAILED)\n{reason}\n"
        finally:
            await api.stop()
    finally:
        await executor.stop()
        await approval.stop()
