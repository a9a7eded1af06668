"""`<+...>` expressions: what resolves, and how what cannot resolve stays visible."""

from __future__ import annotations

import pytest

from signoff.executor.domain.expressions import Context, Unknown, find_expressions, marker, render, render_marked


@pytest.fixture
def ctx() -> Context:
    base = Context.for_pipeline(
        name="Checkout blue-green",
        identifier="checkout_bg",
        execution_id="ex-1",
        sequence_id=42,
        triggered_by_name="Ada",
        triggered_by_email="ada@example.com",
        start_ts=1_700_000_000_000,
        variables={
            "tag": "1.4.2",
            "image": "registry/checkout:<+pipeline.variables.tag>",
            "replicas": 3,
            "token": Unknown("secret variables are not rendered"),
        },
    ).with_stage_names({"staging": ("Staging", "Deployment"), "prod": ("Production", "Deployment")})
    base = base.with_step(
        stage="staging",
        identifier="smoke",
        name="Smoke",
        status="SUCCEEDED",
        output={"outputVariables": {"result": "passed"}},
    )
    base = base.with_step(
        stage="staging",
        identifier="approve",
        groups=("gate",),
        status="SUCCEEDED",
        output={
            "approverInputs": {"foo": "baz"},
            "approvalActivities": [{"user": {"name": "Bo", "email": "bo@example.com"}, "action": "APPROVE"}],
        },
    )
    base = base.with_stage(identifier="staging", name="Staging", type="Deployment", variables={"region": "eu"})
    base = base.with_scope("service", {"identifier": "checkout", "name": "Checkout API"})
    base = base.with_scope("env", {"identifier": "staging", "name": "Staging", "type": "PreProduction"})
    base = base.with_scope("infra", {"identifier": "k8s", "name": "Staging cluster", "namespace": "shop"})
    return base.with_scope("artifact", {"image": "registry/checkout", "tag": "1.4.2"})


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("<+pipeline.name>", "Checkout blue-green"),
        ("<+pipeline.identifier>", "checkout_bg"),
        ("<+pipeline.executionId>", "ex-1"),
        ("<+pipeline.sequenceId>", "42"),
        ("<+pipeline.startTs>", "1700000000000"),
        ("<+pipeline.triggeredBy.name>", "Ada"),
        ("<+pipeline.triggeredBy.email>", "ada@example.com"),
        ("<+pipeline.variables.tag>", "1.4.2"),
        ("<+pipeline.variables.replicas>", "3"),
        ("<+pipeline.variables.image>", "registry/checkout:1.4.2"),
        ("<+stage.name>", "Staging"),
        ("<+stage.identifier>", "staging"),
        ("<+stage.variables.region>", "eu"),
        ("<+service.name>", "Checkout API"),
        ("<+service.identifier>", "checkout"),
        ("<+env.name>", "Staging"),
        ("<+env.type>", "PreProduction"),
        ("<+infra.name>", "Staging cluster"),
        ("<+infra.namespace>", "shop"),
        ("<+artifact.tag>", "1.4.2"),
        ("<+artifact.image>", "registry/checkout"),
        ("<+artifacts.primary.tag>", "1.4.2"),
        ("<+execution.steps.smoke.output.outputVariables.result>", "passed"),
        ("<+pipeline.stages.staging.spec.execution.steps.smoke.output.outputVariables.result>", "passed"),
        ("<+execution.steps.approve.output.approverInputs.foo>", "baz"),
        ("<+execution.steps.gate.steps.approve.output.approverInputs.foo>", "baz"),
        ("<+execution.steps.approve.output.approvalActivities[0].user.name>", "Bo"),
        ("<+pipeline.stages.prod.name>", "Production"),
        ("<+ pipeline.name >", "Checkout blue-green"),
    ],
)
def test_supported_expressions_resolve(ctx: Context, expression: str, value: str) -> None:
    rendered = render(expression, ctx)
    assert rendered.text == value
    assert rendered.complete


def test_unresolved_expressions_keep_their_raw_text_and_are_reported(ctx: Context) -> None:
    text = "deploy <+service.name> with <+pipeline.variables.missing> and <+pipeline.variables.missing> to <+foo.bar>"
    rendered = render(text, ctx)
    assert rendered.text == text.replace("<+service.name>", "Checkout API")
    assert rendered.unresolved == ["<+pipeline.variables.missing>", "<+foo.bar>"]
    assert rendered.reasons == {
        "<+pipeline.variables.missing>": "no pipeline variable 'missing'",
        "<+foo.bar>": "unknown expression root 'foo'",
    }


def test_render_marked_shows_unresolved_expressions_to_people(ctx: Context) -> None:
    rendered = render_marked("tag <+artifact.tag>, speed <+pipeline.variables.speed>", ctx)
    assert rendered.text == "tag 1.4.2, speed ⟨unresolved: pipeline.variables.speed⟩"
    assert rendered.unresolved == ["<+pipeline.variables.speed>"]
    assert marker(" a.b ") == "⟨unresolved: a.b⟩"


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("<+pipeline.variables.token>", "secret variables are not rendered"),
        ('<+secrets.getValue("x")>', "secret references are not supported"),
        ("<+input>", "runtime inputs (<+input>) are only supported as pipeline variable values"),
        ("<+pipeline.variables.tag.toLowerCase()>", "unsupported expression"),
        ("<+execution.steps.deploy.output.outputVariables.url>", "step 'deploy' has no outputs here"),
        ("<+execution.steps.smoke.output.outputVariables.nope>", "the step set no output variable 'nope'"),
        ("<+execution.steps.approve.output.approverInputs.bar>", "the approval has no input 'bar'"),
        ("<+pipeline.stages.prod.spec.execution.steps.x.status>", "stage 'prod' has no step outputs yet"),
        ("<+pipeline.stages.qa.name>", "no stage 'qa'"),
        ("<+pipeline.triggeredBy>", "is an object, not a value"),
        ("<+execution.steps.approve.output.approvalActivities[3].user.name>", "no item [3]"),
    ],
)
def test_unresolvable_expressions_say_why(ctx: Context, expression: str, reason: str) -> None:
    rendered = render(expression, ctx)
    assert rendered.text == expression
    assert reason in rendered.reasons[expression]


def test_scopes_can_be_unknown_with_a_reason(ctx: Context) -> None:
    multi = ctx.with_scope("service", Unknown("stage deploys 2 services"))
    rendered = render("<+service.name>", multi)
    assert rendered.reasons == {"<+service.name>": "stage deploys 2 services"}
    outside = Context.for_pipeline(name="p", identifier="p")
    assert render("<+stage.name>", outside).reasons == {"<+stage.name>": "no stage here"}
    assert "current stage" in render("<+execution.steps.a.output>", outside).reasons["<+execution.steps.a.output>"]
    assert "not started" in render("<+pipeline.executionId>", outside).reasons["<+pipeline.executionId>"]


def test_variables_referring_to_each_other_resolve_and_cycles_stop() -> None:
    ctx = Context.for_pipeline(
        name="p",
        identifier="p",
        variables={
            "a": "<+pipeline.variables.b>",
            "b": "<+pipeline.variables.a>",
            "c": "x-<+pipeline.variables.d>",
            "d": "y",
        },
    )
    assert render("<+pipeline.variables.c>", ctx).text == "x-y"
    cyclic = render("<+pipeline.variables.a>", ctx)
    assert cyclic.unresolved == ["<+pipeline.variables.a>"]
    assert "nested more than" in cyclic.reasons["<+pipeline.variables.a>"]


def test_contexts_are_immutable(ctx: Context) -> None:
    later = ctx.with_step(stage="staging", identifier="swap", output={"outputVariables": {"ok": "yes"}})
    assert render("<+execution.steps.swap.output.outputVariables.ok>", later).text == "yes"
    assert not render("<+execution.steps.swap.output.outputVariables.ok>", ctx).complete


def test_find_expressions() -> None:
    assert find_expressions("a <+x.y> b <+z> <+x.y>") == ["<+x.y>", "<+z>", "<+x.y>"]
